"""`nodemesh failover status|local|remote|auto` and `nodemesh drain`.

Both ask the running agent over its admin socket. With no agent running,
they act on the pinned maps themselves and say so: `failover` writes the
mode, `drain` does the drain's steps (mode remote, POST /drain to the local
proxy, wait for it to exit, mode local again).
"""

import asyncio
import sys
import time

from agent.admin import AdminClient, AdminError

from . import access, agent_link, options, output
from .errors import CLIError

EPILOG = """examples:
  nodemesh failover status
  nodemesh failover remote        # operator override: everything to the remote pool
  nodemesh failover auto          # back to the controller's own decisions
  nodemesh failover status -o json
"""
DRAIN_EPILOG = """examples:
  nodemesh drain                  # as the DaemonSet's preStop hook runs it
  nodemesh drain --deadline 10 --no-wait
  nodemesh drain --socket /run/nodemesh/proxy-remote.sock    # a remote proxy

With an agent: it drains and this waits until the old proxy has exited. With
no agent: this does the steps itself and leaves mode local behind (the kernel
sends new connections to the remote pool until a new proxy listens). With
--socket: only that proxy is drained (no datapath change; a remote proxy's
clients are sent elsewhere by their own nodes).
"""
POLL_S = 0.1
SCHEMA = {"type": "object", "required": ["agent", "state", "mode", "spill_percent"],
          "properties": {"agent": {"type": "boolean"}, "state": {"type": ["string", "null"]},
                         "mode": {"type": ["string", "null"]},
                         "spill_percent": {"type": "number"}}}


def register(sub, common):
    f = sub.add_parser("failover", help="where the node's mesh traffic goes, and overrides",
                       formatter_class=options.formatter, epilog=EPILOG)
    fsub = f.add_subparsers(dest="failover_cmd", metavar="COMMAND", required=True)
    st = fsub.add_parser("status", parents=[common], help="controller state, signals, transitions",
                         formatter_class=options.formatter, epilog=EPILOG)
    st.set_defaults(func=cmd_status)
    for mode, text in (("local", "force the local proxy (ignore probes and overload)"),
                       ("remote", "force the remote proxy pool"),
                       ("auto", "hand back to the controller")):
        p = fsub.add_parser(mode, parents=[common], help=text, formatter_class=options.formatter,
                            epilog=EPILOG)
        p.set_defaults(func=cmd_mode, mode=mode)
    d = sub.add_parser("drain", parents=[common], help="planned drain of the local proxy",
                       formatter_class=options.formatter, epilog=DRAIN_EPILOG)
    d.add_argument("--deadline", type=_seconds, metavar="S",
                   help="seconds the proxy gets to finish requests in flight (default 30)")
    d.add_argument("--no-wait", action="store_true", help="return once the drain has started")
    d.add_argument("--socket", metavar="PATH",
                   help="drain the proxy at this admin socket only, and wait for it to exit")
    d.set_defaults(func=cmd_drain)


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        raise options.argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise options.argparse.ArgumentTypeError("the deadline must be > 0 seconds")
    return value


def _agent(args):
    run_dir = options.settings(args).run_dir
    if agent_link.agent_running(run_dir):
        return AdminClient(agent_link.admin_socket(run_dir), timeout=5.0)
    return None


def _ask(client, method, target, body=None):
    try:
        return client.request(method, target, body)[1]
    except AdminError as e:
        if e.status == 404:
            raise CLIError(f"the agent has no failover controller ({e})",
                           "check the agent's components") from None
        raise CLIError(str(e), "check the agent (`nodemesh failover status`)") from None


# -- status -----------------------------------------------------------------------------

def cmd_status(args) -> int:
    client = _agent(args)
    if client is not None:
        data = {"agent": True, **_ask(client, "GET", "/failover")}
    else:
        data = _datapath_view(args)
    output.emit(data, args.output, lambda wide: render_status(data, wide))
    return 0


def _datapath_view(args) -> dict:
    c = access.control(args)
    try:
        proxy = c.proxy()
        pods = {str(p["cgroup_id"]): p["spill"] for p in c.enrolled() if p["spill"] is not None}
    finally:
        c.close()
    return {"agent": False, "state": None, "mode": proxy["mode"],
            "spill_percent": proxy["spill_percent"], "pod_spill_percent": pods,
            "datapath": proxy}


def render_status(d: dict, wide: bool) -> str:
    if not d["agent"]:
        return output.pairs([
            ("agent", "not running: the datapath's view only"),
            ("mode", f"{d['mode']} (spill {d['spill_percent']:g}%)"),
            ("pod spill", _pods(d["pod_spill_percent"]) or "-")])
    local, remote, over = d["local"], d["remote"], d.get("overload") or {}
    probe = local.get("probe") or {}
    items = [
        ("state", d["state"] + (" (operator override)" if d.get("operator") else "")),
        ("mode", f"{d['mode']} (spill {d['spill_percent']:g}%)"),
        ("local proxy", f"{probe.get('status', '?')} {probe.get('detail', '')}".strip()),
        ("healthy", f"{local['healthy_streak']} in a row, {local['healthy_needed']} to return;"
                    f" flaps {local['flaps']}"),
        ("remote pool", f"{'up' if remote.get('up') else 'down'}: {remote.get('detail', '')}"),
        ("overload", _overload_line(over)),
        ("pod spill", _pods(d.get("pod_spill_percent", {})) or "-"),
        ("last drain", _drain_line(d.get("drain"))),
        ("transitions", ", ".join(f"{k} {v}" for k, v in d["counters"]["transitions"].items())
         or "-"),
    ]
    if d.get("error"):
        items.append(("error", d["error"]))
    lines = [output.pairs(items, limit=10**6 if wide else output.WIDTH), "recent:"]
    for t in d["transitions"][-(20 if wide else 5):]:
        when = time.strftime("%H:%M:%S", time.localtime(t["at"]))
        row = f"  {when} {t['from'] or '-'} -> {t['to']} ({t['event']}): {t['reason']}"
        lines.append(row if wide or len(row) <= output.WIDTH else row[:output.WIDTH - 1] + "~")
    return "\n".join(lines)


def _overload_line(over) -> str:
    if not over:
        return "-"
    readings = ", ".join(f"{k} {v:g}" for k, v in over.get("readings", {}).items())
    return (f"level {over.get('level', 0)}, {over.get('ratio', 0):.2f}x "
            f"({over.get('source', '-')}); {readings}")


def _drain_line(drain) -> str:
    if not drain:
        return "-"
    return f"{drain.get('done') or 'in progress'} ({drain.get('request')})"


def _pods(pods: dict) -> str:
    return ", ".join(f"{k}={v:g}%" for k, v in pods.items())


# -- overrides ------------------------------------------------------------------------------

def cmd_mode(args) -> int:
    client = _agent(args)
    if client is not None:
        data = {"agent": True, **_ask(client, "POST", "/failover", {"mode": args.mode})}
        output.emit(data, args.output, lambda wide: f"failover: {data['state']} "
                                                    f"(mode {data['mode']})")
        return 0
    c = access.control(args)
    try:
        mode = "local" if args.mode == "auto" else args.mode
        c.set_proxy(mode=mode, spill=0)
        proxy = c.proxy()
    finally:
        c.close()
    note = ("no agent running: wrote mode %s to the datapath; nothing will change it back" % mode
            if args.mode != "auto" else "no agent running: mode local, and the kernel still "
            "sends new connections to the remote pool while the local proxy does not listen")
    data = {"agent": False, "state": None, "mode": proxy["mode"],
            "spill_percent": proxy["spill_percent"], "note": note}
    output.emit(data, args.output, lambda wide: f"nodemesh: {note}")
    return 0


# -- drain ------------------------------------------------------------------------------------

def cmd_drain(args) -> int:
    client = _agent(args)
    say = (lambda text: print(text, flush=True)) if args.output in ("table", "wide") else \
        (lambda text: None)
    started = time.monotonic()
    if args.socket:
        data = asyncio.run(_drain_socket(args, say))
    elif client is not None:
        data = _drain_via_agent(client, args, say)
    else:
        say(f"nodemesh: no agent at {agent_link.admin_socket(options.settings(args).run_dir)}: "
            "draining by itself")
        data = asyncio.run(_drain_alone(args, say))
    data["elapsed_s"] = round(time.monotonic() - started, 2)
    if args.output in ("json", "yaml"):
        output.emit(data, args.output, None)
    return 0 if data.get("drained") or args.no_wait else 1


def _drain_via_agent(client, args, say) -> dict:
    body = {"deadline": args.deadline} if args.deadline else {}
    st = _ask(client, "POST", "/drain", body)
    say(f"agent: {st['state']}, new connections to {st['mode']}")
    data = {"via": "agent", "state": st["state"], "mode": st["mode"], "drained": None}
    if args.no_wait:
        return data
    deadline = ((st.get("drain") or {}).get("deadline_s") or 30.0) + 30.0
    end, seen = time.monotonic() + deadline, None
    while time.monotonic() < end:
        st = _ask(client, "GET", "/failover")
        drain = st.get("drain") or {}
        if drain.get("request") and drain["request"] != seen:
            seen = drain["request"]
            say(f"proxy: {seen}")
        if drain.get("done") or st["state"] != "draining":
            data.update(state=st["state"], mode=st["mode"],
                        drained=drain.get("done") or f"state {st['state']}")
            say(f"drained: {data['drained']}; now {st['state']}, new connections to {st['mode']}")
            return data
        time.sleep(POLL_S)
    raise CLIError("the agent's drain did not finish", "see `nodemesh failover status`")


async def _drain_alone(args, say) -> dict:
    from agent.bpf.datapath import parse_hostport
    from agent.failover.drain import DrainWatch
    from agent.failover.settings import FailoverSettings
    from agent.failover.signals import probe_ready, tcp_reachable

    s = FailoverSettings(run_dir=options.settings(args).run_dir)
    deadline = args.deadline or s.drain_deadline
    c = access.control(args)
    try:
        proxy = c.proxy()
        port = next((x["remote_port"] for x in c.services() if x["remote_port"]), 0)
        ok, detail = (await tcp_reachable(proxy["remote_proxy"], port, s.remote_timeout)
                      if proxy["remote_proxy"] and port else (False, "no remote pool configured"))
        mode = "remote" if ok else "bypass"
        c.set_proxy(mode=mode, spill=0)
        say(f"new connections: mode {mode} (remote pool: {detail})")
        await asyncio.sleep(s.drain_settle)
        watch = DrainWatch(s.admin_path, parse_hostport(proxy["local_proxy"] or s.proxy_listen),
                           deadline, s.drain_grace)
        say(f"proxy: {await watch.begin()}")
        data = {"via": "cli", "mode_during": mode, "remote": detail, "request": watch.requested}
        if args.no_wait:
            return {**data, "drained": None, "mode": mode}
        while not watch.finished((await probe_ready(s.admin_path, s.probe_timeout)).status):
            await asyncio.sleep(POLL_S)
        say(f"drained: {watch.done_reason}")
        c.set_proxy(mode="local")
        say("new connections: mode local (the kernel sends them to the remote pool until "
            "a new proxy listens)")
        return {**data, "drained": watch.done_reason, "mode": "local"}
    finally:
        c.close()


async def _drain_socket(args, say) -> dict:
    from agent.failover.drain import DrainWatch
    from agent.failover.settings import FailoverSettings
    from agent.failover.signals import probe_ready

    s = FailoverSettings()
    watch = DrainWatch(args.socket, None, args.deadline or s.drain_deadline, s.drain_grace)
    say(f"proxy: {await watch.begin()}")
    data = {"via": "socket", "socket": args.socket, "request": watch.requested}
    if args.no_wait:
        return {**data, "drained": None}
    while not watch.finished((await probe_ready(args.socket, s.probe_timeout)).status):
        await asyncio.sleep(POLL_S)
    say(f"drained: {watch.done_reason}")
    return {**data, "drained": watch.done_reason}


if __name__ == "__main__":      # pragma: no cover - `nodemesh` is the entry point
    from .main import main

    sys.exit(main(["failover"] + sys.argv[1:]))
