"""The failover controller on its own, without the agent process:

    python -m agent.failover [--pin-dir DIR] [--run-dir DIR] [--set KEY=VALUE ...]

It serves the agent's failover routes on $run_dir/admin.sock (so `nodemesh
failover` and `nodemesh drain` work the same) and logs JSON lines to stderr.
Used by the tests and the benchmark; the agent runs the same controller as
one of its components.
"""

import argparse
import asyncio
import logging
import os
import signal
import sys

import yaml

from agent.bpf.datapath import Control
from agent.bpf.loader import Settings

from .controller import FailoverController
from .settings import FailoverSettings, SettingsError


def parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m agent.failover", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pin-dir", default=os.environ.get("NODEMESH_PIN_DIR",
                                                       "/sys/fs/bpf/nodemesh"))
    p.add_argument("--run-dir", default=os.environ.get("NODEMESH_RUN_DIR", "/run/nodemesh"))
    p.add_argument("--admin", help="admin socket to serve (default $run_dir/admin.sock)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a nodemesh.failover setting, value in YAML (overload.cpu_percent=80)")
    return p.parse_args(argv)


def settings_from(args) -> FailoverSettings:
    section = {}
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SettingsError("--set", f"{item!r}: expected KEY=VALUE")
        value = yaml.safe_load(raw)
        if key.startswith("overload."):
            section.setdefault("overload", {})[key.split(".", 1)[1]] = value
        else:
            section[key] = value
    section.setdefault("run_dir", args.run_dir)
    return FailoverSettings.from_mapping(section)


async def main(args) -> int:
    settings = settings_from(args)
    control = Control(Settings(pin_dir=args.pin_dir, run_dir=args.run_dir))
    controller = FailoverController(settings, control)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, controller.stop)
    await controller.run(admin_path=args.admin or os.path.join(args.run_dir, "admin.sock"))
    control.close()
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        sys.exit(asyncio.run(main(parse())))
    except SettingsError as e:
        print(f"nodemesh failover: {e}", file=sys.stderr)
        sys.exit(2)
