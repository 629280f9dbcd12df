"""`nodemesh demo`: the node demo (agent/demo/scenario.py)."""

import sys

from . import options
from .errors import GENERAL, PERMISSION, UNSUPPORTED, CLIError

EXAMPLES = """examples:
  sudo nodemesh demo                       # live view, about a minute
  sudo nodemesh demo --duration 30 -o json # unattended, the summary as JSON
  sudo nodemesh demo --keep-logs /tmp/demo # the processes' logs, kept

Builds a node from network namespaces and cgroups (two pods, five backends,
a remote proxy), runs xds-serve, the agent and the local proxy on it, and
walks through a route change, a killed proxy and a drain-and-upgrade while
the pods send Redis, Thrift, Dubbo and HTTP requests. Ctrl-C at any point
takes everything down. Exit 0 when no request failed and nothing was left.
"""


def register(sub, common):
    p = sub.add_parser("demo", parents=[common], formatter_class=options.formatter,
                       help="run the node demo on a simulated node (root)", epilog=EXAMPLES)
    p.add_argument("--duration", type=float, default=40.0, metavar="S",
                   help="seconds of client traffic, spread over the phases (default 40)")
    p.add_argument("--rate", type=float, default=20.0, metavar="R",
                   help="requests/s per client, 8 clients (default 20)")
    p.add_argument("--keep-logs", metavar="DIR", default="",
                   help="copy every process's log to DIR before the node is removed")
    p.set_defaults(func=run)


def run(args) -> int:
    from agent.demo import preflight, scenario
    from agent.demo.node import StepError
    from agent.demo.settings import DemoSettings

    try:
        settings = DemoSettings(duration=args.duration, rate=args.rate,
                                keep_logs=args.keep_logs)
    except ValueError as exc:
        raise CLIError(str(exc), "pass positive numbers", 2) from None
    fmt = "json" if args.output in ("json", "yaml") else "text"
    try:
        summary = scenario.run(settings, fmt)
    except preflight.PreflightError as exc:
        code = PERMISSION if str(exc).startswith("not root") else \
            UNSUPPORTED if "cannot run the datapath" in str(exc) else GENERAL
        raise CLIError(f"demo: {exc}", "nothing was set up", code) from None
    except StepError as exc:
        raise CLIError(f"demo stopped: {exc}", "everything it set up was removed") from None
    except KeyboardInterrupt:
        print("nodemesh: demo interrupted: everything it set up was removed", file=sys.stderr)
        return 130
    return 0 if summary["ok"] else 1
