"""`nodemesh`: dispatch to one module per command group.

Every expected failure ends as one line on stderr and an exit code (see
errors.py); the datapath commands work without any agent running.
"""

import sys

from . import (
    agent_cmd,
    clusters,
    completion,
    conns,
    datapath,
    demo,
    doctor,
    explain,
    failover,
    options,
    pods,
    routes,
    service_join,
    services,
    stats,
    status,
    top,
    trace,
    xds,
)
from .errors import from_exception, report

EPILOG = """examples:
  nodemesh doctor
  nodemesh datapath up && nodemesh datapath status
  nodemesh datapath set --local-proxy 127.0.0.1:15001 --mode local
  nodemesh service add 198.18.0.10:6379 --protocol redis
  nodemesh enroll --cgroup /sys/fs/cgroup/demo && nodemesh stats
  nodemesh explain --pod shop/cart-0 198.18.0.10:6379 --meta key=user:42
  nodemesh services && nodemesh routes && nodemesh clusters
  nodemesh failover status && nodemesh drain --deadline 30
  nodemesh uninstall

exit codes: 0 ok, 1 failed, 2 usage, 3 datapath not up, 4 not root,
            5 node cannot run the datapath, 6 proxy/agent not answering
environment: NODEMESH_PIN_DIR, NODEMESH_CGROUP_ROOT, NODEMESH_RUN_DIR, NO_COLOR
"""


def version() -> str:
    try:
        from importlib.metadata import version as dist_version

        return dist_version("nodemesh")
    except Exception:   # noqa: BLE001 - a checkout that is not installed
        return "0.1.0+checkout"


def cmd_version(args) -> int:
    from agent.bpf.loader import Datapath

    data = {"version": version(), "python": sys.version.split()[0],
            "bpf_source_digest": Datapath(options.settings(args)).source_digest()}
    from . import output

    output.emit(data, args.output,
                lambda wide: f"nodemesh {data['version']} (bpf source {data['bpf_source_digest']})")
    return 0


def parser() -> options.Parser:
    p = options.Parser(prog="nodemesh", formatter_class=options.formatter, epilog=EPILOG,
                       description="Per-node service mesh: node-level control and diagnostics.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = options.common()
    datapath.register(sub, common)
    services.register(sub, common)
    service_join.register(sub, common)
    pods.register(sub, common)
    stats.register(sub, common)
    status.register(sub, common)
    conns.register(sub, common)
    routes.register(sub, common)
    clusters.register(sub, common)
    explain.register(sub, common)
    trace.register(sub, common)
    top.register(sub, common)
    doctor.register(sub, common)
    demo.register(sub, common)
    completion.register(sub, common)
    from . import proxy as proxy_command
    proxy_command.register(sub, common)
    failover.register(sub, common)
    agent_cmd.register(sub, common)
    xds.register(sub, common)
    v = sub.add_parser("version", parents=[common], help="print the version",
                       formatter_class=options.formatter,
                       epilog="examples:\n  nodemesh version\n  nodemesh version -o json\n")
    v.set_defaults(func=cmd_version)
    return p


def main(argv=None) -> int:
    try:
        args = parser().parse_args(argv)
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - expected ones become one line
        err = from_exception(exc)
        if err is None:
            raise
        return report(err)


if __name__ == "__main__":
    sys.exit(main())
