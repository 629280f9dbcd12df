"""`nodemesh proxy`: run the node's L7 proxy (supervisor + workers), local or remote role."""

import argparse
import json
import logging
import os

from . import options
from .errors import GENERAL, USAGE, CLIError

EXAMPLES = """examples:
  nodemesh proxy --role local --config /etc/nodemesh/bootstrap.yaml
  nodemesh proxy --role local --xds unix:/run/nodemesh/xds.sock --workers 2
  nodemesh proxy --role remote --config bootstrap.yaml --listen 0.0.0.0:15010
  curl --unix-socket /run/nodemesh/proxy-local.sock http://x/stats

signals: SIGTERM/SIGINT drain (close at request boundaries, then exit);
         POST /drain?deadline=S on the admin socket does the same.
environment: NODEMESH_RUN_DIR (admin socket dir), NODEMESH_PIN_DIR (local role),
             NODEMESH_LOG_LEVEL (default WARNING)
"""


def register(sub, common):
    p = sub.add_parser("proxy", parents=[common], formatter_class=options.formatter,
                       help="run the node proxy (supervisor and worker processes)",
                       epilog=EXAMPLES)
    p.add_argument("--role", choices=("local", "remote"), default="local",
                   help="local: one port, service from the BPF record; remote: one port per "
                        "service plus a shared port (default local)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", metavar="BOOTSTRAP", help="static bootstrap (YAML or JSON)")
    src.add_argument("--xds", metavar="ADDRESS",
                     help="xDS server: unix:/run/nodemesh/xds.sock (the agent) or HOST:PORT")
    p.add_argument("--listen", metavar="HOST:PORT", type=_listen,
                   help="local: the proxy port (default bootstrap nodemesh.local_proxy, else "
                        "127.0.0.1:15001); remote: host of the per-service ports and the "
                        "shared port (default 0.0.0.0:15010, port 0 = none)")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="worker processes (default: one per CPU)")
    p.add_argument("--admin", metavar="PATH",
                   help="admin socket (default $NODEMESH_RUN_DIR/proxy-<role>.sock)")
    p.add_argument("--access-log", metavar="PATH", help="JSON-lines access log")
    p.add_argument("--drain-deadline", type=float, default=30.0, metavar="S",
                   help="seconds a SIGTERM drain waits for requests in flight (default 30)")
    p.add_argument("--plaintext", action="store_true",
                   help="--xds HOST:PORT without TLS (unix sockets are always plaintext)")
    p.set_defaults(func=run)


def _listen(text: str):
    host, sep, port = text.rpartition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT like 127.0.0.1:15001")
    try:
        port = int(port)
        if not 0 <= port < 65536:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: port not in 0-65535") from None
    return host or "0.0.0.0", port


def _source(args):
    """(ConfigSource, nodemesh settings or None)."""
    if args.config:
        from agent.config.errors import ConfigError, ConfigErrors

        from agent.proxy.static_source import StaticSource

        if not os.path.isfile(args.config):
            raise CLIError(f"{args.config}: no such file", "pass a bootstrap file")
        try:
            source = StaticSource(args.config)
        except ConfigErrors as exc:
            reasons = "; ".join(str(e) for e in getattr(exc, "errors", [exc]))
            raise CLIError(f"{args.config}: {reasons}", "fix the bootstrap") from None
        except (ConfigError, ValueError) as exc:
            raise CLIError(f"{args.config}: {exc}", "fix the bootstrap") from None
        return source, source.settings
    try:
        from agent.xds.source import XdsSource
    except ImportError as exc:
        raise CLIError(f"--xds: the xDS client is not available ({exc})",
                       "use --config BOOTSTRAP") from None
    from agent.xds.channel import ChannelError

    try:
        return XdsSource(args.xds, plaintext=args.plaintext), None
    except (ChannelError, ValueError) as exc:
        raise CLIError(f"--xds: {exc}", "pass unix:/PATH or HOST:PORT", USAGE) from None


def settings_from(args, node_settings):
    from agent.proxy.settings import ProxySettings

    listen = args.listen
    if listen is None and args.role == "local" and node_settings is not None:
        listen = node_settings.local_proxy_address
    admin = args.admin or ""
    if not admin and node_settings is not None and args.role == "local" and \
            getattr(node_settings, "proxy_admin", None):
        admin = node_settings.proxy_admin
    if args.run_dir and not admin:
        admin = os.path.join(args.run_dir, f"proxy-{args.role}.sock")
    s = ProxySettings(role=args.role, listen=listen, workers=args.workers, admin_path=admin,
                      access_log=args.access_log, drain_deadline=args.drain_deadline)
    if args.pin_dir:
        s.pin_dir = args.pin_dir
    try:
        return s.validate()
    except ValueError as exc:
        raise CLIError(str(exc), "check the flags", USAGE) from None


def run(args) -> int:
    import asyncio

    logging.basicConfig(level=os.environ.get("NODEMESH_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s proxy %(levelname)s %(message)s")
    source, node_settings = _source(args)
    settings = settings_from(args, node_settings)
    remote_ports = dict(getattr(node_settings, "remote_ports", {}) or {})
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    from agent.proxy.supervisor import Supervisor

    sup = Supervisor(settings, source, remote_ports=remote_ports)
    try:
        code = asyncio.run(sup.run())
    except OSError as exc:
        raise CLIError(f"proxy: {exc}", "check the admin socket path and permissions",
                       GENERAL) from None
    summary = {"drained": sup.draining, "cut_requests": sup.drain_cut}
    logging.getLogger("nodemesh.proxy").warning("exit %s", json.dumps(summary))
    return code
