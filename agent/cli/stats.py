"""`nodemesh stats`: the kernel's per-CPU counters, summed, by reason."""

from . import access, output

EPILOG = """examples:
  nodemesh stats
  nodemesh stats --all -o json
  watch -n1 nodemesh stats
"""


def register(sub, common):
    from . import options

    st = sub.add_parser("stats", parents=[common], help="datapath counters by reason",
                        formatter_class=options.formatter, epilog=EPILOG)
    st.add_argument("--all", action="store_true", help="include reasons that are zero")
    st.set_defaults(func=cmd_stats)


def cmd_stats(args) -> int:
    c = access.control(args)
    try:
        counts = c.counters()
    finally:
        c.close()
    shown = counts if args.all else {k: v for k, v in counts.items() if v}
    rows = [{"reason": k, "count": v} for k, v in shown.items()]

    def text(wide):
        if not rows:
            return "all counters are zero (--all lists every reason)"
        return output.table(rows, [("REASON", "reason"), ("COUNT", "count")], wide)

    output.emit({"counters": shown}, args.output, text)
    return 0
