"""Typed access to the pinned maps, through libbpf and the layouts of layout.h."""

import errno
import pathlib

from . import layout, libbpf
from .layout import ffi
from .settings import DEFAULT_PIN_DIR  # noqa: F401  (re-exported)

# name -> (key C type, value C type, per-CPU): the maps Python reads and writes
MAPS = {
    "services": ("struct nm_service_key", "struct nm_service", False),
    "services6": ("struct nm_service6_key", "struct nm_service", False),
    "proxy": ("__u32", "struct nm_proxy_config", False),
    "enrolled": ("__u64", "struct nm_pod", False),
    "orig_dst": ("__u64", "struct nm_orig_dst", False),
    "accept_records": ("struct nm_addr_key", "struct nm_orig_dst", False),
    "accept_records6": ("struct nm_addr6_key", "struct nm_orig_dst", False),
    "sock_pairs": ("struct nm_sock_key", "__u64", False),   # value: socket cookie
    "sock_pairs6": ("struct nm_sock6_key", "__u64", False),
    "counters": ("__u32", "__u64", True),
}

# enum bpf_map_type (uapi/linux/bpf.h)
HASH, ARRAY, PERCPU_ARRAY, LRU_HASH, SOCKHASH, RINGBUF = 1, 2, 6, 9, 18, 27

# name -> (map type, capacity: a bpf/lib/config.h setting or a number) of
# every pinned map, as bpf/lib/maps.h defines it: what a pinned map must
# match to be adopted (agent/bpf/upgrade.py)
KINDS = {
    "services": (HASH, "NM_MAX_SERVICES"),
    "services6": (HASH, "NM_MAX_SERVICES"),
    "proxy": (ARRAY, 1),
    "enrolled": (HASH, "NM_MAX_PODS"),
    "orig_dst": (HASH, "NM_MAX_CONNS"),
    "accept_records": (LRU_HASH, "NM_MAX_CONNS"),
    "accept_records6": (LRU_HASH, "NM_MAX_CONNS"),
    "sock_pairs": (SOCKHASH, "NM_MAX_CONNS"),
    "sock_pairs6": (SOCKHASH, "NM_MAX_CONNS"),
    "counters": (PERCPU_ARRAY, "NM_R_MAX"),
    "trace_events": (RINGBUF, "NM_TRACE_BYTES"),
}
SOCKHASHES = ("sock_pairs", "sock_pairs6")   # sk_msg is attached to each


class MapFullError(OSError):
    pass


class PinnedMap:
    """One pinned map. Keys and values are cffi structs (or ints).

    Values grow only at their end (bpf/lib/layout.h), and a pinned map may
    have been created by another version: its values are read and written
    at the map's own size. Fields this version does not know are left as
    they are on update; fields the map does not have read as zero."""

    def __init__(self, pin_dir, name):
        self.name = name
        self.path = pathlib.Path(pin_dir) / name
        self.key_type, self.value_type, self.percpu = MAPS[name]
        self.fd = libbpf.obj_get(self.path)
        self._ncpus = libbpf.num_cpus() if self.percpu else 1
        self._vsize = ffi.sizeof(self.value_type)
        self._pinned_vsize = libbpf.info(self.fd, "map").value_size
        self._slot = (max(self._vsize, self._pinned_vsize) + 7) & ~7

    def close(self):
        if self.fd >= 0:
            import os
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _key(self, key):
        if isinstance(key, int):
            return ffi.new(self.key_type + " *", key)
        return key

    def get(self, key):
        """The value for key (a new cffi object; per-CPU: a list), or None."""
        k = self._key(key)
        if self.percpu:
            raw = ffi.new("char[]", self._slot * self._ncpus)
            if libbpf.lib().bpf_map_lookup_elem(self.fd, k, raw) < 0:
                return None
            return [ffi.cast(self.value_type + " *", raw + i * self._slot)[0]
                    for i in range(self._ncpus)]
        if self._pinned_vsize <= self._vsize:
            value = ffi.new(self.value_type + " *")
            if libbpf.lib().bpf_map_lookup_elem(self.fd, k, value) < 0:
                return None
            return value
        raw = ffi.new("char[]", self._pinned_vsize)       # a newer version's map
        if libbpf.lib().bpf_map_lookup_elem(self.fd, k, raw) < 0:
            return None
        value = ffi.new(self.value_type + " *")
        ffi.memmove(value, raw, self._vsize)
        return value

    def set(self, key, value, flags=libbpf.BPF_ANY):
        k = self._key(key)
        v = ffi.new(self.value_type + " *", value) if isinstance(value, int) else value
        if self._pinned_vsize > self._vsize and not self.percpu:
            # a newer version's map: keep the fields we do not know
            raw = ffi.new("char[]", self._pinned_vsize)
            libbpf.lib().bpf_map_lookup_elem(self.fd, k, raw)
            ffi.memmove(raw, v, self._vsize)
            v = raw
        rc = libbpf.lib().bpf_map_update_elem(self.fd, k, v, flags)
        if rc == -errno.E2BIG or (rc < 0 and ffi.errno == errno.E2BIG):
            raise MapFullError(errno.E2BIG, f"map {self.name} is full")
        libbpf.check(rc, f"update {self.name}")

    def set_many(self, keys, values, n: int) -> bool:
        """n entries from two cffi arrays, one syscall. False (nothing written)
        when the pinned map's values are another version's size: the caller
        writes entry by entry with set(), which keeps the unknown fields."""
        if self._pinned_vsize != self._vsize or self.percpu:
            return False
        libbpf.map_update_batch(self.fd, keys, values, n, f"update {self.name}")
        return True

    def delete(self, key) -> bool:
        return libbpf.lib().bpf_map_delete_elem(self.fd, self._key(key)) == 0

    def keys(self):
        cur = None
        nxt = ffi.new(self.key_type + " *")
        while libbpf.lib().bpf_map_get_next_key(self.fd, cur if cur is not None else ffi.NULL,
                                                 nxt) == 0:
            key = ffi.new(self.key_type + " *", nxt[0])
            yield key
            cur = key

    def items(self):
        for key in self.keys():
            value = self.get(key)
            if value is not None:   # deleted between the two calls
                yield key, value

    def __len__(self):
        return sum(1 for _ in self.keys())


def open_maps(pin_dir=DEFAULT_PIN_DIR, names=None) -> dict:
    """Open the pinned maps that exist; missing ones are left out."""
    out = {}
    for name in names or MAPS:
        try:
            out[name] = PinnedMap(pin_dir, name)
        except OSError:
            continue
    return out


def counters(pin_dir=DEFAULT_PIN_DIR) -> dict:
    """{reason name: total over CPUs} from the counters map."""
    with PinnedMap(pin_dir, "counters") as m:
        out = {}
        for code, name in layout.reasons().items():
            per_cpu = m.get(code) or []
            out[name] = sum(int(v) for v in per_cpu)
        return out
