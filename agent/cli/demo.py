"""`nodemesh demo`: the node demo (agent/demo/scenario.py)."""

from . import options

EXAMPLES = """examples:
  sudo nodemesh demo                       # live table, about 20 s
  sudo nodemesh demo --duration 8 -o json  # unattended, summary as JSON
"""


def register(sub, common):
    p = sub.add_parser("demo", parents=[common], formatter_class=options.formatter,
                       help="run the node demo on a simulated node (root)", epilog=EXAMPLES)
    p.add_argument("--duration", type=float, default=20.0, metavar="S",
                   help="seconds of client traffic (default 20)")
    p.set_defaults(func=run)


def run(args) -> int:
    from agent.demo import scenario

    fmt = "json" if args.output in ("json", "yaml") else "text"
    summary = scenario.run(args.duration, fmt)
    return 0 if summary["ok"] else 1
