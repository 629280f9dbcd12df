"""The datapath's control surface: proxy settings, services, enrolled pods.

Everything here writes or reads pinned maps through libbpf; it works the
same from the agent, the CLI, or a test, with or without a compiler.
"""

import os
import socket

from . import host, layout
from .layout import ffi
from .loader import Settings
from .maps import MapFullError, PinnedMap, counters  # noqa: F401

PROTOCOL_IDS = {"tcp": 0, "dubbo": 1, "thrift": 2, "redis": 3, "http1": 4, "lengthfield": 5}
PROTOCOL_NAMES = {v: k for k, v in PROTOCOL_IDS.items()}


class DatapathError(RuntimeError):
    pass


def parse_hostport(text: str, default_port=None):
    """'198.18.0.10:80' -> ('198.18.0.10', 80), with a clear error."""
    host_part, sep, port = str(text).rpartition(":")
    if not sep:
        host_part, port = text, default_port
    try:
        socket.inet_aton(host_part)
        if host_part.count(".") != 3:
            raise OSError
    except OSError:
        raise DatapathError(f"{host_part!r} is not an IPv4 address (like 198.18.0.10)") from None
    try:
        port = int(port)
        if not 0 < port < 65536:
            raise ValueError
    except (TypeError, ValueError):
        raise DatapathError(f"{text!r}: port not in 1-65535") from None
    return host_part, port


class Control:
    """Typed reads and writes of the pinned maps of one datapath."""

    def __init__(self, settings: Settings = None):
        self.s = settings or Settings()
        self._maps = {}

    def map(self, name) -> PinnedMap:
        if name not in self._maps:
            try:
                self._maps[name] = PinnedMap(self.s.pin_dir, name)
            except OSError as exc:
                raise DatapathError(
                    f"datapath map {name} not found under {self.s.pin_dir} ({exc.strerror}): "
                    "run `nodemesh datapath up` first") from None
        return self._maps[name]

    def close(self):
        for m in self._maps.values():
            m.close()
        self._maps.clear()

    # -- proxy settings -----------------------------------------------------

    def proxy(self) -> dict:
        cfg = self.map("proxy").get(0)
        return {
            "local_proxy": (f"{layout.be32_to_ip(cfg.local_ip)}:{layout.be16_to_port(cfg.local_port)}"
                            if cfg.local_ip else None),
            "remote_proxy": layout.be32_to_ip(cfg.remote_ip) if cfg.remote_ip else None,
            "mode": layout.MODE_NAMES.get(cfg.mode, f"unknown({cfg.mode})"),
            "spill_percent": cfg.spill / 100.0,
            "trace": bool(cfg.flags & layout.C.NM_PROXY_TRACE),
            "generation": cfg.generation,
        }

    def set_proxy(self, local=None, remote=None, mode=None, spill=None, trace=None):
        """Change only what is given. local: 'ip:port' ('' clears), remote: 'ip'."""
        m = self.map("proxy")
        cfg = m.get(0)
        if local is not None:
            if local == "":
                cfg.local_ip, cfg.local_port = 0, 0
            else:
                ip, port = parse_hostport(local)
                cfg.local_ip, cfg.local_port = layout.ip_to_be32(ip), layout.port_to_be16(port)
        if remote is not None:
            cfg.remote_ip = layout.ip_to_be32(parse_hostport(remote, 1)[0]) if remote else 0
        if mode is not None:
            if mode not in layout.MODES:
                raise DatapathError(f"mode {mode!r}: expected one of {', '.join(layout.MODES)}")
            cfg.mode = layout.MODES[mode]
        if spill is not None:
            if not 0 <= float(spill) <= 100:
                raise DatapathError(f"spill {spill}: expected a percentage from 0 to 100")
            cfg.spill = int(round(float(spill) * 100))
        if trace is not None:
            cfg.flags = (cfg.flags | layout.C.NM_PROXY_TRACE) if trace else \
                (cfg.flags & ~layout.C.NM_PROXY_TRACE)
        cfg.generation = (cfg.generation + 1) & 0xFFFFFFFF or 1
        m.set(0, cfg)

    # -- services -------------------------------------------------------------

    @staticmethod
    def _service_key(vip_port: str):
        ip, port = parse_hostport(vip_port)
        return layout.new("struct nm_service_key", vip=layout.ip_to_be32(ip),
                          port=layout.port_to_be16(port))

    def add_service(self, vip_port, service_id, protocol="tcp", remote_port=0, disabled=False,
                    pair=True):
        """pair: same-node bytes of its connections skip TCP/IP (sk_msg). It costs
        ~3 us of psock setup and teardown a connection and saves ~5 us of CPU a
        small request: off for services whose clients connect, ask once, close."""
        if protocol not in PROTOCOL_IDS:
            raise DatapathError(f"protocol {protocol!r}: expected one of {', '.join(PROTOCOL_IDS)}")
        if not 0 <= int(remote_port) < 65536:
            raise DatapathError(f"remote port {remote_port} out of range")
        value = layout.new("struct nm_service", id=int(service_id),
                           remote_port=int(remote_port), protocol=PROTOCOL_IDS[protocol],
                           flags=(layout.C.NM_SVC_DISABLED if disabled else 0)
                           | (layout.C.NM_SVC_PAIR if pair else 0))
        self.map("services").set(self._service_key(vip_port), value)

    def del_service(self, vip_port) -> bool:
        return self.map("services").delete(self._service_key(vip_port))

    def services(self) -> list:
        out = []
        for key, val in self.map("services").items():
            out.append({
                "vip": f"{layout.be32_to_ip(key.vip)}:{layout.be16_to_port(key.port)}",
                "id": val.id, "protocol": PROTOCOL_NAMES.get(val.protocol, str(val.protocol)),
                "remote_port": val.remote_port,
                "disabled": bool(val.flags & layout.C.NM_SVC_DISABLED),
                "pair": bool(val.flags & layout.C.NM_SVC_PAIR),
            })
        return sorted(out, key=lambda s: s["id"])

    # -- enrollment -------------------------------------------------------------

    def enroll(self, cgroup_path, pod_index=0, proxy_netns=-1, spill=None):
        path = os.path.realpath(cgroup_path)
        if not os.path.isfile(os.path.join(path, "cgroup.procs")):
            raise DatapathError(f"{cgroup_path}: not a cgroup v2 directory")
        value = layout.new("struct nm_pod", pod_index=int(pod_index), proxy_netns=int(proxy_netns),
                           spill=layout.C.NM_SPILL_UNSET if spill is None else int(spill * 100))
        self.map("enrolled").set(host.cgroup_id(path), value)
        return host.cgroup_id(path)

    def unenroll(self, cgroup_path) -> bool:
        try:
            cid = host.cgroup_id(cgroup_path)
        except OSError:
            raise DatapathError(f"{cgroup_path}: no such cgroup") from None
        return self.map("enrolled").delete(cid)

    def enrolled(self) -> list:
        return [{"cgroup_id": int(k[0]), "pod_index": v.pod_index, "proxy_netns": v.proxy_netns,
                 "spill": None if v.spill == layout.C.NM_SPILL_UNSET else v.spill / 100.0}
                for k, v in self.map("enrolled").items()]

    # -- connections --------------------------------------------------------------

    def accept_record(self, client_ip: str, client_port: int, delete=True):
        """What the proxy reads on accept: the original destination of a client."""
        key = layout.new("struct nm_addr_key", ip=layout.ip_to_be32(client_ip),
                         port=layout.port_to_be16(client_port))
        m = self.map("accept_records")
        rec = m.get(key)
        if rec is None:
            return None
        if delete:
            m.delete(key)
        return orig_dst_dict(rec)

    def counters(self) -> dict:
        return counters(self.s.pin_dir)


def orig_dst_dict(rec) -> dict:
    return {
        "original_dst": f"{layout.be32_to_ip(rec.ip)}:{layout.be16_to_port(rec.port)}",
        "service_id": rec.service_id,
        "cgroup_id": int(rec.cgroup_id),
        "target": layout.TARGETS.get(rec.target, str(rec.target)),
    }
