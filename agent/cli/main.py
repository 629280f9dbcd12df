"""`nodemesh`: dispatch to one module per command group.

Every expected failure ends as one line on stderr and an exit code (see
errors.py); the datapath commands work without any agent running.

Command modules are imported only when their command runs: `nodemesh drain`
is the DaemonSet's preStop, and importing every group first (bcc's loader,
the config model, the proxy...) delayed the switch to the remote pool by
~0.5 s. `--help` lists every command from COMMANDS below without importing
them; completion and the tests build the full parser (`parser()`).
"""

import importlib
import sys

from . import options
from .errors import from_exception, report

COMMANDS = (
    # (command, module in agent/cli registering it, its help line), in --help order.
    # tests/cli/test_cli_lazy.py checks each module registers exactly these.
    ("datapath", "datapath", "load, inspect and configure the eBPF datapath"),
    ("uninstall", "datapath", "detach and unpin everything, then verify"),
    ("service", "services", "mesh services (VIP:PORT) in the datapath"),
    ("services", "service_join", "services map joined with the proxy's listeners and routes"),
    ("enroll", "pods", "put a pod's cgroup in the mesh"),
    ("unenroll", "pods", "take a pod's cgroup out of the mesh"),
    ("pods", "pods", "list enrolled cgroups"),
    ("stats", "stats", "datapath counters by reason, and proxy metrics"),
    ("status", "status", "the node at a glance; probes"),
    ("conns", "conns", "live redirected connections"),
    ("routes", "routes", "listeners and their routes, in match order"),
    ("clusters", "clusters", "clusters: endpoints, health, outlier state, circuit breakers"),
    ("explain", "explain", "why a connection from a pod goes where it goes"),
    ("trace", "trace", "live connect decisions and proxy requests"),
    ("top", "top", "live per-service and per-pod rates"),
    ("doctor", "doctor", "check that this node can run the datapath"),
    ("demo", "demo", "run the node demo on a simulated node (root)"),
    ("completion", "completion", "print a shell completion script"),
    ("proxy", "proxy", "run the node proxy (supervisor and worker processes)"),
    ("failover", "failover", "where the node's mesh traffic goes, and overrides"),
    ("drain", "failover", "planned drain of the local proxy"),
    ("agent", "agent_cmd", "run the node agent (xDS client, BPF owner, admin API)"),
    ("xds-serve", "xds", "serve Envoy resources from YAML files over xDS"),
    ("version", None, "print the version"),
)
ALL = object()
"""parser(ALL): every command module imported and registered."""

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


def parser(command=ALL) -> options.Parser:
    """The argument parser. command: the one command whose module is imported
    and registered in full (the others are listed by name and help only);
    ALL (default): every module, as completion and the tests need it."""
    p = options.Parser(prog="nodemesh", formatter_class=options.formatter, epilog=EPILOG,
                       description="Per-node service mesh: node-level control and diagnostics.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = options.common()
    wanted = {module for name, module, _ in COMMANDS if command is ALL or command == name}
    for name, module, help_text in COMMANDS:
        if name in sub.choices:
            continue                      # registered with another command of its module
        if module is None:
            _version_command(sub, common)
        elif module in wanted:
            importlib.import_module(f"{__package__}.{module}").register(sub, common)
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return p


def _version_command(sub, common):
    v = sub.add_parser("version", parents=[common], help="print the version",
                       formatter_class=options.formatter,
                       epilog="examples:\n  nodemesh version\n  nodemesh version -o json\n")
    v.set_defaults(func=cmd_version)


def command_of(argv) -> object:
    """The command argv names (its first word; options come after it), or None."""
    return argv[0] if argv and not argv[0].startswith("-") else None


def main(argv=None) -> int:
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        args = parser(command_of(argv)).parse_args(argv)
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
