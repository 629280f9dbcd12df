"""What a compiler needs besides the resource: limits, notes, DNS, remote ports."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Callable, List, Mapping, Optional, Sequence


@dataclass(frozen=True)
class Limits:
    """Bounds on what one resource may hold. A control plane bug (or an
    attacker with write access to it) must not make every proxy on the node
    allocate without bound; the defaults are far above what Istio or Aeraki
    emit for a large mesh (Istio's biggest RDS tables hold a few thousand
    routes)."""

    max_routes: int = 50_000            # routes in one route table, after vhost expansion
    max_matchers: int = 64              # metadata matchers on one route
    max_regex_length: int = 1024        # characters in one regex
    max_filter_chains: int = 1024       # per listener
    max_endpoints: int = 100_000        # per cluster / load assignment
    max_weighted_clusters: int = 256    # per route
    max_mirrors: int = 16               # request mirror policies per route
    max_mutations: int = 1000           # Aeraki's own bound on request/response mutations


def resolve_host(host: str, port: int) -> List[str]:
    """Addresses for a STRICT_DNS/LOGICAL_DNS host, IPv4 first (resolved once, at compile)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    v4 = [i[4][0] for i in infos if i[0] == socket.AF_INET]
    v6 = [i[4][0] for i in infos if i[0] == socket.AF_INET6]
    return list(dict.fromkeys(v4 + v6))


Resolver = Callable[[str, int], Sequence[str]]


@dataclass
class Context:
    """One compile_resource() call: where notes go and the knobs that apply."""

    type_url: str
    name: str
    version: str
    limits: Limits = Limits()
    resolver: Resolver = resolve_host
    remote_ports: Mapping[str, int] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    _scopes: List[str] = field(default_factory=list)

    def note(self, field_path: str, text: str) -> None:
        """Something skipped or approximated that is not worth a NACK; the
        path is relative to the enclosing scope()s."""
        path = join_path(*self._scopes, field_path)
        self.notes.append(f"{path}: {text}" if path else text)

    def scope(self, part: str) -> "_Scope":
        """Notes made inside are about fields under `part` (e.g. "filter_chains[0]")."""
        return _Scope(self._scopes, part)

    def remote_port_for(self, name: str, address: str, port: int) -> Optional[int]:
        return self.remote_ports.get(name) or self.remote_ports.get(f"{address}:{port}")


class _Scope:
    """A plain context manager: entered once per chain and route, so cheaper
    than a contextlib generator matters at 50,000 services."""

    __slots__ = ("stack", "part")

    def __init__(self, stack: List[str], part: str):
        self.stack, self.part = stack, part

    def __enter__(self):
        self.stack.append(self.part)

    def __exit__(self, *exc):
        self.stack.pop()
        return False


def join_path(*parts: str) -> str:
    """"a" + "b[0]" -> "a.b[0]"; "a" + "[0]" -> "a[0]"."""
    out = ""
    for part in parts:
        if not part:
            continue
        out = part if not out else out + part if part.startswith("[") else f"{out}.{part}"
    return out
