"""Adopting maps pinned by another version of the datapath.

A pinned map is adopted as it is when its type, key size, value size and
capacity are what the sources (and the -D flags) define now. Otherwise (an
upgrade that grew a value, changed a map's type, a -D that changed a
capacity) it is re-created: the old map is kept open and its pin removed,
the new sources create the new map, and the old entries are copied into it.
Values grow or shrink at their end (the rule of bpf/lib/layout.h), so an
entry is copied as a prefix, new fields zero; a key must keep its size or
the map starts empty. Sockhashes and the ring buffer hold nothing that can
be copied: they start empty (paired connections carry on over TCP).

Entries written by the old programs between the copy and the swap of the
programs (milliseconds) are not carried over: such a connection is served,
but getpeername shows it the proxy.
"""

import ast
import dataclasses
import os
import re

from . import layout, libbpf
from .layout import ffi
from .maps import KINDS, MAPS, PERCPU_ARRAY, RINGBUF, SOCKHASH
from .sources import source_dir

_DEFINE = re.compile(r"^#define\s+(NM_\w+)\s+(.+?)\s*(?:/\*.*)?$", re.M)
_COPYABLE_TYPES = {1, 2, PERCPU_ARRAY, 9}     # hash, array, per-CPU array, LRU hash


@dataclasses.dataclass(frozen=True)
class MapSpec:
    type: int
    key_size: int
    value_size: int
    max_entries: int

    def describe(self) -> str:
        return (f"type {self.type}, key {self.key_size} B, value {self.value_size} B, "
                f"{self.max_entries} entries")


def _number(text: str) -> int:
    """An integer constant expression of config.h or a -D flag: 65536, (256 * 1024)."""
    def ev(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        raise ValueError(text)
    return ev(ast.parse(str(text).strip(), mode="eval").body)


_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
        ast.Mult: lambda a, b: a * b, ast.LShift: lambda a, b: a << b}


def settings_values(defines=None) -> dict:
    """The numeric settings of bpf/lib/config.h, with -D overrides applied."""
    out = {}
    for name, value in _DEFINE.findall((source_dir() / "lib" / "config.h").read_text()):
        try:
            out[name] = _number(value)
        except (ValueError, SyntaxError):
            continue                       # NM_PIN_DIR and other strings
    for name, value in (defines or {}).items():
        try:
            out[name] = _number(value)
        except (ValueError, SyntaxError):
            continue
    out["NM_R_MAX"] = layout.C.NM_R_MAX
    return out


def expected_specs(defines=None) -> dict:
    """{map name: MapSpec} as the current sources create them."""
    values = settings_values(defines)
    out = {}
    for name, (mtype, capacity) in KINDS.items():
        entries = values[capacity] if isinstance(capacity, str) else capacity
        if mtype == RINGBUF:
            out[name] = MapSpec(mtype, 0, 0, entries)
            continue
        key, value, _ = MAPS[name]
        vsize = 4 if mtype == SOCKHASH else ffi.sizeof(value)   # bcc's `int leaf`
        out[name] = MapSpec(mtype, ffi.sizeof(key), vsize, entries)
    return out


def pinned_spec(path):
    """The MapSpec of a pinned map, or None when nothing is pinned there."""
    if not os.path.exists(path):
        return None
    fd = libbpf.obj_get(path)
    try:
        i = libbpf.info(fd, "map")
        return MapSpec(i.type, i.key_size, i.value_size, i.max_entries)
    finally:
        os.close(fd)


def stale_maps(pin_dir, defines=None) -> dict:
    """{name: (pinned, expected)} of pinned maps the current sources cannot adopt."""
    out = {}
    for name, want in expected_specs(defines).items():
        have = pinned_spec(os.path.join(pin_dir, name))
        if have is not None and have != want:
            out[name] = (have, want)
    return out


class MapUpgrade:
    """Set stale pins aside before a load, copy their entries after it, or
    put them back if the load fails."""

    def __init__(self, pin_dir, stale: dict):
        self.pin_dir, self.stale = str(pin_dir), stale
        self.old_fds = {}

    def _path(self, name):
        return os.path.join(self.pin_dir, name)

    def set_aside(self):
        for name in self.stale:
            self.old_fds[name] = libbpf.obj_get(self._path(name))
            os.unlink(self._path(name))

    def rollback(self):
        for name, fd in self.old_fds.items():
            if os.path.exists(self._path(name)):
                os.unlink(self._path(name))
            libbpf.obj_pin(fd, self._path(name))

    def close(self):
        for fd in self.old_fds.values():
            os.close(fd)
        self.old_fds = {}

    def copy(self) -> dict:
        """Copy every stale map's entries into its new pin: {name: what happened}."""
        out = {}
        for name, fd in self.old_fds.items():
            old, new = self.stale[name]
            if old.type not in _COPYABLE_TYPES or new.type not in _COPYABLE_TYPES:
                out[name] = "re-created empty (nothing to copy)"
            elif old.key_size != new.key_size:
                out[name] = "re-created empty (key changed)"
            elif (old.type == PERCPU_ARRAY) != (new.type == PERCPU_ARRAY):
                out[name] = "re-created empty (per-CPU changed)"
            else:
                new_fd = libbpf.obj_get(self._path(name))
                try:
                    copied, dropped = _copy_entries(fd, new_fd, old, new)
                finally:
                    os.close(new_fd)
                out[name] = f"copied {copied} entries" + (f", {dropped} did not fit"
                                                          if dropped else "")
        return out


def _slots(spec, ncpus):
    """(bytes of one CPU's value, number of values) of a lookup."""
    if spec.type == PERCPU_ARRAY:
        return (spec.value_size + 7) & ~7, ncpus
    return spec.value_size, 1


def _copy_entries(old_fd, new_fd, old, new):
    lib = libbpf.lib()
    ncpus = libbpf.num_cpus() if old.type == PERCPU_ARRAY else 1
    old_slot, n = _slots(old, ncpus)
    new_slot, _ = _slots(new, ncpus)
    keep = min(old.value_size, new.value_size)
    key, nxt = ffi.new("char[]", old.key_size), ffi.new("char[]", old.key_size)
    old_val, new_val = ffi.new("char[]", old_slot * n), ffi.new("char[]", new_slot * n)
    copied = dropped = 0
    cur = ffi.NULL
    while lib.bpf_map_get_next_key(old_fd, cur, nxt) == 0:
        ffi.memmove(key, nxt, old.key_size)
        cur = key
        if lib.bpf_map_lookup_elem(old_fd, key, old_val) < 0:
            continue                      # deleted meanwhile
        ffi.memmove(new_val, b"\0" * (new_slot * n), new_slot * n)
        for cpu in range(n):
            ffi.memmove(new_val + cpu * new_slot, old_val + cpu * old_slot, keep)
        if lib.bpf_map_update_elem(new_fd, key, new_val, libbpf.BPF_ANY) == 0:
            copied += 1
        else:
            dropped += 1
    return copied, dropped
