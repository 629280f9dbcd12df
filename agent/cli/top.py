"""`nodemesh top`: live rates, refreshing: kernel decisions, and per service / per pod
requests from the local proxy when it runs.

Rates are differences between two reads divided by the time between them; the
first screen appears after one interval. Bounded by --iterations (0 = until
Ctrl-C). With -o json, prints one JSON object per interval.
"""

import json
import sys
import time

from agent.bpf.datapath import Control

from . import access, admin_link, options, output, pod_names

EPILOG = """examples:
  nodemesh top
  nodemesh top --interval 5
  nodemesh top --iterations 1 -o json     # one sample, for scripts
"""


def register(sub, common):
    t = sub.add_parser("top", parents=[common], help="live per-service and per-pod rates",
                       formatter_class=options.formatter, epilog=EPILOG)
    t.add_argument("--interval", type=float, default=2.0, metavar="S")
    t.add_argument("--iterations", type=int, default=0, metavar="N", help="0 = until Ctrl-C")
    t.set_defaults(func=cmd_top)


def sample(control: Control, run_dir: str) -> dict:
    unavailable = {}
    stats = admin_link.read(run_dir, "proxy", "/stats", unavailable) or {}
    names = pod_names.load(run_dir)
    pods = {names.get(int(k), k) if str(k).isdigit() else k: v
            for k, v in _requests(stats.get("pods")).items()}
    return {"t": time.monotonic(), "kernel": control.counters(),
            "services": _requests(stats.get("services")), "pods": pods,
            "unavailable": unavailable}


def _requests(table) -> dict:
    """{name: requests} from the proxy's {name: {"requests": n, ...}} (or {name: n})."""
    out = {}
    for name, v in (table or {}).items():
        out[str(name)] = v.get("requests", 0) if isinstance(v, dict) else v
    return out


def rates(before: dict, after: dict) -> dict:
    dt = max(after["t"] - before["t"], 1e-6)

    def diff(a, b):
        return {k: round((a.get(k, 0) - b.get(k, 0)) / dt, 1)
                for k in a if a.get(k, 0) - b.get(k, 0) > 0}

    return {"interval_s": round(dt, 2),
            "kernel_per_s": diff(after["kernel"], before["kernel"]),
            "services_per_s": diff(after["services"], before["services"]),
            "pods_per_s": diff(after["pods"], before["pods"]),
            "unavailable": after["unavailable"]}


def render(r: dict) -> str:
    parts = []
    for title, key, head in (("kernel decisions/s", "kernel_per_s", "REASON"),
                             ("requests/s by service", "services_per_s", "SERVICE"),
                             ("requests/s by pod", "pods_per_s", "POD")):
        rows = sorted(({"k": k, "v": v} for k, v in r[key].items()), key=lambda x: -x["v"])
        body = output.table(rows[:10], [(head, "k"), ("PER SECOND", "v")]) if rows else "  (idle)"
        parts.append(f"{title}\n{body}")
    if r["unavailable"]:
        parts.append("unavailable: " + "; ".join(f"{k}: {v}" for k, v in r["unavailable"].items()))
    return "\n\n".join(parts)


def cmd_top(args) -> int:
    s = options.settings(args)
    c = access.control(args)
    interactive = args.output in ("table", "wide") and sys.stdout.isatty()
    try:
        prev, n = sample(c, s.run_dir), 0
        while args.iterations == 0 or n < args.iterations:
            time.sleep(args.interval)
            cur = sample(c, s.run_dir)
            r = rates(prev, cur)
            prev, n = cur, n + 1
            if args.output == "json":
                print(json.dumps(r), flush=True)
                continue
            if interactive:
                sys.stdout.write("\033[H\033[2J")
            print(render(r), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        c.close()
    return 0
