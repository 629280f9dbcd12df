"""Dubbo 2.x frames for the demo's consumer and provider, bodies in hessian2.

Scalars are written with python-hessian's encoder (its 'S'/'I' forms are
valid hessian2); the attachments map uses hessian2's untyped map ('H' ... 'Z'),
which python-hessian (a hessian 1 library) does not write.
"""

import struct

MAGIC = 0xDABB
FLAG_REQUEST, FLAG_TWOWAY, FLAG_EVENT = 0x80, 0x40, 0x20
HESSIAN2 = 2
OK = 20
RESPONSE_VALUE = b"\x91"            # hessian2 compact int 1
HEADER = struct.Struct(">HBBqI")    # magic, flags|serialization, status, request id, body length


def _s(value: str) -> bytes:
    from pyhessian.encoder import Encoder

    return Encoder().encode_arg(value)[1]


def request(request_id: int, service: str, method: str, arg: str, attachments=None) -> bytes:
    body = (_s("2.0.2") + _s(service) + _s("0.0.0") + _s(method) + _s("Ljava/lang/String;")
            + _s(arg) + b"H" + b"".join(_s(k) + _s(v) for k, v in (attachments or {}).items())
            + b"Z")
    flags = FLAG_REQUEST | FLAG_TWOWAY | HESSIAN2
    return HEADER.pack(MAGIC, flags, 0, request_id, len(body)) + body


def response(request_id: int, value: str) -> bytes:
    body = RESPONSE_VALUE + _s(value)
    return HEADER.pack(MAGIC, HESSIAN2, OK, request_id, len(body)) + body


def heartbeat_reply(request_id: int) -> bytes:
    body = b"N"
    return HEADER.pack(MAGIC, FLAG_EVENT | HESSIAN2, OK, request_id, len(body)) + body


def read_frame(sock) -> tuple:
    """(flags, status, request id, body) of the next frame on a blocking socket."""
    head = _exactly(sock, HEADER.size)
    magic, flags, status, rid, length = HEADER.unpack(head)
    if magic != MAGIC:
        raise ValueError(f"not a dubbo frame (magic {magic:#x})")
    return flags, status, rid, _exactly(sock, length)


def _exactly(sock, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed mid-frame")
        buf += chunk
    return buf


def last_string(body: bytes) -> str:
    """The response value: 'S' + 16-bit length + UTF-8 (as the provider writes it)."""
    i = body.rfind(b"S")
    (n,) = struct.unpack(">H", body[i + 1:i + 3])
    return body[i + 3:i + 3 + n].decode()
