"""Reading a bootstrap file: YAML or JSON in Envoy's Bootstrap shape, plus `nodemesh:`.

    b = load_bootstrap("/etc/nodemesh/bootstrap.yaml")
    b.node, b.static_resources[resources.CLUSTER], b.ads, b.settings

The top-level `nodemesh:` section (node settings Envoy has no place for) is
taken out first; the rest must parse as envoy.config.bootstrap.v3.Bootstrap
with no unknown fields, as Envoy requires. The static resources are not
validated here: static.snapshot_from_bootstrap() runs them through the same
ConfigStore as xDS updates.
"""

from __future__ import annotations

import copy
import json
import pathlib
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

import yaml
from google.protobuf import json_format
from google.protobuf.message import Message

from . import jsonpb, resources
from .errors import ConfigError, ConfigErrors, FieldError
from .settings import NodeSettings, parse_settings

_TLS = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
_API_TYPES = {0: None, 1: "REST", 2: "GRPC", 3: "DELTA_GRPC", 5: "AGGREGATED_GRPC",
              6: "AGGREGATED_DELTA_GRPC"}


@dataclass(frozen=True)
class AdsSettings:
    """Where the aggregated xDS stream goes (dynamic_resources.ads_config)."""

    api_type: str                       # "GRPC" (state of the world) or "DELTA_GRPC"
    cluster: str                        # envoy_grpc cluster_name ("" for google_grpc)
    address: str                        # "host:port" or "unix:/path"
    tls_cert: Optional[str] = None      # file paths from the cluster's UpstreamTlsContext
    tls_key: Optional[str] = None
    tls_ca: Optional[str] = None
    sni: Optional[str] = None
    initial_metadata: Tuple[Tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ApiSource:
    """A non-aggregated RDS source (Aeraki serves MetaProtocol RDS at its own address)."""

    api_type: str
    cluster: str
    address: str
    route_config_names: Tuple[str, ...]
    tls_cert: Optional[str] = None
    tls_key: Optional[str] = None
    tls_ca: Optional[str] = None
    sni: Optional[str] = None


@dataclass
class Bootstrap:
    path: str
    message: Message                               # the parsed envoy Bootstrap
    settings: NodeSettings
    static_resources: Dict[str, List[Message]]     # type URL -> messages, clusters' CLAs incl.
    ads: Optional[AdsSettings] = None
    lds_over_ads: bool = False
    cds_over_ads: bool = False
    rds_sources: Mapping[str, ApiSource] = field(default_factory=dict)   # by cluster name
    version: str = "static"                        # content hash: static resources' version
    control_plane_clusters: Tuple[str, ...] = ()   # xDS server clusters: not in static_resources

    @property
    def node(self):
        return self.message.node

    def cluster_target(self, name: str) -> dict:
        """Address and TLS files of a static cluster, for a gRPC client (e.g. the
        Aeraki cluster a dynamic MetaProtocol listener's RDS config names)."""
        cluster = next((c for c in self.message.static_resources.clusters if c.name == name),
                       None)
        if cluster is None:
            raise KeyError(name)
        return dict(cluster=name, address=_cluster_address(cluster), **_cluster_tls(cluster))


def load_bootstrap(path) -> Bootstrap:
    """Parse a bootstrap file; ConfigErrors lists every problem found."""
    path = str(path)
    try:
        text = pathlib.Path(path).read_text()
    except OSError as exc:
        raise ConfigErrors([ConfigError(resources.BOOTSTRAP, path, "", str(exc))]) from None
    return parse_bootstrap(text, path)


def parse_bootstrap(text: str, path: str = "<bootstrap>") -> Bootstrap:
    data = _load_text(text, path)
    section = data.pop("nodemesh", None)
    settings, problems = parse_settings(section)
    errors = [ConfigError(resources.BOOTSTRAP, path, p.field, p.reason) for p in problems]
    message = resources.MESSAGE_CLASSES[resources.BOOTSTRAP]()
    try:
        jsonpb.parse_dict(data, message)
    except json_format.ParseError as exc:
        errors.append(ConfigError(resources.BOOTSTRAP, path, "", str(exc)))
    if errors:
        raise ConfigErrors(errors)
    try:
        ads, lds, cds = _dynamic(message)
        sources = _rds_sources(message)
    except FieldError as exc:
        raise ConfigErrors([ConfigError(resources.BOOTSTRAP, path, exc.field, exc.reason)]) \
            from None
    import hashlib

    version = "static-" + hashlib.sha256(text.encode()).hexdigest()[:12]
    servers = {s.cluster for s in sources.values() if s.cluster}
    if ads is not None and ads.cluster:
        servers.add(ads.cluster)
    return Bootstrap(path=path, message=message, settings=settings,
                     static_resources=_static(message, servers), ads=ads, lds_over_ads=lds,
                     cds_over_ads=cds, rds_sources=sources, version=version,
                     control_plane_clusters=tuple(sorted(servers)))


def _load_text(text: str, path: str) -> dict:
    try:
        data = json.loads(text)
    except ValueError:
        try:
            data = jsonpb.load_yaml(text)
        except yaml.YAMLError as exc:
            raise ConfigErrors([ConfigError(resources.BOOTSTRAP, path, "",
                                            f"not valid YAML or JSON: {exc}")]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigErrors([ConfigError(resources.BOOTSTRAP, path, "", "expected a mapping")])
    return data


def _static(message, servers) -> Dict[str, List[Message]]:
    """Listeners, clusters, and each STATIC or EDS cluster's load_assignment as
    an endpoints resource, named for the cluster's EDS service when it has one
    (so an EDS cluster in a static file takes its endpoints from it; DNS
    clusters hold names and resolve them themselves). The clusters that reach
    the control plane are left out: the xDS client uses them (Bootstrap.ads,
    rds_sources), the proxy never routes to them."""
    sr = message.static_resources
    endpoints, clusters = [], []
    for cluster in sr.clusters:
        if cluster.name in servers:
            continue
        clusters.append(cluster)
        if cluster.HasField("load_assignment") and cluster.type in (0, 3):   # STATIC, EDS
            cla = copy.deepcopy(cluster.load_assignment)
            if cluster.type == 3:                      # EDS
                cla.cluster_name = cluster.eds_cluster_config.service_name or cluster.name
            elif not cla.cluster_name:
                cla.cluster_name = cluster.name
            endpoints.append(cla)
    return {resources.LISTENER: list(sr.listeners), resources.CLUSTER: clusters,
            resources.ENDPOINT: endpoints}


def _dynamic(message):
    if not message.HasField("dynamic_resources"):
        return None, False, False
    dr = message.dynamic_resources
    lds = _over_ads(dr, "lds_config")
    cds = _over_ads(dr, "cds_config")
    ads = None
    if dr.HasField("ads_config"):
        ads = _ads(message, dr.ads_config)
    elif lds or cds:
        raise FieldError("dynamic_resources.ads_config", "lds/cds over ADS need ads_config")
    return ads, lds, cds


def _over_ads(dr, name: str) -> bool:
    if not dr.HasField(name):
        return False
    source = getattr(dr, name)
    kind = source.WhichOneof("config_source_specifier")
    if kind != "ads":
        raise FieldError(f"dynamic_resources.{name}", f"{kind or 'empty'} config source: only "
                                                      "ads is supported for LDS/CDS")
    return True


def _ads(message, api) -> AdsSettings:
    field_name = "dynamic_resources.ads_config"
    api_type = _API_TYPES.get(api.api_type)
    if api_type not in ("GRPC", "DELTA_GRPC", "AGGREGATED_GRPC", "AGGREGATED_DELTA_GRPC"):
        raise FieldError(f"{field_name}.api_type", f"{api_type or 'unset'}: GRPC or DELTA_GRPC "
                                                   "is required")
    target = _grpc_target(message, api, field_name)
    return AdsSettings(api_type="DELTA_GRPC" if "DELTA" in api_type else "GRPC", **target)


def _grpc_target(message, api, field_name: str) -> dict:
    if not len(api.grpc_services):
        raise FieldError(f"{field_name}.grpc_services", "one gRPC service is required")
    service = api.grpc_services[0]
    metadata = tuple((h.key, h.value) for h in service.initial_metadata)
    if service.HasField("envoy_grpc"):
        name = service.envoy_grpc.cluster_name
        cluster = next((c for c in message.static_resources.clusters if c.name == name), None)
        if cluster is None:
            raise FieldError(f"{field_name}.grpc_services[0].envoy_grpc.cluster_name",
                             f"no static cluster named {name!r}")
        return dict(cluster=name, address=_cluster_address(cluster), initial_metadata=metadata,
                    **_cluster_tls(cluster))
    if service.HasField("google_grpc"):
        gg = service.google_grpc
        tls = {}
        if gg.HasField("channel_credentials") and gg.channel_credentials.HasField(
                "ssl_credentials"):
            ssl = gg.channel_credentials.ssl_credentials
            tls = {"tls_ca": ssl.root_certs.filename or None,
                   "tls_cert": ssl.cert_chain.filename or None,
                   "tls_key": ssl.private_key.filename or None}
        return dict(cluster="", address=gg.target_uri, initial_metadata=metadata, **tls)
    raise FieldError(f"{field_name}.grpc_services[0]", "envoy_grpc or google_grpc is required")


def _cluster_address(cluster) -> str:
    for group in cluster.load_assignment.endpoints:
        for lb in group.lb_endpoints:
            address = lb.endpoint.address
            if address.HasField("pipe"):
                return "unix:" + address.pipe.path
            sock = address.socket_address
            host = f"[{sock.address}]" if ":" in sock.address else sock.address
            return f"{host}:{sock.port_value}"
    raise FieldError(f"static_resources.clusters[{cluster.name}].load_assignment",
                     "the xDS cluster has no endpoint")


def _cluster_tls(cluster) -> dict:
    if not cluster.HasField("transport_socket"):
        return {}
    ctx = jsonpb.unpack_any(cluster.transport_socket.typed_config)
    if ctx is None or ctx.DESCRIPTOR.full_name != _TLS:
        return {}
    common = ctx.common_tls_context
    cert = key = None
    if len(common.tls_certificates):
        cert = common.tls_certificates[0].certificate_chain.filename or None
        key = common.tls_certificates[0].private_key.filename or None
    ca = common.validation_context.trusted_ca.filename or None
    return {"tls_cert": cert, "tls_key": key, "tls_ca": ca, "sni": ctx.sni or None}


def _rds_sources(message) -> Dict[str, ApiSource]:
    """MetaProtocol listeners whose RDS names a gRPC api_config_source (Aeraki)."""
    found: Dict[str, dict] = {}
    for listener in message.static_resources.listeners:
        for chain in listener.filter_chains:
            for f in chain.filters:
                mp = jsonpb.unpack_any(f.typed_config) if f.HasField("typed_config") else None
                if mp is None or mp.DESCRIPTOR.full_name != \
                        "aeraki.meta_protocol_proxy.v1alpha.MetaProtocolProxy" or \
                        mp.WhichOneof("route_specifier") != "rds":
                    continue
                source = mp.rds.config_source
                if source.WhichOneof("config_source_specifier") != "api_config_source":
                    continue
                api = source.api_config_source
                target = _grpc_target(message, api, f"listener {listener.name} rds")
                entry = found.setdefault(target["cluster"] or target["address"],
                                         dict(target, names=[],
                                              api_type=_API_TYPES.get(api.api_type) or "GRPC"))
                entry["names"].append(mp.rds.route_config_name)
    return {key: ApiSource(api_type=e["api_type"], cluster=e["cluster"], address=e["address"],
                           route_config_names=tuple(dict.fromkeys(e["names"])),
                           tls_cert=e.get("tls_cert"), tls_key=e.get("tls_key"),
                           tls_ca=e.get("tls_ca"), sni=e.get("sni"))
            for key, e in found.items()}
