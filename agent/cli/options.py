"""Options every command shares, argument types, and Settings from them.

Flags mirror agent.bpf.loader.Settings, with the same environment fallbacks
(NODEMESH_PIN_DIR, NODEMESH_CGROUP_ROOT, NODEMESH_RUN_DIR), read when the
command runs.
"""

import argparse
import os
import re

from agent.bpf.settings import DEFAULT_PIN_DIR, Settings

from .output import FORMATS


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message):
        from .errors import USAGE, CLIError

        where = self.prog.partition(" ")[2]
        raise CLIError(f"{where}: {message}" if where else message,
                       f"see `{self.prog} --help`", USAGE)


def formatter(prog):
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=30, width=80)


def common(output=True) -> Parser:
    """Parent parser: where the datapath is, and how to print."""
    p = Parser(add_help=False)
    g = p.add_argument_group("datapath location")
    g.add_argument("--pin-dir", metavar="DIR",
                   help="bpffs directory of the pins (env NODEMESH_PIN_DIR, "
                        f"default {DEFAULT_PIN_DIR})")
    g.add_argument("--run-dir", metavar="DIR",
                   help="runtime dir: state file, admin.sock (env NODEMESH_RUN_DIR, "
                        "default /run/nodemesh)")
    if output:
        p.add_argument("-o", "--output", choices=FORMATS, default="table",
                       help="table (80 columns), wide, json or yaml")
    return p


def force() -> Parser:
    p = Parser(add_help=False)
    p.add_argument("--force", action="store_true",
                   help="change it even though a running agent owns the configuration")
    return p


def settings(args, **overrides) -> Settings:
    env = os.environ.get
    return Settings(
        pin_dir=getattr(args, "pin_dir", None) or env("NODEMESH_PIN_DIR") or DEFAULT_PIN_DIR,
        cgroup_root=getattr(args, "cgroup_root", None) or env("NODEMESH_CGROUP_ROOT", ""),
        run_dir=getattr(args, "run_dir", None) or env("NODEMESH_RUN_DIR", "/run/nodemesh"),
        **overrides)


# -- argument types: a bad value is a usage error (exit 2) ----------------------

def _address(text: str, default_port=None):
    """The datapath's own address check, as a usage error."""
    from agent.bpf.datapath import DatapathError, parse_hostport

    try:
        return parse_hostport(text, default_port)
    except DatapathError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def addresses(text: str) -> str:
    """'198.18.0.50' or 'fd00::50' or both, comma-separated (one per family): the
    remote pool's addresses, as Control.set_proxy takes them."""
    from agent.bpf.datapath import format_hostport

    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an address like 198.18.0.50")
    ips = [format_hostport(_address(p, 1)[0], 1).rpartition(":")[0].strip("[]") for p in parts]
    return ",".join(ips)


def hostports(text: str) -> str:
    """'IP:PORT', '[IPv6]:PORT' or one of each, comma-separated (the local proxy)."""
    return ",".join(hostport(p.strip()) for p in text.split(",") if p.strip())


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"port {value} not in 1-65535")
    return value


def hostport(text: str) -> str:
    """'198.18.0.10:80' or '[fd00::10]:80', checked and written as the maps show it."""
    from agent.bpf.datapath import format_hostport

    if ":" not in text:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected IP:PORT like 198.18.0.10:80 or [fd00::10]:80")
    return format_hostport(*_address(text))


def percent(text: str) -> float:
    try:
        value = float(text.rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{value:g}% not in 0-100")
    return value


_DEFINE = re.compile(r"^[A-Z_][A-Z0-9_]*=[^\s]+$")


def define(text: str):
    if not _DEFINE.match(text):
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE like NM_MAX_CONNS=65536")
    name, value = text.split("=", 1)
    return name, value


def on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected on or off")
    return text == "on"


def config_source() -> Parser:
    """Parent parser: which component's admin API to read configuration from."""
    p = Parser(add_help=False)
    p.add_argument("--from", dest="source", choices=("proxy", "agent", "remote"),
                   help="read this component only (default: the local proxy, else the "
                        "agent); exit 6 if it does not answer")
    return p


def meta(text: str):
    """--meta key=value: one request metadata entry."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE like interface=org.Foo")
    return key, value


def positive_int(text: str) -> int:
    """A count or a process id: a whole number >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 1")
    return int(text)


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seconds > 0")
    return value
