"""Metadata mutations where the protocol can carry them, on whole frames.

- HTTP/1.1 requests and responses: header fields (set replaces every field of
  that name, append adds one more line), and `Connection: close` on the
  response that ends a drained connection.
- Dubbo requests (hessian2 bodies): attachments, added at the end of the
  attachments map (a repeated key: the last one wins in Dubbo's HashMap).
  Only when the request has an attachments map we can see (the codec reported
  at least one attachment); other Dubbo frames pass unchanged and are counted.
- Everything else (Redis, Thrift, length-field, Dubbo responses): no place for
  metadata; routes with mutations on them are counted, not refused.
"""

from __future__ import annotations

from typing import Iterable, Optional

from agent.config.model import Mutation

_DUBBO_BODY_KEYS = frozenset({"interface", "method", "version", "dubbo_version", "param_types",
                              "serialization"})
_FORBIDDEN = frozenset(b"\r\n\x00")


def _clean(text: str, what: str) -> bytes:
    raw = text.encode("latin-1", "replace")
    if _FORBIDDEN.intersection(raw):
        raise ValueError(f"{what} {text!r} contains CR, LF or NUL")
    return raw


# -- HTTP/1.1 --------------------------------------------------------------------------

def http_set_headers(data: bytes, body_offset: int, mutations: Iterable[Mutation]) -> bytes:
    """The message with its header section changed; the body is untouched."""
    head, body = data[:body_offset], data[body_offset:]
    lines = head[:-2].split(b"\r\n")          # the last line is empty (end of headers)
    if lines and lines[-1] == b"":
        lines.pop()
    for m in mutations:
        name = _clean(m.key, "header name")
        value = _clean(m.value, "header value")
        if not m.append:
            lines = _without(lines, name)
        lines.append(name + b": " + value)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _without(lines, name: bytes):
    lower = name.lower()
    start = _start_line(lines)
    keep = lines[:start + 1]
    for line in lines[start + 1:]:
        if line.split(b":", 1)[0].strip().lower() != lower:
            keep.append(line)
    return keep


def _start_line(lines) -> int:
    """Index of the start line (RFC 9112 allows empty lines before a request line)."""
    for i, line in enumerate(lines):
        if line:
            return i
    return 0


def http_connection_close(data: bytes, body_offset: int) -> bytes:
    """The response with `Connection: close` (drain: the client opens a new connection)."""
    return http_set_headers(data, body_offset, (Mutation("Connection", "close"),))


# -- Dubbo (hessian2) ------------------------------------------------------------------

def hessian_string(text: str) -> bytes:
    """hessian2 string: compact forms by UTF-16 length, else 'S' chunks of 65535."""
    units = len(text.encode("utf-16-le")) // 2
    raw = text.encode("utf-8", "surrogatepass")
    if units < 32:
        return bytes([units]) + raw
    if units < 1024:
        return bytes([0x30 + (units >> 8), units & 0xFF]) + raw
    if units <= 0xFFFF:
        return b"S" + units.to_bytes(2, "big") + raw
    raise ValueError("attachment value longer than 65535 UTF-16 units")


def dubbo_add_attachments(data: bytes, metadata, mutations: Iterable[Mutation]) -> Optional[bytes]:
    """The request with attachments added, or None when it has no visible map.

    The codec reports attachments as metadata and refuses bytes after the
    map, so a request with at least one attachment ends with the map's 'Z'.
    """
    if len(data) < 17 or data[-1:] != b"Z" or not (set(metadata) - _DUBBO_BODY_KEYS):
        return None
    extra = b"".join(hessian_string(m.key) + hessian_string(m.value) for m in mutations)
    body_len = int.from_bytes(data[12:16], "big") + len(extra)
    return data[:12] + body_len.to_bytes(4, "big") + data[16:-1] + extra + b"Z"


def apply_request(codec: str, frame, data: bytes, mutations) -> Optional[bytes]:
    """The mutated request bytes, or None when the protocol cannot carry them."""
    if codec == "http1":
        return http_set_headers(data, frame.body_offset, mutations)
    if codec == "dubbo":
        return dubbo_add_attachments(data, frame.metadata, mutations)
    return None


def apply_response(codec: str, frame, data: bytes, mutations) -> Optional[bytes]:
    if codec == "http1":
        return http_set_headers(data, frame.body_offset, mutations)
    return None
