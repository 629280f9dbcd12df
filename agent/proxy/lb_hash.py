"""Consistent-hash tables for the ring_hash and maglev balancers.

Both follow Envoy's construction so a key lands on the same host in every
nodemesh proxy (local and remote) for the same host set:

- the hash is XXH64 with seed 0 (Envoy's HashUtil::xxHash64) when the
  `xxhash` package is importable, which pyproject requires; a bare checkout
  without it falls back to 64 bits of BLAKE2b. `HASH_FUNCTION` names the one
  in use; all proxies of a mesh must agree, so it is shown in /clusters.
- ring: each host gets entries in proportion to its weight, at least
  `min_size` in total and at most `max_size`, keyed "address:port_i"; a key
  maps to the first entry at or after its hash, wrapping around. With the
  same endpoints a key lands on the same host as in an Envoy sidecar, which
  keeps cache affinity while a mesh moves from sidecars to nodemesh.
- maglev: Envoy's weighted Maglev permutation fill of a prime-size table,
  offset from hash(key, seed 0), skip from hash(key, seed 1).
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_left
from typing import Collection, Dict, List, Optional, Sequence

try:
    import xxhash as _xxhash
except ImportError:        # pragma: no cover - exercised only without the dependency
    _xxhash = None

U64 = 1 << 64


if _xxhash is not None:
    HASH_FUNCTION = "xxh64"
    _xxh64 = _xxhash.xxh64_intdigest

    def hash64(data: bytes, seed: int = 0) -> int:
        """Stable 64-bit hash of `data` (XXH64, Envoy's choice)."""
        return _xxh64(data, seed)
else:   # pragma: no cover
    HASH_FUNCTION = "blake2b-64"

    def hash64(data: bytes, seed: int = 0) -> int:
        """Stable 64-bit hash of `data` (BLAKE2b truncated to 64 bits)."""
        salt = seed.to_bytes(8, "little")
        return int.from_bytes(hashlib.blake2b(data, digest_size=8, salt=salt).digest(), "little")


def host_hash_key(host) -> bytes:
    """What a host is hashed by: its "address:port" (Envoy: address()->asString())."""
    return f"{host.address}:{host.port}".encode()


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    for d in range(3, math.isqrt(n) + 1, 2):
        if n % d == 0:
            return False
    return True


class RingTable:
    """Ketama-style ring over weighted hosts."""

    __slots__ = ("hashes", "owners", "size", "distinct")

    def __init__(self, hosts: Sequence, min_size: int = 1024, max_size: int = 8388608,
                 cache: Optional[Dict[bytes, List[int]]] = None,
                 sizing: Optional[Sequence] = None):
        """`sizing`: the hosts the entry counts are computed from (default
        `hosts`). Balancers pass the whole cluster, so the ring of a fully
        healthy cluster is Envoy's, and a host going unhealthy takes only its
        own entries out (Envoy re-sizes the healthy ring, which moves ~1/n of
        the other hosts' keys too)."""
        if not hosts:
            raise ValueError("ring_hash: no hosts to build a ring from")
        if min_size < 1 or max_size < min_size:
            raise ValueError(f"ring_hash: need 1 <= min ring size ({min_size}) <= "
                             f"max ring size ({max_size})")
        counts = ring_counts(sizing or hosts, min_size, max_size)
        if any(id(h) not in counts for h in hosts):
            counts = ring_counts(hosts, min_size, max_size)
        entries = []
        for host in hosts:
            for value in _host_hashes(host, counts[id(host)], cache):
                entries.append((value, host))
        entries.sort(key=lambda e: e[0])
        self.hashes = [e[0] for e in entries]
        self.owners = [e[1] for e in entries]
        self.size = len(entries)
        self.distinct = len(hosts)

    def lookup(self, h: int):
        i = bisect_left(self.hashes, h)
        return self.owners[i if i < self.size else 0]

    def lookup_other(self, h: int, exclude: Collection):
        """The next host clockwise from h that is not excluded, or None."""
        i = bisect_left(self.hashes, h)
        owners, size, seen = self.owners, self.size, set()
        for step in range(size):
            host = owners[(i + step) % size]
            if host not in exclude:
                return host
            seen.add(id(host))
            if len(seen) >= self.distinct:
                break
        return None


def ring_counts(hosts: Sequence, min_size: int, max_size: int) -> Dict[int, int]:
    """Envoy's ring sizing: id(host) -> entries. The lightest host gets
    ceil(min_size x its normalised weight) entries, the others in proportion
    (running sums carry the fractions), the whole capped at max_size."""
    total = sum(h.weight for h in hosts)
    min_norm = min(h.weight for h in hosts) / total
    scale = min(math.ceil(min_norm * min_size) / min_norm, max_size)
    counts, current, target = {}, 0, 0.0
    for host in hosts:
        target += scale * (host.weight / total)     # Envoy's order of operations
        count = max(0, math.ceil(target - current))
        counts[id(host)] = count
        current += count
    return counts


def _host_hashes(host, count: int, cache) -> List[int]:
    """The first `count` ring hashes of a host ("address:port_i"), cached."""
    key = host_hash_key(host)
    known = cache.get(key) if cache is not None else None
    if known is None:
        known = []
        if cache is not None:
            cache[key] = known
    for i in range(len(known), count):
        known.append(hash64(key + b"_" + str(i).encode()))
    return known[:count]


class MaglevTable:
    """Maglev lookup table (Eisenbud et al. 2016) with Envoy's weighting."""

    __slots__ = ("table", "size", "distinct")

    def __init__(self, hosts: Sequence, size: int = 65537):
        if not hosts:
            raise ValueError("maglev: no hosts to build a table from")
        if not is_prime(size):
            raise ValueError(f"maglev: table size {size} is not prime")
        if size < len(hosts):
            raise ValueError(f"maglev: table size {size} is smaller than {len(hosts)} hosts")
        self.size = size
        self.distinct = len(hosts)
        self.table = _fill(hosts, size)

    def lookup(self, h: int):
        return self.table[h % self.size]

    def lookup_other(self, h: int, exclude: Collection):
        """A host for h that is not excluded: rehash a few times, then probe."""
        for seed in range(1, 4):
            host = self.table[hash64(h.to_bytes(8, "little"), seed) % self.size]
            if host not in exclude:
                return host
        table, size, seen = self.table, self.size, set()
        start = h % size
        for step in range(size):
            host = table[(start + step) % size]
            if host not in exclude:
                return host
            seen.add(id(host))
            if len(seen) >= self.distinct:
                break
        return None


def _fill(hosts: Sequence, size: int) -> list:
    """Envoy's weighted permutation fill: a host of weight w takes a turn on
    every iteration where iteration * w >= its running target."""
    max_weight = max(h.weight for h in hosts)
    # per host: [next_slot, skip, weight, target]
    state = []
    for host in hosts:
        key = host_hash_key(host)
        state.append([hash64(key, 0) % size, hash64(key, 1) % (size - 1) + 1,
                      host.weight, 0, host])
    table: list = [None] * size
    filled, iteration = 0, 0
    while True:
        for entry in state:
            if iteration * entry[2] < entry[3]:
                continue
            entry[3] += max_weight
            slot, skip = entry[0], entry[1]
            while table[slot] is not None:
                slot += skip
                if slot >= size:
                    slot -= size
            table[slot] = entry[4]
            slot += skip
            entry[0] = slot - size if slot >= size else slot
            filled += 1
            if filled == size:
                return table
        iteration += 1


def random_hash(rng) -> int:
    """A uniformly random 64-bit point, used when a request has no hash key."""
    return rng.getrandbits(64)


__all__ = ["HASH_FUNCTION", "MaglevTable", "RingTable", "U64", "hash64", "host_hash_key",
           "is_prime", "random_hash"]
