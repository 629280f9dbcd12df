"""The datapath's control surface: proxy settings, services, enrolled pods.

Everything here writes or reads pinned maps through libbpf; it works the
same from the agent, the CLI, or a test, with or without a compiler.
"""

import os

from . import addresses, host, layout
from .addresses import format_hostport, parse_hostport, parse_ip  # noqa: F401
from .errors import DatapathError
from .loader import Settings
from .maps import MapFullError, PinnedMap, counters  # noqa: F401

PROTOCOL_IDS = {"tcp": 0, "dubbo": 1, "thrift": 2, "redis": 3, "http1": 4, "lengthfield": 5}
PROTOCOL_NAMES = {v: k for k, v in PROTOCOL_IDS.items()}


def service_value(service_id, protocol="tcp", remote_port=0, disabled=False, pair=True):
    """The services map's value (struct nm_service), checked."""
    if protocol not in PROTOCOL_IDS:
        raise DatapathError(f"protocol {protocol!r}: expected one of {', '.join(PROTOCOL_IDS)}")
    if not 0 <= int(remote_port) < 65536:
        raise DatapathError(f"remote port {remote_port} out of range")
    return layout.new("struct nm_service", id=int(service_id), remote_port=int(remote_port),
                      protocol=PROTOCOL_IDS[protocol],
                      flags=(layout.C.NM_SVC_DISABLED if disabled else 0)
                      | (0 if pair else layout.C.NM_SVC_NO_PAIR))


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
        """The proxy settings; local_proxy and remote_proxy as set_proxy takes them."""
        cfg = self.map("proxy").get(0)
        port = layout.be16_to_port(cfg.local_port)
        local = [format_hostport(ip, port) for ip in _proxy_ips(cfg, "local")]
        return {
            "local_proxy": ",".join(local) or None,
            "remote_proxy": ",".join(_proxy_ips(cfg, "remote")) or None,
            "mode": layout.MODE_NAMES.get(cfg.mode, f"unknown({cfg.mode})"),
            "spill_percent": cfg.spill / 100.0,
            "trace": bool(cfg.flags & layout.C.NM_PROXY_TRACE),
            "generation": cfg.generation,
        }

    def set_proxy(self, local=None, remote=None, mode=None, spill=None, trace=None):
        """Change only what is given.

        local: the local proxy, 'IP:PORT', '[IPv6]:PORT', or one of each
        separated by a comma (one port for both); remote: the remote pool's
        'IP', 'IPv6' or both. Each replaces the addresses of both families;
        '' clears them. IPv6 services go to the IPv6 addresses only."""
        m = self.map("proxy")
        cfg = m.get(0)
        if local is not None:
            _set_local(cfg, local)
        if remote is not None:
            _set_remote(cfg, remote)
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

    def add_service(self, vip_port, service_id, protocol="tcp", remote_port=0, disabled=False,
                    pair=True):
        """vip_port: 'VIP:PORT' or '[IPv6 VIP]:PORT'.

        pair: same-node bytes of its connections skip TCP/IP (sk_msg). The psock
        setup and teardown of both ends cost a few us a connection, which the
        first small request already pays back (docs/benchmarks-datapath.md):
        off only for clients that connect and close without sending a byte."""
        name, key = addresses.service_key(vip_port)
        self.map(name).set(key, service_value(service_id, protocol, remote_port, disabled, pair))

    def del_service(self, vip_port) -> bool:
        name, key = addresses.service_key(vip_port)
        return self.map(name).delete(key)

    def services(self) -> list:
        """Both families; IPv6 VIPs as [VIP]:PORT."""
        out = []
        for name in ("services", "services6"):
            for key, val in self._items_if_pinned(name):
                out.append({
                    "vip": addresses.service_vip(name, key),
                    "id": val.id, "protocol": PROTOCOL_NAMES.get(val.protocol, str(val.protocol)),
                    "remote_port": val.remote_port,
                    "disabled": bool(val.flags & layout.C.NM_SVC_DISABLED),
                    "pair": not val.flags & layout.C.NM_SVC_NO_PAIR,
                })
        return sorted(out, key=lambda s: s["id"])

    def _items_if_pinned(self, name):
        """A map's entries; none for a *6 map an older datapath did not pin."""
        try:
            return list(self.map(name).items())
        except DatapathError:
            if name.endswith("6"):
                return []
            raise

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
        """What the proxy reads on accept: the original destination of a client
        (its address as the proxy sees it: IPv4, IPv4-mapped or IPv6)."""
        name, key = addresses.client_key(client_ip, client_port)
        m = self.map(name)
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
        "original_dst": addresses.orig_dst_text(rec),
        "service_id": rec.service_id,
        "cgroup_id": int(rec.cgroup_id),
        "target": layout.TARGETS.get(rec.target, str(rec.target)),
    }


def _proxy_ips(cfg, which) -> list:
    """The configured addresses of the local or remote proxy, IPv4 first."""
    out = []
    ip4 = getattr(cfg, f"{which}_ip")
    ip6 = getattr(cfg, f"{which}_ip6")
    if ip4:
        out.append(layout.be32_to_ip(ip4))
    if not layout.words_are_zero(ip6):
        out.append(layout.words_to_ip6(ip6))
    return out


def _by_family(text, default_port=None) -> dict:
    """{4: (ip, port), 6: (ip, port)} of a comma-separated address list."""
    out = {}
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        ip, port = parse_hostport(part, default_port)
        version = parse_ip(ip).version
        if version in out:
            raise DatapathError(f"{text!r}: one IPv4 and one IPv6 address at most")
        out[version] = (ip, port)
    return out


def _set_local(cfg, text):
    found = _by_family(text)
    ports = {port for _, port in found.values()}
    if len(ports) > 1:
        raise DatapathError(f"{text!r}: the local proxy listens on one port for both families")
    cfg.local_ip = layout.ip_to_be32(found[4][0]) if 4 in found else 0
    cfg.local_ip6 = layout.ip6_to_words(found[6][0]) if 6 in found else [0] * 4
    cfg.local_port = layout.port_to_be16(ports.pop()) if ports else 0


def _set_remote(cfg, text):
    found = _by_family(text, default_port=1)
    cfg.remote_ip = layout.ip_to_be32(found[4][0]) if 4 in found else 0
    cfg.remote_ip6 = layout.ip6_to_words(found[6][0]) if 6 in found else [0] * 4
