"""`nodemesh xds-serve DIR`: a file-backed xDS control plane."""

from __future__ import annotations

import asyncio
import os
import signal

from . import options
from .errors import CLIError

EXAMPLES = """examples:
  nodemesh xds-serve ./resources                      # 127.0.0.1:18000
  nodemesh xds-serve /etc/nodemesh/xds --listen 0.0.0.0:18000
  nodemesh xds-serve ./resources --listen unix:/run/nodemesh/cp.sock

DIR holds *.yaml/*.yml/*.json files of Envoy resources in their JSON shape,
each with an "@type" (one per file, lists, or several YAML documents).
Changes are pushed to connected clients within --poll seconds; versions are
content hashes. Serves ADS (SotW and delta) and RDS.
"""


def register(sub, common):
    p = sub.add_parser("xds-serve", parents=[common], formatter_class=options.formatter,
                       help="serve Envoy resources from YAML files over xDS", epilog=EXAMPLES)
    p.add_argument("directory", metavar="DIR")
    p.add_argument("--listen", default="127.0.0.1:18000", metavar="ADDR",
                   help="HOST:PORT or unix:/PATH (default 127.0.0.1:18000)")
    p.add_argument("--poll", type=float, default=1.0, metavar="S",
                   help="seconds between checks for changed files (default 1)")
    p.add_argument("--log-level", default=os.environ.get("NODEMESH_LOG_LEVEL", "info"),
                   choices=("debug", "info", "warning", "error"))
    p.add_argument("--log-format", choices=("json", "text"), default="text")
    p.set_defaults(func=run)


def run(args) -> int:
    from agent.daemon import logs
    from agent.xds.files import FileError, ResourceDir

    logs.configure(args.log_level, args.log_format == "json")
    try:
        rdir = ResourceDir(args.directory)
    except FileError as exc:
        raise CLIError(str(exc), "give a directory of resource files") from None
    rdir.reload()
    for path, err in rdir.errors.items():
        print(f"nodemesh: xds-serve: {path}: {err}", flush=True)
    asyncio.run(_serve(rdir, args.listen, args.poll))
    return 0


async def _serve(rdir, listen: str, poll: float):
    from agent.xds.server import XdsServer

    server = XdsServer(rdir.served)
    address = await server.start(listen)
    counts = {t.rsplit(".", 1)[-1]: n for t, n in rdir.served.counts().items()}
    print(f"xds-serve: {rdir.directory} on {address}: {counts}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = loop.create_task(rdir.watch(poll))
    try:
        await stop.wait()
    finally:
        watcher.cancel()
        await server.stop()
