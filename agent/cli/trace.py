"""`nodemesh trace`: connect decisions as the kernel makes them, and proxy requests.

Kernel events come from the pinned ring buffer through agent.bpf.trace's
TraceReader, which turns the proxy map's trace flag on while it reads and
back off when it stops (Ctrl-C, SIGTERM, --count, --duration, a closed
pipe), if it was off before. Each event is joined with the client's cgroup
path and pod name (pods.json). The proxy's admin API has no event stream;
its JSON access log (`nodemesh proxy --access-log PATH`) is followed when
--access-log names it, one line per finished request.
"""

import json
import signal
import sys
import threading
import time

from agent.bpf import layout

from . import access, options, output, pod_names, workload
from .cgroups import CgroupIndex
from .errors import CLIError

EPILOG = """examples:
  nodemesh trace
  nodemesh trace --pod shop/cart-0 --count 20
  nodemesh trace --service 198.18.0.10:6379 --reason remote_no_listener
  nodemesh trace --duration 10 -o json > decisions.jsonl
  nodemesh trace --access-log /run/nodemesh/access.log

Only connects to mesh services from enrolled pods are traced (the kernel
emits nothing for other traffic). -o json prints one object per line.
--reason filters kernel events; proxy events carry response flags instead.
"""
REFRESH_NAMES = 1.0
"""Seconds between re-walks of the cgroup tree for ids not seen before."""
POLL_MS = 100


def register(sub, common):
    t = sub.add_parser("trace", parents=[common], help="live connect decisions and proxy requests",
                       formatter_class=options.formatter, epilog=EPILOG)
    t.add_argument("--pod", metavar="NS/NAME|CGROUP", help="only this pod (and its containers)")
    t.add_argument("--service", type=options.hostport, metavar="VIP:PORT",
                   help="only connections to this service")
    reason = t.add_argument("--reason", type=_reason, metavar="REASON",
                            help="only this decision (a reason as `nodemesh stats --all` "
                                 "lists it)")
    reason.completion_choices = sorted(layout.reasons().values())
    t.add_argument("--count", type=options.positive_int, metavar="N", help="stop after N events")
    t.add_argument("--duration", type=options.seconds, metavar="S", help="stop after S seconds")
    t.add_argument("--access-log", metavar="PATH",
                   help="also follow the proxy's JSON access log (nodemesh proxy --access-log)")
    t.set_defaults(func=cmd_trace)


def _reason(text: str) -> str:
    import argparse

    names = sorted(layout.reasons().values())
    if text not in names:
        raise argparse.ArgumentTypeError(f"{text!r}: expected one of {', '.join(names)}")
    return text


class Names:
    """cgroup id -> (path, pod), re-walking the tree for new ids at most once a second."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self._index, self._walked = CgroupIndex(), time.monotonic()
        self._names = pod_names.load(run_dir)
        self._cache = {}

    def get(self, cgroup_id: int):
        if cgroup_id not in self._cache:
            path = self._index.path(cgroup_id)
            if path is None and time.monotonic() - self._walked > REFRESH_NAMES:
                self._index, self._walked = CgroupIndex(), time.monotonic()
                self._names = pod_names.load(self.run_dir)
                path = self._index.path(cgroup_id)
            if path is None:
                return None, None        # not cached: it may appear on a later walk
            pod = self._names.get(cgroup_id) or pod_names.owner(self._names, path)
            self._cache[cgroup_id] = (path, pod)
        return self._cache[cgroup_id]


class Filters:
    def __init__(self, args, run_dir: str, names: Names):
        self.names = names
        self.service, self.reason = args.service, args.reason
        self.pod = workload.by_pod(args.pod, run_dir) if args.pod else None

    def _in_pod(self, cgroup_id, path) -> bool:
        if self.pod is None:
            return True
        if cgroup_id == self.pod.cgroup_id:
            return True
        return bool(path) and path.startswith(self.pod.cgroup.rstrip("/") + "/")

    def kernel(self, ev: dict) -> bool:
        return ((not self.service or ev["original_dst"] == self.service)
                and (not self.reason or ev["reason"] == self.reason)
                and self._in_pod(ev["cgroup_id"], ev["cgroup"]))

    def proxy(self, ev: dict) -> bool:
        if self.reason:
            return False
        if self.service and ev.get("service") not in (None, self.service):
            return False
        return self.pod is None or self._in_pod(ev.get("cgroup_id"), ev.get("cgroup"))


def kernel_event(ev, names: Names) -> dict:
    d = ev.as_dict()
    d["source"] = "kernel"
    d["cgroup"], d["pod"] = names.get(d["cgroup_id"])
    return d


class AccessLog:
    """Lines appended to the proxy's access log after we opened it."""

    def __init__(self, path: str, names: Names, listener_vips: dict):
        try:
            self._fh = open(path)
        except OSError as exc:
            raise CLIError(f"access log {path}: {exc.strerror}",
                           "pass the path given to `nodemesh proxy --access-log`") from None
        self._fh.seek(0, 2)
        self._partial = ""
        self.names, self.vips = names, listener_vips

    def read(self) -> list:
        chunk = self._fh.read()
        if not chunk:
            return []
        text = self._partial + chunk
        lines = text.split("\n")
        self._partial = lines.pop()
        return [e for e in (self._event(line) for line in lines if line.strip()) if e]

    def _event(self, line: str):
        try:
            rec = json.loads(line)
        except ValueError:
            return None
        pod = str(rec.get("source_pod") or "")
        cgroup_id = int(pod) if pod.isdigit() else None
        path, name = self.names.get(cgroup_id) if cgroup_id is not None else (None, None)
        return {"source": "proxy", "time": time.time(), "start_time": rec.get("start_time"),
                "cgroup_id": cgroup_id, "cgroup": path, "pod": name or pod or None,
                "listener": rec.get("listener"), "service": self.vips.get(rec.get("listener")),
                "protocol": rec.get("protocol"), "route": rec.get("route_name"),
                "cluster": rec.get("upstream_cluster"), "response_code": rec.get("response_code"),
                "response_flags": rec.get("response_flags"),
                "duration_ms": rec.get("duration_ms")}

    def close(self):
        self._fh.close()


def _listener_vips(run_dir: str) -> dict:
    """listener name -> VIP:PORT from the configuration, for --service on proxy events."""
    from . import config_view
    from .routes import address

    view = config_view.load(run_dir, {})
    if view is None:
        return {}
    return {lsn.name: address(lsn) for lsn in view.snapshot.listeners.values()}


def cmd_trace(args) -> int:
    from agent.bpf.trace import TraceReader

    dp = access.datapath(args)
    run_dir = dp.s.run_dir
    names = Names(run_dir)
    filters = Filters(args, run_dir, names)
    log = AccessLog(args.access_log, names, _listener_vips(run_dir)) if args.access_log else None
    stop = threading.Event()
    restore = _stop_on_signals(stop)
    printer = Printer(args.output)
    printer.note(_proxy_note(log))
    try:
        with TraceReader(dp.s) as reader:
            printer.start()
            _loop(reader, log, filters, names, printer, stop, args)
    finally:
        restore()
        if log is not None:
            log.close()
    return 0


def _proxy_note(log) -> str:
    if log is not None:
        return "following the proxy's access log too"
    return ("proxy events: not shown (the proxy's admin API has no event stream; run it with "
            "--access-log PATH and pass --access-log PATH here)")


def _loop(reader, log, filters, names, printer, stop, args):
    deadline = time.monotonic() + args.duration if args.duration else None
    shown = 0
    while not stop.is_set():
        wait = POLL_MS if deadline is None else min(POLL_MS, (deadline - time.monotonic()) * 1000)
        if wait <= 0:
            return
        events = [kernel_event(ev, names) for ev in reader.poll(wait)]
        events = [e for e in events if filters.kernel(e)]
        if log is not None:
            events += [e for e in log.read() if filters.proxy(e)]
        for e in events:
            printer.event(e)
            shown += 1
            if args.count and shown >= args.count:
                return


def _stop_on_signals(stop: threading.Event):
    """Ctrl-C, SIGTERM and SIGHUP end the trace at the next poll: the flag is restored.
    SIGINT too is a flag, not a KeyboardInterrupt: raised while the ring buffer's cffi
    callback runs, the exception would be swallowed there and the trace go on."""
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        try:
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
        except ValueError:          # not the main thread (tests): nothing to restore
            pass

    def restore():
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return restore


class Printer:
    """Streams events: a table row each (80 columns), or one JSON object per line.

    The reason names the target (local, remote_*, and the rest leave the original
    destination), so the table shows it alone; -o wide adds where it went."""

    COLS = (("TIME", 8), ("POD", 16), ("PID", 7), ("DESTINATION", 21))
    WIDE = (("TIME", 12), ("POD", 24), ("PROCESS", 20), ("DESTINATION", 23), ("TARGET", 23))

    def __init__(self, fmt: str):
        self.fmt = fmt
        self.wide = fmt == "wide"
        self.cols = self.WIDE if self.wide else self.COLS

    def note(self, text: str):
        import textwrap

        stream = sys.stderr if self.fmt in ("json", "yaml") else sys.stdout
        lines = [text] if self.wide else textwrap.wrap(text, output.WIDTH,
                                                       subsequent_indent="  ")
        print("\n".join(lines), file=stream, flush=True)

    def start(self):
        if self.fmt in ("table", "wide"):
            head = "  ".join(f"{h:<{w}}" for h, w in self.cols) + "  DECISION"
            print(head, flush=True)

    def event(self, e: dict):
        if self.fmt == "json":
            print(json.dumps(e), flush=True)
        elif self.fmt == "yaml":
            import yaml

            sys.stdout.write("---\n" + yaml.safe_dump(e, sort_keys=False))
            sys.stdout.flush()
        else:
            line = self._line(e)
            print(line if self.wide else output.clip(line), flush=True)

    def _line(self, e: dict) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(e["time"]))
        if self.wide:
            stamp += f".{int(e['time'] * 1000) % 1000:03d}"
        who = e["pod"] or (e["cgroup"] or "").rsplit("/", 1)[-1] or str(e.get("cgroup_id"))
        if e["source"] == "kernel":
            proc = f"{e['comm']}[{e['pid']}]" if self.wide else e["pid"]
            cells = [stamp, who, proc, e["original_dst"]]
            if self.wide:
                cells.append(e["target_dst"] if e["target"] != "original" else "-")
            decision = e["reason"]
        else:
            cells = [stamp, who, "proxy", e.get("service") or e.get("listener") or "?"]
            if self.wide:
                cells.append(e.get("cluster") or "-")
            flags = e.get("response_flags")
            decision = f"{e.get('cluster')} {e.get('response_code')}" + \
                (f" {flags}" if flags and flags != "-" else "")
            if self.wide:
                decision = f"{e.get('route')} {e.get('response_code')} {flags} " \
                           f"{e.get('duration_ms')}ms"
        return "  ".join(_fit(c, w, self.wide) for c, (_, w) in zip(cells, self.cols)) + \
            "  " + decision


def _fit(text, width: int, wide: bool) -> str:
    text = str(text)
    if len(text) <= width or wide:
        return f"{text:<{width}}"
    return text[:width - len(output.ELLIPSIS)] + output.ELLIPSIS
