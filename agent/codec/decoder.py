"""Decoder and Frame: a thin, copy-avoiding wrapper over native/codec.h."""

import struct
from itertools import count, repeat

from ._native import ffi, lib
from .errors import CodecError, error_for
from .options import build_options

PROTOCOLS = {
    "dubbo": lib.NM_PROTO_DUBBO,
    "thrift": lib.NM_PROTO_THRIFT,
    "redis": lib.NM_PROTO_REDIS,
    "http1": lib.NM_PROTO_HTTP1,
    "lengthfield": lib.NM_PROTO_LENGTHFIELD,
}

KINDS = {
    lib.NM_KIND_REQUEST: "request",
    lib.NM_KIND_RESPONSE: "response",
    lib.NM_KIND_ONEWAY: "oneway",
    lib.NM_KIND_HEARTBEAT: "heartbeat",
    lib.NM_KIND_EVENT: "event",
    lib.NM_KIND_ERROR: "error",
}

_KIND_CODES = {v: k for k, v in KINDS.items()}

REPLY_REASONS = {
    "no_route": lib.NM_REPLY_NO_ROUTE,
    "no_upstream": lib.NM_REPLY_NO_UPSTREAM,
    "overloaded": lib.NM_REPLY_OVERLOADED,
    "rate_limited": lib.NM_REPLY_RATE_LIMITED,
    "timeout": lib.NM_REPLY_TIMEOUT,
    "bad_request": lib.NM_REPLY_BAD_REQUEST,
    "internal": lib.NM_REPLY_INTERNAL,
}

# Metadata key names match Aeraki's codecs and Envoy's header matchers.
_KEYS = {
    lib.NM_KEY_INTERFACE: "interface",
    lib.NM_KEY_METHOD: "method",
    lib.NM_KEY_VERSION: "version",
    lib.NM_KEY_DUBBO_VERSION: "dubbo_version",
    lib.NM_KEY_COMMAND: "command",
    lib.NM_KEY_KEY: "key",
    lib.NM_KEY_PATH: ":path",
    lib.NM_KEY_AUTHORITY: ":authority",
    lib.NM_KEY_STATUS: ":status",
    lib.NM_KEY_SERIALIZATION: "serialization",
    lib.NM_KEY_PARAM_TYPES: "param_types",
    lib.NM_KEY_MESSAGE: "message",
}
KEY_NAMES = {proto: dict(_KEYS) for proto in PROTOCOLS}
KEY_NAMES["http1"][lib.NM_KEY_METHOD] = ":method"

# nm_frame and nm_meta as seen from Python. feed() unpacks only what every
# consumer reads (offset, length, kind); the rest is read on first use from
# a copy of the batch's C arrays.
_FRAME = struct.Struct("=QIIQiIIIIIII")
_HEAD = struct.Struct("=QII16xII16x")   # offset, length, kind, meta_start, meta_count
_REST = struct.Struct("=16xQi7I")  # request_id, status, flags, meta_start .. variant
_META = struct.Struct("=6I")
_META_WORDS = 6
_LOWER_KEY = lib.NM_META_LOWERCASE_KEY
_INTEGER = lib.NM_META_INTEGER_BE | lib.NM_META_INTEGER_LE
_LOWER_VALUE = lib.NM_META_LOWERCASE_VALUE
assert _FRAME.size == _HEAD.size == _REST.size == ffi.sizeof("nm_frame"), "nm_frame layout changed"
assert _META.size == ffi.sizeof("nm_meta"), "nm_meta layout changed"

_FRAME_BATCH = 256


def limits() -> dict:
    """The default limits, as the C header defines them."""
    return {
        "max_frame_size": lib.NM_DEFAULT_MAX_FRAME_SIZE,
        "max_headers": lib.NM_DEFAULT_MAX_HEADERS,
        "max_depth": lib.NM_DEFAULT_MAX_DEPTH,
        "max_elements": lib.NM_DEFAULT_MAX_ELEMENTS,
        "max_pipelined": lib.NM_DEFAULT_MAX_PIPELINED,
        "max_header_bytes": lib.NM_DEFAULT_MAX_HEADER_BYTES,
    }


class _Batch:
    """What the frames of one nm_decode() call share: the input they point
    into, their stream offset, and copies of the nm_frame / nm_meta arrays."""

    __slots__ = ("view", "base", "frames", "meta", "keys", "_words")

    def __init__(self, view, base, frames, meta, keys):
        self.view, self.base, self.frames, self.meta, self.keys = view, base, frames, meta, keys
        self._words = None

    def words(self) -> list:
        """The nm_meta array as a list of uint32 words (built on first use)."""
        if self._words is None:
            self._words = memoryview(self.meta).cast("I").tolist() if self.meta else []
        return self._words


class Frame:
    """One complete frame. ``metadata`` is decoded from spans on first use."""

    __slots__ = ("kind", "offset", "length", "_head", "_batch", "_index", "_rest", "_metadata")

    def __init__(self, head, batch, index):
        pos, self.length, kind, _ms, _mc = self._head = head
        self.kind = KINDS.get(kind, "unknown")
        self.offset = batch.base + pos
        self._batch = batch
        self._index = index
        self._rest = self._metadata = None

    def _fields(self):
        if self._rest is None:
            self._rest = _REST.unpack_from(self._batch.frames, self._index * _REST.size)
        return self._rest

    request_id = property(lambda self: self._fields()[0])
    status = property(lambda self: self._fields()[1])
    flags = property(lambda self: self._fields()[2])
    body_offset = property(lambda self: self._fields()[5])
    id_offset = property(lambda self: self._fields()[6])
    id_length = property(lambda self: self._fields()[7])
    variant = property(lambda self: self._fields()[8])

    @property
    def _buf(self):
        return self._batch.view

    @property
    def _pos(self):
        return self.offset - self._batch.base

    @property
    def _spans(self) -> list:
        _, _, _, ms, mc = self._head
        return self._batch.words()[ms * _META_WORDS:(ms + mc) * _META_WORDS]

    @property
    def data(self) -> bytes:
        """The frame's bytes."""
        pos = self._pos
        return bytes(self._batch.view[pos:pos + self.length])

    @property
    def metadata(self) -> dict:
        if self._metadata is None:
            self._metadata = self._decode_metadata()
        return self._metadata

    def _decode_metadata(self) -> dict:
        _, _, _, ms, mc = self._head
        if not mc:
            return {}
        batch, out = self._batch, {}
        buf, keys, words = batch.view, batch.keys, batch.words()
        for i in range(ms * _META_WORDS, (ms + mc) * _META_WORDS, _META_WORDS):
            key_id, flags, koff, klen, voff, vlen = words[i:i + _META_WORDS]
            if key_id:
                key = keys.get(key_id, str(key_id))
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
            if key in out:   # repeated headers join as Envoy does
                out[key] = out[key] + "," + value
            else:
                out[key] = value
        return out

    def __repr__(self):
        return (f"Frame({self.kind}, id={self.request_id}, status={self.status}, "
                f"offset={self.offset}, length={self.length})")


class Decoder:
    """Resumable decoder for one direction of one connection."""

    def __init__(self, protocol: str, **options):
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
        self.protocol = protocol
        self._opt = build_options(protocol, options)
        self._d = ffi.new("nm_decoder *")
        rc = lib.nm_decoder_init(self._d, PROTOCOLS[protocol], self._opt)
        if rc != 0:
            why = self._d.error_reason or lib.nm_strerror(rc)
            raise ValueError(f"{protocol}: invalid options: {ffi.string(why).decode()}")
        meta_cap = self._d.opt.limits.max_headers + 64
        self._frames = ffi.new("nm_frame[]", _FRAME_BATCH)
        self._meta = ffi.new("nm_meta[]", meta_cap)
        self._meta_words = ffi.cast("uint32_t *", self._meta)
        self._meta_cap = meta_cap
        self._consumed = ffi.new("size_t *")
        self._pipelined = self._d.opt.limits.max_pipelined
        self._keys = KEY_NAMES[protocol]
        if protocol == "lengthfield":   # custom field names live in the options
            cfg = self._d.opt.lengthfield
            self._keys = {**self._keys, **{
                lib.NM_KEY_LF_FIELD0 + i: ffi.string(cfg.fields[i].name).decode()
                for i in range(cfg.nfields)}}
        self._tail = b""
        self._base = 0

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a frame."""
        return len(self._tail)

    def feed(self, data) -> list:
        """Add bytes; return the frames they completed. Raises CodecError."""
        buf = self._tail + bytes(data) if self._tail else bytes(data)
        frames, pos = [], 0
        view = ffi.from_buffer(buf)
        while True:
            room = min(_FRAME_BATCH, self._pipelined - len(frames))
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
            # mean the metadata array filled up: go on while there is progress,
            # up to max_pipelined frames a feed.
            if n == 0 or pos >= len(buf) or self._d.error or len(frames) >= self._pipelined:
                break
        self._tail = buf[pos:]
        self._base += pos
        return frames

    def _collect(self, frames, buf, pos, n):
        raw = ffi.buffer(self._frames, n * _FRAME.size)[:]
        last = self._frames[n - 1]
        nmeta = last.meta_start + last.meta_count
        meta = ffi.buffer(self._meta, nmeta * _META.size)[:] if nmeta else b""
        view = memoryview(buf)[pos:] if pos else buf
        batch = _Batch(view, self._base + pos, raw, meta, self._keys)
        frames.extend(map(Frame, _HEAD.iter_unpack(raw), repeat(batch), count()))

    def _raise(self, status, pos):
        reason = ffi.string(self._d.error_reason).decode() if self._d.error_reason else \
            ffi.string(lib.nm_strerror(status)).decode()
        raise error_for(status, f"{self.protocol}: {reason}",
                        self._base + pos + self._d.error_offset)

    # -- replies and rewrites (off the hot path) -----------------------------

    def _c_frame(self, frame: Frame):
        """The frame and its metadata as C structs, with the frame at its
        place in its batch buffer (frame._buf), so spans need no rebasing."""
        f = ffi.new("nm_frame *")
        f.offset, f.length, f.kind = frame._pos, frame.length, _KIND_CODES[frame.kind]
        f.request_id, f.status, f.flags = frame.request_id, frame.status, frame.flags
        f.variant, f.body_offset = frame.variant, frame.body_offset
        f.id_offset, f.id_length = frame.id_offset, frame.id_length
        spans = frame._spans
        meta = ffi.new("nm_meta[]", max(len(spans) // _META_WORDS, 1))
        ffi.cast("uint32_t *", meta)[0:len(spans)] = spans
        f.meta_start, f.meta_count = 0, len(spans) // _META_WORDS
        return f, meta

    def _check(self, rc: int) -> int:
        if rc < 0:
            raise error_for(rc, f"{self.protocol}: {ffi.string(lib.nm_strerror(rc)).decode()}")
        return rc

    def rewrite_request_id(self, buf: bytearray, frame: Frame, new_id: int, at: int = 0) -> None:
        """Rewrite frame's request id in ``buf``, which holds the frame at ``at``."""
        f, _ = self._c_frame(frame)
        f.offset = at
        self._check(lib.nm_rewrite_request_id(self._d, ffi.from_buffer(buf), len(buf), f, new_id))

    def error_reply(self, frame: Frame, reason: str, message: str = "") -> bytes:
        """The protocol's own error reply to ``frame`` (reason: REPLY_REASONS)."""
        f, meta = self._c_frame(frame)
        src, msg = frame._buf, message.encode()
        cap = 512 + len(msg) + frame.length
        out = ffi.new("uint8_t[]", cap)
        n = self._check(lib.nm_build_error(self._d, ffi.from_buffer(src), len(src), f, meta,
                                           REPLY_REASONS[reason], msg, len(msg), out, cap))
        return ffi.buffer(out, n)[:]

    def heartbeat_reply(self, frame: Frame) -> bytes:
        f, _ = self._c_frame(frame)
        src, cap = frame._buf, 256 + frame.length
        out = ffi.new("uint8_t[]", cap)
        n = self._check(lib.nm_build_heartbeat_reply(self._d, ffi.from_buffer(src), len(src), f,
                                                     out, cap))
        return ffi.buffer(out, n)[:]

    def heartbeat(self, request_id: int = 0) -> bytes:
        out = ffi.new("uint8_t[]", 256)
        n = self._check(lib.nm_build_heartbeat(self._d, request_id, out, 256))
        return ffi.buffer(out, n)[:]


def decoder_for(protocol: str, **options) -> Decoder:
    """A decoder for ``protocol`` (dubbo, thrift, redis, http1, lengthfield).

    Options: ``direction`` ("request"/"response"), limits (``max_frame_size``,
    ``max_headers``, ``max_depth``, ``max_elements``, ``max_pipelined``,
    ``max_header_bytes``), Thrift ``thrift_protocol`` ("binary"/"compact")
    and ``thrift_transport`` ("framed"/"unframed"), detected when absent,
    HTTP ``lenient`` (a set of leniency names), Redis ``resp3``, and the
    length-field layout for ``lengthfield`` (see agent.codec.options).
    """
    return Decoder(protocol, **options)


__all__ = ["CodecError", "Decoder", "Frame", "decoder_for", "limits"]
