"""Upstream hosts of one cluster and the mutable state policies keep on them.

A HostSet holds one Host per endpoint (address, port). EDS updates keep the
Host object, and with it the counters, health and ejection state, of every
endpoint that is still there. `version` changes whenever membership or the
availability of any host changes, so balancers can rebuild lazily: they
compare versions on each pick instead of being told.
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Tuple

from agent.config.model import Cluster, Endpoint


class Host:
    """One upstream endpoint and its runtime state.

    `active_requests` and `connections` are kept by the proxy's pools (the
    least-request balancer reads them); `health_ok` by the active health
    checker; `ejected_until`, `ejections` and `consecutive_errors` by the
    outlier detector. Setting `health_ok` or `ejected_until` bumps the
    owning set's version.
    """

    __slots__ = ("endpoint", "address", "port", "weight", "priority", "locality",
                 "active_requests", "connections", "ejections", "consecutive_errors",
                 "_health_ok", "_ejected_until", "_owner")

    def __init__(self, endpoint: Endpoint, owner: Optional["HostSet"] = None):
        self.address = endpoint.address
        self.port = endpoint.port
        self.active_requests = 0
        self.connections = 0
        self.ejections = 0
        self.consecutive_errors = 0
        self._health_ok = True
        self._ejected_until = 0.0
        self._owner = owner
        self._set_endpoint(endpoint)

    def _set_endpoint(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.weight = max(1, int(endpoint.weight))   # EDS weights are >= 1
        self.priority = endpoint.priority
        self.locality = endpoint.locality

    @property
    def key(self) -> Tuple[str, int]:
        return (self.address, self.port)

    @property
    def health_ok(self) -> bool:
        """False while the active health check says the host is down."""
        return self._health_ok

    @health_ok.setter
    def health_ok(self, value: bool) -> None:
        value = bool(value)
        if value != self._health_ok:
            self._health_ok = value
            self._changed()

    @property
    def ejected_until(self) -> float:
        """Clock time the outlier ejection ends; 0 = not ejected."""
        return self._ejected_until

    @ejected_until.setter
    def ejected_until(self, value: float) -> None:
        if value != self._ejected_until:
            self._ejected_until = value
            self._changed()

    def ejected(self, now: float) -> bool:
        return self._ejected_until > now

    def available(self, now: float) -> bool:
        """Healthy in EDS, passing active checks and not ejected."""
        return self.endpoint.healthy and self._health_ok and self._ejected_until <= now

    def _changed(self) -> None:
        if self._owner is not None:
            self._owner._version += 1

    def __repr__(self) -> str:
        return f"Host({self.address}:{self.port}, w={self.weight}, p={self.priority})"


class HostSet:
    """The hosts of one cluster, in EDS order."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self._version = 0
        self.hosts: List[Host] = []
        self._by_key = {}
        self.update(cluster.endpoints)

    @property
    def version(self) -> int:
        return self._version

    def update(self, endpoints: Iterable[Endpoint]) -> bool:
        """Replace the membership; hosts whose (address, port) stays keep their
        state. Returns True when anything changed. A duplicate (address, port)
        keeps its first entry, as EDS consumers must."""
        hosts, by_key, changed = [], {}, False
        for ep in endpoints:
            key = (ep.address, ep.port)
            if key in by_key:
                continue
            host = self._by_key.get(key)
            if host is None:
                host, changed = Host(ep, self), True
            elif host.endpoint != ep:
                host._set_endpoint(ep)
                changed = True
            hosts.append(host)
            by_key[key] = host
        if changed or len(by_key) != len(self._by_key) or hosts != self.hosts:
            for key, gone in self._by_key.items():
                if key not in by_key:
                    gone._owner = None     # stale references no longer bump us
            self.hosts, self._by_key = hosts, by_key
            self._version += 1
            return True
        return False

    def update_cluster(self, cluster: Cluster) -> bool:
        """A new cluster version: keep hosts, take its endpoints."""
        self.cluster = cluster
        return self.update(cluster.endpoints)

    def get(self, address: str, port: int) -> Optional[Host]:
        return self._by_key.get((address, port))

    def available(self, now: float) -> List[Host]:
        return [h for h in self.hosts if h.available(now)]

    def __len__(self) -> int:
        return len(self.hosts)

    def __iter__(self):
        return iter(self.hosts)

    def __contains__(self, host) -> bool:
        return self._by_key.get(getattr(host, "key", None)) is host
