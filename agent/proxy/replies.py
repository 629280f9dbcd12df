"""Replies the codec cannot build from a decoded request frame.

- fault aborts carry the configured status (HTTP status, Dubbo status byte);
  the codec's error_reply knows reasons, not arbitrary statuses;
- a malformed frame has no frame to answer: HTTP gets a 400 with
  `Connection: close`, Redis an `-ERR`, Dubbo a BAD_REQUEST response when
  the 16-byte header (and so the request id) was readable; Thrift and
  length-field connections are closed without a reply (no id to answer).
"""

from __future__ import annotations

from http import HTTPStatus

from agent.codec import CodecError

from .mutations import hessian_string

DUBBO_BAD_REQUEST = 40


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Status"


def http_reply(status: int, body: bytes, keepalive: bool) -> bytes:
    head = (f"HTTP/1.1 {status} {_phrase(status)}\r\ncontent-type: text/plain\r\n"
            f"content-length: {len(body)}\r\nconnection: {'keep-alive' if keepalive else 'close'}"
            "\r\n\r\n")
    return head.encode() + body


def fault_reply(session, req, status: int):
    """The abort reply of the fault filter, in the request's protocol."""
    codec = session.chain.codec
    if codec == "http1":
        return http_reply(status, b"fault filter abort", req.keepalive)
    try:
        reply = session.decoder.error_reply(req.frame, "internal", f"fault filter abort ({status})")
    except CodecError:
        return None
    if codec == "dubbo" and 0 < status < 256:
        reply = reply[:3] + bytes([status]) + reply[4:]
    return reply


def malformed_reply(codec: str, data: bytes, exc: Exception):
    """The protocol's error for bytes it could not decode, or None."""
    reason = getattr(exc, "reason", str(exc)).replace("\r", " ").replace("\n", " ")[:200]
    if codec == "http1":
        return http_reply(400, f"bad request: {reason}".encode(), False)
    if codec == "redis":
        return f"-ERR bad request: {reason}\r\n".encode()
    if codec == "dubbo" and len(data) >= 16 and data[:2] == b"\xda\xbb" \
            and data[2] & 0xC0 == 0xC0:             # a two-way request whose header we read
        body = hessian_string(f"bad request: {reason}")
        return (b"\xda\xbb" + bytes([data[2] & 0x1F, DUBBO_BAD_REQUEST]) + data[4:12]
                + len(body).to_bytes(4, "big") + body)
    return None
