"""`nodemesh agent`: run the node agent (agent/daemon)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from . import options
from .errors import CLIError

EXAMPLES = """examples:
  nodemesh agent --config /etc/nodemesh/bootstrap.yaml
  nodemesh agent --config bootstrap.yaml --no-datapath --log-format text
  nodemesh agent --config ads.yaml --run-dir /tmp/nm --persist /tmp/nm/last.pb

The bootstrap is an Envoy v3 bootstrap (YAML or JSON) with an optional
`nodemesh:` section. The agent serves its admin API on
$NODEMESH_RUN_DIR/admin.sock and the proxy's xDS on $NODEMESH_RUN_DIR/xds.sock.
"""


def register(sub, common):
    p = sub.add_parser("agent", parents=[common], formatter_class=options.formatter,
                       help="run the node agent (xDS client, BPF owner, admin API)",
                       epilog=EXAMPLES)
    p.add_argument("--config", required=True, metavar="FILE",
                   help="Envoy v3 bootstrap with a nodemesh section")
    p.add_argument("--cgroup-root", metavar="DIR",
                   help="cgroup v2 directory to attach to (env NODEMESH_CGROUP_ROOT)")
    p.add_argument("--no-datapath", action="store_true",
                   help="do not load the BPF datapath (xDS, relay and admin only)")
    p.add_argument("--admin", metavar="PATH", help="admin socket (default: bootstrap's "
                   "nodemesh.admin, $NODEMESH_RUN_DIR/admin.sock)")
    p.add_argument("--xds-socket", metavar="PATH",
                   help="the proxy's xDS relay socket (default $NODEMESH_RUN_DIR/xds.sock)")
    p.add_argument("--persist", metavar="PATH",
                   help="last good configuration file ('' disables; default: bootstrap's "
                        "nodemesh.xds.persist_path)")
    p.add_argument("--initial-fetch-timeout", type=float, default=10.0, metavar="S",
                   help="seconds to wait for the control plane before serving the last "
                        "good configuration (default 10)")
    p.add_argument("--loop", choices=("asyncio", "uvloop"),
                   default=os.environ.get("NODEMESH_LOOP", "asyncio"),
                   help="event loop (default asyncio: grpc.aio runs natively on it; on "
                        "uvloop it goes through a poller thread, ~4x the latency per "
                        "update; env NODEMESH_LOOP)")
    p.add_argument("--log-level", default=os.environ.get("NODEMESH_LOG_LEVEL", "info"),
                   choices=("debug", "info", "warning", "error"))
    p.add_argument("--log-format", choices=("json", "text"), default="json")
    p.set_defaults(func=run)


def build(args):
    from agent.config.bootstrap import load_bootstrap
    from agent.config.errors import ConfigErrors
    from agent.daemon.agent import Agent, AgentOptions
    from agent.daemon.plugins import default_components

    try:
        bootstrap = load_bootstrap(args.config)
    except ConfigErrors as exc:
        raise CLIError(f"{args.config}: {exc}", "fix the bootstrap and start again") from None
    settings = options.settings(args)
    admin = args.admin or (os.path.join(args.run_dir, "admin.sock") if args.run_dir else None)
    opts = AgentOptions(datapath=not args.no_datapath,
                        loader_settings=settings, admin_path=admin,
                        relay_path=args.xds_socket, persist_path=args.persist,
                        initial_fetch_timeout=args.initial_fetch_timeout)
    agent = Agent(bootstrap, opts)
    for component in default_components(agent):
        agent.add_component(component)
    return agent


def run(args) -> int:
    from agent.daemon import logs

    logs.configure(args.log_level, args.log_format == "json")
    agent = build(args)
    return serve(agent, args.loop)


def serve(agent, loop_kind: str = "asyncio") -> int:
    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await agent.run(stop)

    if loop_kind == "uvloop":
        try:
            import uvloop
        except ImportError:
            print("nodemesh: uvloop not importable, using asyncio", file=sys.stderr)
        else:
            uvloop.run(main())
            return 0
    asyncio.run(main())
    return 0
