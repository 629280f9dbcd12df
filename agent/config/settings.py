"""The bootstrap's `nodemesh:` section: node-level settings Envoy has no place for.

Each dataclass documents why its defaults are what they are. Parsing is
strict: an unknown key or a bad value is an error naming
`nodemesh.<section>.<key>`, and every problem is reported at once.
"""

from __future__ import annotations

import ipaddress
import os
import re
import string
from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional, Tuple

from agent.failover.settings import FailoverSettings, Overload
from agent.failover.settings import parse as parse_failover

from agent.k8s.policy import DEFAULT_RULES, LabelRule, parse_rules

from .errors import FieldError
from .values import bool_value, check_keys, int_value


def run_dir() -> str:
    """Where runtime sockets live: /run/nodemesh (DESIGN), or $NODEMESH_RUN_DIR for tests."""
    return os.environ.get("NODEMESH_RUN_DIR", "/run/nodemesh")


# `nodemesh.failover`: the failover controller's own settings dataclass is the
# one definition (fields, ranges, justified defaults); parsed by _failover below.
OverloadThresholds = Overload          # the name this module used to define


@dataclass(frozen=True)
class EnrollmentSettings:
    """Pods join the mesh by opting in: installing the DaemonSet must not
    reroute every pod on the node. cgroup_root: the cgroup v2 mount, or
    $NODEMESH_CGROUP_ROOT (hybrid hosts mount it at /sys/fs/cgroup/unified)."""

    labels: Tuple[LabelRule, ...] = DEFAULT_RULES
    """Label rules in order (agent.k8s.policy): "key=on/off" strings, or a mapping."""
    cgroup_root: str = field(
        default_factory=lambda: os.environ.get("NODEMESH_CGROUP_ROOT", "/sys/fs/cgroup"))


NODE_ID_FIELDS = ("pod_ip", "pod_name", "namespace", "node_name",
                  "type", "ip", "pod", "domain", "node")   # Istio's names (agent.xds.node)


@dataclass(frozen=True)
class XdsSettings:
    """persist_path: the last configuration the control plane gave, loaded when
    the agent restarts while the control plane is down (under /var/lib so it
    survives a pod restart on a hostPath). node_id_template: Istio's sidecar
    id shape, which istiod parses for the proxy's IP and namespace.
    plaintext false: the control plane carries secrets and routing; plaintext
    must be asked for. token_path: a bearer token file (Istio's projected
    istio-token) sent as "authorization: Bearer ..." on every xDS stream and
    re-read for each new stream, so a rotated token is used from the next
    reconnect (istiod closes streams every ~30 min); None sends none."""

    persist_path: str = "/var/lib/nodemesh/last-good.pb"
    node_id_template: str = "sidecar~{pod_ip}~{pod_name}.{namespace}~{namespace}.svc.cluster.local"
    plaintext: bool = False
    tls_cert: Optional[str] = None
    tls_key: Optional[str] = None
    tls_ca: Optional[str] = None
    token_path: Optional[str] = None

    def node_id(self, **values: str) -> str:
        return self.node_id_template.format(**{k: values.get(k, "") for k in NODE_ID_FIELDS})


@dataclass(frozen=True)
class NodeSettings:
    """local_proxy 127.0.0.1:15001: the node proxy's one listening address,
    where connect4 redirects (15001 is Istio's outbound capture port, so
    nothing else on a mesh node is expected there). remote_proxy None: no
    remote pool until one is configured; failover then goes straight to
    fail-open. remote_ports: the remote proxy learns the service from the port
    it was reached on; keys are listener names or "VIP:port"."""

    local_proxy: str = "127.0.0.1:15001"
    remote_proxy: Optional[str] = None
    remote_ports: Mapping[str, int] = field(default_factory=dict)
    proxy_admin: str = field(default_factory=lambda: os.path.join(run_dir(), "proxy-local.sock"))
    admin: str = field(default_factory=lambda: os.path.join(run_dir(), "admin.sock"))
    failover: FailoverSettings = field(default_factory=FailoverSettings)
    enrollment: EnrollmentSettings = field(default_factory=EnrollmentSettings)
    xds: XdsSettings = XdsSettings()

    @property
    def local_proxy_address(self) -> Tuple[str, int]:
        return split_host_port(self.local_proxy, "nodemesh.local_proxy")


# --- parsing ------------------------------------------------------------------------------

_TOP = ("local_proxy", "remote_proxy", "remote_ports", "proxy_admin", "admin", "failover",
        "enrollment", "xds")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")


def parse_settings(section: Any) -> Tuple[NodeSettings, List[FieldError]]:
    """NodeSettings from the `nodemesh:` mapping, and every problem found (fields
    with problems keep their defaults)."""
    errors: List[FieldError] = []
    if section is None:
        return NodeSettings(), errors
    if not isinstance(section, dict):
        return NodeSettings(), [FieldError("nodemesh", "expected a mapping")]
    _collect(errors, check_keys, section, _TOP, "nodemesh")
    values = {}
    for key, reader in (("local_proxy", _local_proxy), ("remote_proxy", _remote_proxy),
                        ("remote_ports", _remote_ports), ("proxy_admin", _path),
                        ("admin", _path), ("failover", _failover),
                        ("enrollment", _enrollment), ("xds", _xds)):
        if key in section:
            value = _collect(errors, reader, section[key], f"nodemesh.{key}")
            if value is not _FAILED:
                values[key] = value
    return NodeSettings(**values), errors


_FAILED = object()


class _Problems(Exception):
    """Several FieldErrors from one section: each is reported."""

    def __init__(self, errors):
        super().__init__()
        self.errors = list(errors)


def _collect(errors, reader, *args):
    try:
        return reader(*args)
    except FieldError as exc:
        errors.append(exc)
    except _Problems as exc:
        errors.extend(exc.errors)
    return _FAILED


def split_host_port(text: Any, field_name: str) -> Tuple[str, int]:
    if not isinstance(text, str) or ":" not in text:
        raise FieldError(field_name, f"expected \"HOST:PORT\", got {text!r}")
    host, _, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise FieldError(field_name, f"bad port in {text!r}")
    return host, int(port)


def _local_proxy(value, field_name):
    host, _port = split_host_port(value, field_name)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise FieldError(field_name, f"{host!r} is not an IP address (the datapath "
                                     "redirects to an address, not a name)") from None
    return value


def _remote_proxy(value, field_name):
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise FieldError(field_name, f"expected a host or HOST:PORT, got {value!r}")
    host = value
    if value.count(":") == 1 or value.startswith("["):
        host, _port = split_host_port(value, field_name)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME.match(host):
            raise FieldError(field_name, f"{host!r} is neither an IP address nor a "
                                         "host name") from None
    return value


def _remote_ports(value, field_name):
    if not isinstance(value, dict):
        raise FieldError(field_name, "expected a mapping of listener name or VIP:port to port")
    out, owners = {}, {}
    for key, port in value.items():
        port = int_value(port, f"{field_name}[{key}]", low=1, high=65535)
        if port in owners:
            raise FieldError(f"{field_name}[{key}]",
                             f"port {port} already assigned to {owners[port]!r}")
        owners[port] = key
        out[str(key)] = port
    return out


def _path(value, field_name):
    if not isinstance(value, str) or not value.startswith("/"):
        raise FieldError(field_name, f"expected an absolute path, got {value!r}")
    return value


def _failover(value, field_name):
    """Every setting of agent/failover/settings.py's FailoverSettings, checked
    by its own Spec; the node settings it also holds come from `nodemesh.*`."""
    settings, problems = parse_failover(value, where=field_name)
    if problems:
        raise _Problems(FieldError(p.field, p.reason) for p in problems)
    return settings


def _enrollment(value, field_name):
    section = _mapping(value, field_name)
    check_keys(section, ("labels", "cgroup_root"), field_name)
    out = {}
    if "labels" in section:
        try:
            out["labels"] = parse_rules(section["labels"], f"{field_name}.labels")
        except ValueError as exc:
            where, _, reason = str(exc).partition(": ")
            raise FieldError(where, reason) from None
    if "cgroup_root" in section:
        out["cgroup_root"] = _path(section["cgroup_root"], f"{field_name}.cgroup_root")
    return EnrollmentSettings(**out)


def _xds(value, field_name):
    section = _mapping(value, field_name)
    check_keys(section, ("persist_path", "node_id_template", "plaintext", "tls_cert", "tls_key",
                         "tls_ca", "tls", "token_path"), field_name)
    section = dict(section)
    if "tls" in section:           # tls: {ca, cert, key}, the shape the deploy overlays use
        tls = _mapping(section.pop("tls"), f"{field_name}.tls")
        check_keys(tls, ("ca", "cert", "key"), f"{field_name}.tls")
        for key in tls:
            if f"tls_{key}" in section:
                raise FieldError(f"{field_name}.tls.{key}", f"also set as tls_{key}")
            section[f"tls_{key}"] = tls[key]
    out = {}
    if "persist_path" in section:
        out["persist_path"] = _path(section["persist_path"], f"{field_name}.persist_path")
    if "node_id_template" in section:
        out["node_id_template"] = _template(section["node_id_template"],
                                            f"{field_name}.node_id_template")
    if "plaintext" in section:
        out["plaintext"] = bool_value(section["plaintext"], f"{field_name}.plaintext")
    for key in ("tls_cert", "tls_key", "tls_ca", "token_path"):
        if key in section and section[key] is not None:
            out[key] = _path(section[key], f"{field_name}.{key}")
    if bool(out.get("tls_cert")) != bool(out.get("tls_key")):
        raise FieldError(field_name, "tls_cert and tls_key go together")
    if out.get("plaintext") and (out.get("tls_cert") or out.get("tls_ca")):
        raise FieldError(f"{field_name}.plaintext", "plaintext with TLS files set")
    return XdsSettings(**out)


def _template(value, field_name):
    if not isinstance(value, str) or not value:
        raise FieldError(field_name, "expected a string")
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
    except ValueError as exc:
        raise FieldError(field_name, f"bad template: {exc}") from None
    unknown = sorted(names - set(NODE_ID_FIELDS))
    if unknown:
        raise FieldError(field_name, f"unknown placeholder {{{unknown[0]}}} "
                                     f"(known: {', '.join(NODE_ID_FIELDS)})")
    return value


def _mapping(value, field_name) -> dict:
    if not isinstance(value, dict):
        raise FieldError(field_name, f"expected a mapping, got {value!r}")
    return value
