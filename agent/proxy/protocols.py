"""What the runtime needs to know about each codec, in one table.

Multiplexed protocols (Dubbo, Thrift, a length-field layout with a request
id) carry a request id: upstream connections are shared by rewriting it to
a connection-unique id and restoring it on the response. The others (Redis,
HTTP/1.1, a length-field layout without id) answer in order: they are
pipelined, and each client connection keeps a reorder buffer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import attrgetter
from typing import Callable, Mapping, Optional

from agent.codec._native import lib

try:    # the C batch rewrite (native/mux.c); write_id below is its reference
    from agent.codec._frames import rewrite as _rewrite_c
except ImportError:     # a tree with only the cffi module built
    _rewrite_c = None

FRAME_KEEPALIVE = lib.NM_FRAME_KEEPALIVE
FRAME_UPGRADE = lib.NM_FRAME_UPGRADE
FRAME_UNTIL_CLOSE = lib.NM_FRAME_UNTIL_CLOSE
THRIFT_COMPACT = lib.NM_THRIFT_COMPACT

# Envoy's response flags, the reason a request got a local reply or failed.
FLAG_NONE = "-"
FLAG_NO_ROUTE = "NR"
FLAG_NO_HEALTHY = "UH"
FLAG_OVERFLOW = "UO"
FLAG_RATE_LIMITED = "RL"
FLAG_TIMEOUT = "UT"
FLAG_FAULT = "FI"
FLAG_RESET = "UC"            # upstream connection terminated with the request in flight
FLAG_CONNECT_FAIL = "UF"
FLAG_UPSTREAM_PROTOCOL = "UPE"
FLAG_DOWNSTREAM_CLOSED = "DC"
FLAG_OVERLOADED = "LO"      # per-pod fairness refused the request
FLAG_DRAIN_CUT = "DR"       # still in flight at the drain deadline
FLAG_UPGRADE = "UPG"        # HTTP Upgrade/CONNECT refused (no tunnelling on L7 chains)

# local reply reason (agent.codec REPLY_REASONS) per response flag
REASON_FOR_FLAG = {
    FLAG_NO_ROUTE: "no_route", FLAG_NO_HEALTHY: "no_upstream", FLAG_OVERFLOW: "overloaded",
    FLAG_RATE_LIMITED: "rate_limited", FLAG_TIMEOUT: "timeout", FLAG_FAULT: "internal",
    FLAG_RESET: "no_upstream", FLAG_CONNECT_FAIL: "no_upstream",
    FLAG_UPSTREAM_PROTOCOL: "no_upstream", FLAG_OVERLOADED: "overloaded",
    FLAG_DRAIN_CUT: "overloaded",
}

HTTP_STATUS_FOR_REASON = {"no_route": 404, "no_upstream": 503, "overloaded": 503,
                          "rate_limited": 429, "timeout": 504, "bad_request": 400,
                          "internal": 500}
DUBBO_STATUS_FOR_REASON = {"no_route": 60, "no_upstream": 80, "overloaded": 100,
                           "rate_limited": 100, "timeout": 31, "bad_request": 40,
                           "internal": 80}
# Dubbo statuses that say the provider, not the call, failed (outlier detection):
# SERVER_TIMEOUT, SERVER_ERROR, SERVER_THREADPOOL_EXHAUSTED.
DUBBO_SERVER_FAILURES = frozenset({31, 80, 100})

# Dubbo's readonly event: a one-way event request whose data is the string "R"
# (hessian2: 0x01 'R'); a consumer stops sending on a channel that got it.
DUBBO_READONLY_EVENT = (b"\xda\xbb\xa2\x00" + (0).to_bytes(8, "big") + (2).to_bytes(4, "big")
                        + b"\x01R")


@dataclass(frozen=True)
class Traits:
    name: str
    multiplexed: bool
    method_key: Optional[str]          # metadata key retries compare with idempotent methods
    response_code: Callable            # (frame) -> str label
    upstream_failed: Callable          # (frame) -> bool, counts against the host (outlier)
    local_code: Callable               # (reason) -> str label of our own error reply
    id_encoding: str = ""              # "be", "le" or "varint"; "" when not multiplexed
    can_fail: bool = field(init=False)  # a reply can count against its host (outlier, 5xx)

    def __post_init__(self):
        object.__setattr__(self, "can_fail", self.upstream_failed is not _never)


try:
    from _collections import _count_elements      # Counter.update's C loop
except ImportError:                                # pragma: no cover (other interpreters)
    def _count_elements(mapping, iterable):
        for item in iterable:
            mapping[item] = mapping.get(item, 0) + 1

_kind_of, _status_of = attrgetter("kind"), attrgetter("status")


def count_codes(traits: "Traits", frames, codes: dict) -> None:
    """Add each reply's response_code to `codes` (code -> count): for the usual codes
    counted by the frames' kind or status in C, then named (names memoized)."""
    code = traits.response_code
    raw_of = _RAW_OF.get(code)
    if raw_of is None:
        _count_elements(codes, map(code, frames))
        return
    raw: dict = {}
    _count_elements(raw, map(raw_of, frames))
    names = _NAMES[code]
    for value, n in raw.items():
        name = names.get(value)
        if name is None:
            name = names[value] = str(value) if code is _status else \
                ("ok" if value == "response" else value)
            if len(names) > 4096:                 # statuses are few; bound it anyway
                names.clear()
        codes[name] = codes.get(name, 0) + n


def code_key(response_code) -> int:
    """What agent.codec._frames.replies counts replies by for this response_code: 0 the
    frame's kind, 1 its status, -1 neither (the caller counts with count_codes)."""
    return _CODE_KEYS.get(response_code, -1)


def code_names(response_code) -> dict:
    """The memo of code names by raw value (kind or status) that count_codes and
    agent.codec._frames.replies share ({} for a response_code counted otherwise)."""
    return _NAMES.get(response_code, _NO_NAMES)


def _by_kind(frame) -> str:
    return "ok" if frame.kind == "response" else frame.kind


def _status(frame) -> str:
    return str(frame.status)


def _never(frame) -> bool:
    return False


def _http_failed(frame) -> bool:
    return frame.status >= 500


def _dubbo_failed(frame) -> bool:
    return frame.kind == "error" and frame.status in DUBBO_SERVER_FAILURES


def _local_http(reason: str) -> str:
    return str(HTTP_STATUS_FOR_REASON.get(reason, 500))


def _local_dubbo(reason: str) -> str:
    return str(DUBBO_STATUS_FOR_REASON.get(reason, 80))


def _local_error(reason: str) -> str:
    return "error"


_RAW_OF = {_status: _status_of, _by_kind: _kind_of}     # count_codes: code <- raw value
_NAMES: dict = {_status: {}, _by_kind: {}}
_CODE_KEYS = {_by_kind: 0, _status: 1}                  # agent.codec._frames.replies code_by
_NO_NAMES: dict = {}

_TRAITS = {
    "redis": Traits("redis", False, "command", _by_kind, _never, _local_error),
    "http1": Traits("http1", False, ":method", _status, _http_failed, _local_http),
    "dubbo": Traits("dubbo", True, "method", _status, _dubbo_failed, _local_dubbo, "be"),
    "thrift": Traits("thrift", True, "method", _by_kind, _never, _local_error, "be"),
}


def traits_for(codec: str, options: Mapping[str, object]) -> Traits:
    """The traits of a filter chain's codec with its options."""
    if codec in _TRAITS:
        return _TRAITS[codec]
    if codec == "lengthfield":
        has_id = int(options.get("id_size", 0) or 0) > 0
        has_status = any(f.get("name") == "status" for f in options.get("fields", ()))
        return Traits("lengthfield", has_id, "method", _status if has_status else _by_kind,
                      _never, _local_error,
                      ("le" if options.get("little_endian") else "be") if has_id else "")
    raise ValueError(f"unknown codec {codec!r}")


# -- request ids -----------------------------------------------------------------------

def mux_args(traits: Traits) -> tuple:
    """(encoding, varint_mask, code_by, names): what the C calls of multiplexed batches
    (agent.codec._frames.claim and replies) take for this codec, made once per Traits."""
    hit = _MUX_ARGS.get(id(traits))
    if hit is None or hit[0] is not traits:
        code = traits.response_code
        hit = _MUX_ARGS[id(traits)] = (traits, (
            ID_CODES.get(traits.id_encoding, 0), THRIFT_COMPACT if traits.name == "thrift" else 0,
            code_key(code), code_names(code)))
        if len(_MUX_ARGS) > 256:                  # lengthfield Traits come and go
            _MUX_ARGS.clear()
            _MUX_ARGS[id(traits)] = hit
    return hit[1]


_MUX_ARGS: dict = {}


def id_encoding(traits: Traits, frame) -> str:
    """Thrift compact writes the seqid as a varint; everything else fixed width."""
    if traits.name == "thrift" and frame.variant & THRIFT_COMPACT:
        return "varint"
    return traits.id_encoding


def write_id(buf: bytearray, at: int, width: int, encoding: str, value: int) -> None:
    """Write `value` into the id field (at, width) of a frame held in buf."""
    if encoding == "varint":
        out = bytearray()
        value &= 0xFFFFFFFF
        while True:
            byte = value & 0x7F
            value >>= 7
            if value:
                out.append(byte | 0x80)
            else:
                out.append(byte)
                break
        if len(out) != width:
            raise ValueError(f"id {value} does not fit a {width}-byte varint")
        buf[at:at + width] = out
    else:
        buf[at:at + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(
            width, "little" if encoding == "le" else "big")


ID_CODES = {"be": 0, "le": 1, "varint": 2}     # native/mux.h NM_ID_*


def rewrite_frames(frames, ids, encoding: str) -> bytes:
    """The frames back to back, frame i with id `ids + i` (ids an int) or `ids[i]` in its
    id field: a whole batch in one C call. ValueError when an id does not fit its field
    (a varint of another width). Frames of the Python reader take the reference path."""
    if _rewrite_c is not None:
        try:
            return _rewrite_c(frames, ids, ID_CODES[encoding])
        except TypeError:
            pass                                # not C reader frames
    return rewrite_frames_py(frames, ids, encoding)


def rewrite_frames_py(frames, ids, encoding: str) -> bytes:
    """rewrite_frames in Python: the reference the C path is tested against."""
    buf, at = bytearray(b"".join(f.data for f in frames)), 0
    for i, frame in enumerate(frames):
        write_id(buf, at + frame.id_offset, frame.id_length, encoding,
                 ids + i if isinstance(ids, int) else ids[i])
        at += frame.length
    return bytes(buf)


def id_range(encoding: str, width: int):
    """Ids a connection may hand out for a field of this width: (first, last)."""
    if encoding == "varint":
        first = 1 if width == 1 else 1 << (7 * (width - 1))
        last = min((1 << (7 * width)) - 1, 0x7FFFFFFF)
        return first, last
    bits = 8 * width
    return 1, (1 << (bits - 1)) - 1 if bits >= 32 else (1 << bits) - 1
