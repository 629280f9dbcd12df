"""Decoder.feed() and Frame in pure Python over the cffi module.

The reference for the C reader (agent.codec._frames, native/frames*.c): the
tests decode the same input with both and require the same frames, metadata
and errors. It is also what runs when the extension was not built (a tree
that holds only the cffi module); ``agent.codec.ACCELERATED`` says which one
is in use.
"""

import struct
from itertools import count, repeat

from ._native import ffi, lib

# nm_frame and nm_meta as seen from Python: feed() unpacks what every
# consumer reads; the rest is read on first use from a copy of the arrays.
_HEAD = struct.Struct("=QIIQiIII16x")  # offset, length, kind, request_id, status, flags, ms, mc
_REST = struct.Struct("=16xQi7I")       # request_id, status, flags, meta_start .. variant
_META = struct.Struct("=6I")
_META_WORDS = 6
_LOWER_KEY = lib.NM_META_LOWERCASE_KEY
_LOWER_VALUE = lib.NM_META_LOWERCASE_VALUE
_INTEGER = lib.NM_META_INTEGER_BE | lib.NM_META_INTEGER_LE
assert _HEAD.size == _REST.size == ffi.sizeof("nm_frame"), "nm_frame layout changed"
assert _META.size == ffi.sizeof("nm_meta"), "nm_meta layout changed"

BATCH_FRAMES = 256


class _Batch:
    """What the frames of one nm_decode() call share: the input they point
    into, their stream offset, copies of the nm_frame / nm_meta arrays."""

    __slots__ = ("view", "base", "frames", "meta", "names", "_words")

    def __init__(self, view, base, frames, meta, names):
        self.view, self.base, self.frames, self.meta, self.names = view, base, frames, meta, names
        self._words = None

    def words(self) -> list:
        """The nm_meta array as a list of uint32 words (built on first use)."""
        if self._words is None:
            self._words = memoryview(self.meta).cast("I").tolist() if self.meta else []
        return self._words


class Frame:
    """One complete frame. ``metadata`` is decoded from spans on first use."""

    __slots__ = ("kind", "length", "request_id", "status", "_ms", "_mc", "_pos", "_batch",
                 "_index", "_metadata")

    def __init__(self, head, batch, index, kinds):
        (self._pos, self.length, kind, self.request_id, self.status, _flags,
         self._ms, self._mc) = head
        self.kind = kinds[kind] if kind < len(kinds) else "unknown"
        self._batch, self._index, self._metadata = batch, index, None

    def _field(self, i):
        return _REST.unpack_from(self._batch.frames, self._index * _REST.size)[i]

    offset = property(lambda self: self._batch.base + self._pos)
    flags = property(lambda self: self._field(2))
    body_offset = property(lambda self: self._field(5))
    id_offset = property(lambda self: self._field(6))
    id_length = property(lambda self: self._field(7))
    variant = property(lambda self: self._field(8))

    @property
    def _buf(self):
        return self._batch.view

    @property
    def _spans(self) -> list:
        return self._batch.words()[self._ms * _META_WORDS:(self._ms + self._mc) * _META_WORDS]

    @property
    def data(self) -> bytes:
        """The frame's bytes (a copy)."""
        return bytes(self._batch.view[self._pos:self._pos + self.length])

    @property
    def metadata(self) -> dict:
        if self._metadata is None:
            self._metadata = self._decode_metadata()
        return self._metadata

    def _decode_metadata(self) -> dict:
        out, buf, names = {}, self._batch.view, self._batch.names
        words = self._spans
        for i in range(0, len(words), _META_WORDS):
            key_id, flags, koff, klen, voff, vlen = words[i:i + _META_WORDS]
            if key_id:
                name = names[key_id] if key_id < len(names) else None
                key = name if name is not None else str(key_id)
            else:
                key = str(buf[koff:koff + klen], "latin-1")
                if flags & _LOWER_KEY:
                    key = key.lower()
            if flags & _INTEGER:
                order = "little" if flags & lib.NM_META_INTEGER_LE else "big"
                value = str(int.from_bytes(buf[voff:voff + vlen], order))
            else:
                value = str(buf[voff:voff + vlen], "utf-8", "replace")
            if flags & _LOWER_VALUE:
                value = value.lower()
            out[key] = out[key] + "," + value if key in out else value
        return out

    def __repr__(self):
        return (f"Frame({self.kind}, id={self.request_id}, status={self.status}, "
                f"offset={self.offset}, length={self.length})")


class Reader:
    """One direction of one connection: the unconsumed tail and feed()."""

    def __init__(self, d, names, kinds, max_pipelined, meta_cap, error_for, protocol):
        self._d, self._names, self._kinds = d, names, kinds
        self._pipelined, self._meta_cap = max_pipelined, meta_cap
        self._error_for, self._protocol = error_for, protocol
        self._frames = ffi.new("nm_frame[]", BATCH_FRAMES)
        self._meta = ffi.new("nm_meta[]", meta_cap)
        self._consumed = ffi.new("size_t *")
        self._tail = b""
        self._base = 0

    @property
    def buffered(self) -> int:
        return len(self._tail)

    def feed(self, data) -> list:
        buf = self._tail + bytes(data) if self._tail else bytes(data)
        frames, pos = [], 0
        view = ffi.from_buffer(buf)
        while True:
            room = min(BATCH_FRAMES, self._pipelined - len(frames))
            n = lib.nm_decode(self._d, view + pos, len(buf) - pos, self._frames,
                              room, self._meta, self._meta_cap, self._consumed)
            if n < 0:
                if frames:      # sticky: raised by the next feed()
                    break
                self._raise(n, pos)
            if n:
                self._collect(frames, buf, pos, n)
            pos += self._consumed[0]
            # n == 0: the rest is an incomplete frame. A short batch can also
            # mean the metadata array filled up: go on while there is progress.
            if n == 0 or pos >= len(buf) or self._d.error or len(frames) >= self._pipelined:
                break
        self._tail = buf[pos:]
        self._base += pos
        return frames

    def _collect(self, frames, buf, pos, n):
        raw = ffi.buffer(self._frames, n * _HEAD.size)[:]
        last = self._frames[n - 1]
        nmeta = last.meta_start + last.meta_count
        meta = ffi.buffer(self._meta, nmeta * _META.size)[:] if nmeta else b""
        view = memoryview(buf)[pos:] if pos else buf
        batch = _Batch(view, self._base + pos, raw, meta, self._names)
        frames.extend(map(Frame, _HEAD.iter_unpack(raw), repeat(batch), count(),
                          repeat(self._kinds)))

    def _raise(self, status, pos):
        why = self._d.error_reason or lib.nm_strerror(status)
        raise self._error_for(status, f"{self._protocol}: {ffi.string(why).decode()}",
                              self._base + pos + self._d.error_offset)
