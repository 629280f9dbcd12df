"""Decoder: options in, frames out, replies and rewrites, over native/codec.h.

feed() itself is the frame reader's (agent.codec._frames in C, or
agent.codec.pyframes); the rest - options, error replies, heartbeats,
request-id rewrites - goes through the cffi module directly.
"""

import sys

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

try:    # the C reader (native/frames*.c); pyframes is its reference and fallback
    from . import _frames as _impl
    ACCELERATED = True
except ImportError:     # a tree with only the cffi module built
    from . import pyframes as _impl
    ACCELERATED = False

Frame = _impl.Frame
_NAMES = lib.NM_KEY_LF_FIELD0 + lib.NM_LF_MAX_FIELDS   # key ids with a name slot
_KIND_NAMES = tuple(KINDS.get(code) or "unknown" for code in range(max(KINDS) + 1))
_DECODE = int(ffi.cast("uintptr_t", ffi.addressof(lib, "nm_decode")))
_STRERROR = int(ffi.cast("uintptr_t", ffi.addressof(lib, "nm_strerror")))
_META_WORDS = ffi.sizeof("nm_meta") // 4


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


_NAME_TABLES: dict = {}
_MAX_NAME_TABLES = 64     # distinct key sets (lengthfield layouts name their own fields)


def _name_table(keys: dict) -> tuple:
    """Key id -> metadata key name, as a tuple indexed by key id; one shared tuple per
    key set (each decoder used to hold its own: ~600 bytes per client connection)."""
    ident = tuple(keys.items())
    table = _NAME_TABLES.get(ident)
    if table is None:
        table = tuple(sys.intern(keys[i]) if i in keys else None for i in range(_NAMES))
        if len(_NAME_TABLES) < _MAX_NAME_TABLES:
            _NAME_TABLES[ident] = table
    return table


def make_reader(d, protocol: str, keys: dict, accelerated: bool = ACCELERATED):
    """The feed() engine for decoder state d: the C reader, or the Python one.

    A request decoder's frames get their metadata decoded with them (the
    router reads it for every request); a response decoder's on first use
    (a proxy rarely looks at response headers)."""
    names = _name_table(keys)
    eager = d.opt.direction == lib.NM_DIR_REQUEST
    meta_cap = d.opt.limits.max_headers + 64
    pipelined = d.opt.limits.max_pipelined
    if accelerated:
        from . import _frames

        return _frames.Reader(d, int(ffi.cast("uintptr_t", d)), _DECODE, _STRERROR, names,
                              _KIND_NAMES, pipelined, meta_cap, error_for, protocol, eager)
    from . import pyframes

    return pyframes.Reader(d, names, _KIND_NAMES, pipelined, meta_cap, error_for, protocol)


class Decoder:
    """Resumable decoder for one direction of one connection.

    ``accelerated=False`` uses the pure-Python reader (agent.codec.pyframes),
    the reference the C one is tested against; the default is the C reader
    when it is built."""

    def __init__(self, protocol: str, *, accelerated: bool = ACCELERATED, **options):
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
        self.protocol = protocol
        self._opt = build_options(protocol, options)
        self._d = ffi.new("nm_decoder *")
        rc = lib.nm_decoder_init(self._d, PROTOCOLS[protocol], self._opt)
        if rc != 0:
            why = self._d.error_reason or lib.nm_strerror(rc)
            raise ValueError(f"{protocol}: invalid options: {ffi.string(why).decode()}")
        keys = KEY_NAMES[protocol]
        if protocol == "lengthfield":   # custom field names live in the options
            cfg = self._d.opt.lengthfield
            keys = {**keys, **{
                lib.NM_KEY_LF_FIELD0 + i: ffi.string(cfg.fields[i].name).decode()
                for i in range(cfg.nfields)}}
        if accelerated and not ACCELERATED:
            raise ValueError("agent.codec._frames is not built (native/build_codec.py)")
        self._reader = make_reader(self._d, protocol, keys, accelerated)
        # The hot path: dec.feed(data) calls the reader's feed directly, with
        # no Python frame in between (the method below documents it).
        self.feed = self._reader.feed

    def feed(self, data) -> list:
        """Add bytes (bytes, bytearray, memoryview); return the frames they
        completed. Raises CodecError (sticky: every later feed raises too)."""
        return self._reader.feed(data)

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a frame."""
        return self._reader.buffered

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
