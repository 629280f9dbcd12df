"""The compiled configuration: one immutable snapshot the proxy, the agent and the CLI read.

Envoy v3 resources (from a static bootstrap or an xDS stream) are validated
and compiled into these frozen dataclasses by agent.config.compile; nothing
downstream ever sees a protobuf. Durations are float seconds, addresses are
dotted strings, ports ints. Every top-level object keeps the configuration
version it came from, so `explain` and /config_dump can name it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Mapping, Optional, Tuple

# --- matching -----------------------------------------------------------------

MATCH_KINDS = ("exact", "prefix", "suffix", "contains", "regex", "present")


@dataclass(frozen=True)
class StringMatch:
    """One matcher on one metadata value (Envoy's StringMatcher / HeaderMatcher)."""

    kind: str                      # one of MATCH_KINDS
    value: str = ""                # unused for "present"
    ignore_case: bool = False
    invert: bool = False
    regex: Optional[re.Pattern] = field(default=None, compare=False, repr=False)

    def matches(self, actual: Optional[str]) -> bool:
        return self._matches(actual) != self.invert

    def _matches(self, actual: Optional[str]) -> bool:
        if actual is None:
            return False
        if self.kind == "present":
            return True
        if self.kind == "regex":
            return self.regex.fullmatch(actual) is not None
        want, got = (self.value.lower(), actual.lower()) if self.ignore_case else (self.value, actual)
        if self.kind == "exact":
            return got == want
        if self.kind == "prefix":
            return got.startswith(want)
        if self.kind == "suffix":
            return got.endswith(want)
        return want in got        # contains


@dataclass(frozen=True)
class MetadataMatch:
    """A frame's metadata[key] must satisfy `match` (absent keys match only inverted)."""

    key: str
    match: StringMatch


# --- routes ---------------------------------------------------------------------


@dataclass(frozen=True)
class WeightedCluster:
    name: str
    weight: int


@dataclass(frozen=True)
class Mutation:
    """Set (or append to) one metadata key on a request or a response."""

    key: str
    value: str
    append: bool = False


@dataclass(frozen=True)
class RetryPolicy:
    num_retries: int = 0
    # Envoy retry_on names we honour: "connect-failure", "reset", "unavailable",
    # "timeout" (per_try_timeout), "5xx" (HTTP), "error" (protocol error reply).
    retry_on: Tuple[str, ...] = ("connect-failure",)
    per_try_timeout: Optional[float] = None
    idempotent_methods: Tuple[str, ...] = ()   # methods safe to resend after bytes went out
    budget_percent: float = 20.0               # retries in flight as % of active requests
    min_retry_concurrency: int = 3


@dataclass(frozen=True)
class FaultPolicy:
    delay: Optional[float] = None      # seconds
    delay_percent: float = 0.0
    abort_status: Optional[int] = None  # protocol status for the local error reply
    abort_percent: float = 0.0


@dataclass(frozen=True)
class RateLimitPolicy:
    """Token bucket (Envoy's local_ratelimit token_bucket)."""

    max_tokens: int
    tokens_per_fill: int
    fill_interval: float
    per_source_pod: bool = False        # one bucket per source cgroup instead of one shared


@dataclass(frozen=True)
class RateLimitRule:
    """A listener-wide bucket (Aeraki's local_ratelimit condition, HTTP
    local_ratelimit): the first rule whose `match` holds applies; empty
    `match` matches every request."""

    match: Tuple[MetadataMatch, ...]
    policy: RateLimitPolicy

    def matches(self, metadata: Mapping[str, str]) -> bool:
        return all(m.match.matches(metadata.get(m.key)) for m in self.match)


@dataclass(frozen=True)
class MirrorPolicy:
    cluster: str
    percent: float = 100.0


@dataclass(frozen=True)
class Route:
    """One route; `clusters` empty marks a stop: matching it means "no route"
    (an HTTP virtual host matched the authority but none of its routes did,
    and Envoy does not fall through to the next virtual host)."""

    name: str
    match: Tuple[MetadataMatch, ...]          # all must match; empty matches everything
    clusters: Tuple[WeightedCluster, ...]     # one entry = plain cluster action
    timeout: Optional[float] = None           # per request, None = cluster/listener default
    retry: Optional[RetryPolicy] = None
    fault: Optional[FaultPolicy] = None
    rate_limit: Optional[RateLimitPolicy] = None
    mirrors: Tuple[MirrorPolicy, ...] = ()
    request_mutations: Tuple[Mutation, ...] = ()
    response_mutations: Tuple[Mutation, ...] = ()
    hash_keys: Tuple[str, ...] = ()           # metadata keys for ring hash / Maglev
    any_of: Tuple[MetadataMatch, ...] = ()    # if set, one must match too (HTTP vhost domains)
    idle_timeout: Optional[float] = None

    def matches(self, metadata: Mapping[str, str]) -> bool:
        if not all(m.match.matches(metadata.get(m.key)) for m in self.match):
            return False
        return not self.any_of or any(m.match.matches(metadata.get(m.key)) for m in self.any_of)


@dataclass(frozen=True)
class RouteTable:
    """An RDS RouteConfiguration compiled to an ordered list: first match wins."""

    name: str
    version: str
    routes: Tuple[Route, ...]

    def select(self, metadata: Mapping[str, str]) -> Optional[Route]:
        for route in self.routes:
            if route.matches(metadata):
                return route if route.clusters else None
        return None


# --- clusters -------------------------------------------------------------------

LB_POLICIES = ("round_robin", "least_request", "random", "ring_hash", "maglev")


@dataclass(frozen=True)
class Endpoint:
    address: str
    port: int
    weight: int = 1
    healthy: bool = True            # EDS health_status HEALTHY/UNKNOWN -> True
    priority: int = 0
    locality: str = ""              # "region/zone/sub_zone"
    locality_weight: int = 0        # its LocalityLbEndpoints.load_balancing_weight (0 = unset)


@dataclass(frozen=True)
class CircuitBreakers:
    """Envoy's DEFAULT-priority thresholds, same defaults."""

    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024
    max_retries: int = 3
    retry_budget_percent: Optional[float] = None   # thresholds.retry_budget; None = max_retries only
    retry_budget_min_concurrency: int = 3


@dataclass(frozen=True)
class OutlierDetection:
    consecutive_errors: int = 5               # Envoy consecutive_5xx / gateway errors
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: float = 10.0


@dataclass(frozen=True)
class HealthCheck:
    """Active check with the protocol's own heartbeat (Dubbo heartbeat, Redis PING...)."""

    interval: float = 5.0
    timeout: float = 1.0
    unhealthy_threshold: int = 2
    healthy_threshold: int = 1
    http_path: str = "/"                      # HTTP/1.1: GET this path, 2xx/3xx is healthy
    http_host: str = ""                       # HTTP/1.1 Host header ("" = the cluster name)
    thrift_method: str = ""                   # Thrift: call this no-argument method ("" = connect only)


@dataclass(frozen=True)
class Cluster:
    name: str
    version: str
    lb_policy: str = "round_robin"            # one of LB_POLICIES
    connect_timeout: float = 5.0
    idle_timeout: float = 3600.0              # upstream connection idle timeout
    max_requests_per_connection: int = 0      # 0 = unlimited
    endpoints: Tuple[Endpoint, ...] = ()      # from the inline load_assignment or EDS
    eds_service_name: Optional[str] = None    # set for type EDS: endpoints come from EDS
    circuit_breakers: CircuitBreakers = CircuitBreakers()
    outlier: Optional[OutlierDetection] = None
    health_check: Optional[HealthCheck] = None
    ring_hash_min_size: int = 1024
    maglev_table_size: int = 65537
    endpoints_version: str = ""               # EDS version the endpoints came from
    panic_threshold: float = 50.0             # % healthy below which a priority balances over all
    overprovisioning_factor: float = 1.4      # EDS policy.overprovisioning_factor (140 = 1.4)
    least_request_choices: int = 2            # least_request_lb_config.choice_count
    ring_hash_max_size: int = 8388608         # ring_hash_lb_config.maximum_ring_size
    locality_weighted: bool = False           # common_lb_config.locality_weighted_lb_config set
    original_dst: bool = False                # ORIGINAL_DST: connect to the connection's original
                                              # destination (Istio's PassthroughCluster), no endpoints


@dataclass(frozen=True)
class EndpointSet:
    """An EDS ClusterLoadAssignment, merged into the cluster(s) naming it."""

    name: str                                 # cluster_name (= a cluster's eds_service_name)
    endpoints: Tuple[Endpoint, ...]
    version: str
    overprovisioning_factor: float = 1.4      # policy.overprovisioning_factor, to the cluster


# --- listeners ------------------------------------------------------------------

CODECS = ("dubbo", "thrift", "redis", "http1", "lengthfield")


@dataclass(frozen=True)
class FilterChain:
    """What to do with a connection: L7 through a codec and routes, or L4 to one cluster."""

    name: str
    codec: Optional[str] = None               # one of CODECS; None = TCP proxy (L4)
    codec_options: Mapping[str, object] = field(default_factory=dict)
    route_config_name: Optional[str] = None   # RDS name, resolved in Snapshot.route_tables
    routes: Optional[RouteTable] = None       # inline route_config
    tcp_cluster: Optional[str] = None         # L4: tcp_proxy's cluster
    stat_prefix: str = ""
    idle_timeout: float = 3600.0              # downstream connection idle timeout
    request_timeout: Optional[float] = None   # default per-request timeout
    destination_prefixes: Tuple[str, ...] = ()  # filter_chain_match.prefix_ranges (CIDR); () = any
    rate_limits: Tuple[RateLimitRule, ...] = ()  # listener-wide local rate limit, first match wins
    rds_cluster: Optional[str] = None         # static cluster serving route_config_name over a
                                              # gRPC api_config_source (Aeraki); None = ADS


@dataclass(frozen=True)
class Listener:
    """One mesh service as the proxy sees it.

    The local proxy accepts everything on one port and picks the listener by
    the connection's original destination (address, port) from the BPF
    record; the remote proxy listens on `remote_port` for this service.
    """

    name: str
    version: str
    address: str                              # the service VIP ("0.0.0.0" = any address)
    port: int
    filter_chains: Tuple[FilterChain, ...]
    remote_port: Optional[int] = None         # port on the remote proxy, also in BPF services map

    @property
    def protocol(self) -> str:
        """The BPF services map's protocol name for this listener."""
        return self.filter_chains[0].codec or "tcp" if self.filter_chains else "tcp"

    def chain_for(self, address: str) -> Optional[FilterChain]:
        """The chain for a connection to `address`: Envoy's rule, the longest
        destination prefix containing it, else the first chain without one."""
        index = self.__dict__.get("_chain_index")
        if index is None:
            index = _chain_index(self.filter_chains)
            object.__setattr__(self, "_chain_index", index)
        prefixed, fallback = index
        if prefixed:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                ip = None
            if ip is not None:
                for network, chain in prefixed:
                    if ip.version == network.version and ip in network:
                        return chain
        return fallback


def _chain_index(chains):
    prefixed = []
    for chain in chains:
        for prefix in chain.destination_prefixes:
            prefixed.append((ipaddress.ip_network(prefix, strict=False), chain))
    prefixed.sort(key=lambda item: -item[0].prefixlen)
    fallback = next((c for c in chains if not c.destination_prefixes), None)
    return tuple(prefixed), fallback


# --- the snapshot -----------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """Everything accepted so far; `versions` maps type name -> last accepted version."""

    listeners: Mapping[str, Listener] = field(default_factory=dict)
    route_tables: Mapping[str, RouteTable] = field(default_factory=dict)
    clusters: Mapping[str, Cluster] = field(default_factory=dict)
    versions: Mapping[str, str] = field(default_factory=dict)

    def listener_for(self, address: str, port: int) -> Optional[Listener]:
        """The listener for an original destination: exact VIP first, then 0.0.0.0:port."""
        by_addr = self._by_address()
        return by_addr.get((address, port)) or by_addr.get(("0.0.0.0", port))

    def listener_on_remote_port(self, port: int) -> Optional[Listener]:
        index = self.__dict__.get("_port_index")
        if index is None:
            index = {}
            for listener in self.listeners.values():
                if listener.remote_port:
                    index.setdefault(listener.remote_port, listener)
            object.__setattr__(self, "_port_index", index)
        return index.get(port)

    def route_table(self, chain: FilterChain) -> Optional[RouteTable]:
        if chain.routes is not None:
            return chain.routes
        return self.route_tables.get(chain.route_config_name or "")

    def _by_address(self):
        cached = self.__dict__.get("_addr_index")
        if cached is None:
            cached = {(l.address, l.port): l for l in self.listeners.values()}
            object.__setattr__(self, "_addr_index", cached)
        return cached


@dataclass(frozen=True)
class SnapshotDelta:
    """What one update changed between two snapshots, map by map: the names
    whose entry was added, replaced or removed. It describes the step from
    `since` only; a reader holding another snapshot rebuilds from the whole."""

    since: Snapshot
    listeners: frozenset = frozenset()
    route_tables: frozenset = frozenset()
    clusters: frozenset = frozenset()
