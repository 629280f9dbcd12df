"""Dubbo test messages: the 16-byte header, and a small hessian2 writer for
the forms hessian.js never writes (variable-length lists, typed maps, 4-byte
UTF-8, chunks at chosen sizes). Written from the hessian 2.0 spec."""

import struct

REQ, TWOWAY, EVENT = 0x80, 0x40, 0x20
HESSIAN2 = 2


def header(flag, status, rid, body):
    return struct.pack(">HBBQI", 0xDABB, flag, status, rid, len(body)) + body


def request(body, rid=1, ser=HESSIAN2, twoway=True):
    return header(REQ | (TWOWAY if twoway else 0) | ser, 0, rid, body)


def java_len(s):
    """UTF-16 units, as Java's String.length() counts them."""
    return sum(2 if ord(c) > 0xFFFF else 1 for c in s)


def string(s, chunk=None):
    """hessian2 string; chunk: chars per 'R' chunk (None: one chunk)."""
    if s is None:
        return b"N"
    out = b""
    chunk = chunk or (0x8000 if java_len(s) > 0x8000 else None)
    if chunk:
        while java_len(s) > chunk:
            i, n = 0, 0
            while n + java_len(s[i]) <= chunk:
                n += java_len(s[i])
                i += 1
            out += b"R" + struct.pack(">H", n) + s[:i].encode()
            s = s[i:]
    n, data = java_len(s), s.encode()
    if n <= 31:
        return out + bytes([n]) + data
    if n <= 1023:
        return out + bytes([0x30 + (n >> 8), n & 0xFF]) + data
    return out + b"S" + struct.pack(">H", n) + data


def binary(data, chunk=None):
    out = b""
    if chunk:
        while len(data) > chunk:
            out += b"A" + struct.pack(">H", chunk) + data[:chunk]
            data = data[chunk:]
    if len(data) <= 15:
        return out + bytes([0x20 + len(data)]) + data
    if len(data) <= 1023:
        return out + bytes([0x34 + (len(data) >> 8), len(data) & 0xFF]) + data
    return out + b"B" + struct.pack(">H", len(data)) + data


def int_(v):
    if -0x10 <= v <= 0x2F:
        return bytes([0x90 + v])
    if -0x800 <= v <= 0x7FF:
        return bytes([0xC8 + (v >> 8), v & 0xFF])
    if -0x40000 <= v <= 0x3FFFF:
        return bytes([0xD4 + (v >> 16), (v >> 8) & 0xFF, v & 0xFF])
    return b"I" + struct.pack(">i", v)


def long_(v):
    if -0x08 <= v <= 0x0F:
        return bytes([0xE0 + v])
    if -0x800 <= v <= 0x7FF:
        return bytes([0xF8 + (v >> 8), v & 0xFF])
    if -0x40000 <= v <= 0x3FFFF:
        return bytes([0x3C + (v >> 16), (v >> 8) & 0xFF, v & 0xFF])
    if -(2**31) <= v < 2**31:
        return b"Y" + struct.pack(">i", v)
    return b"L" + struct.pack(">q", v)


def attachments(pairs, typed=None):
    """A map of attachments: pairs of already-encoded keys and values."""
    head = b"M" + string(typed) if typed else b"H"
    return head + b"".join(k + v for k, v in pairs) + b"Z"


def body(dubbo="2.0.2", path="com.example.Greeter", version="1.0.0", method="hello",
         desc="", args=(), attach=b"H" + b"Z"):
    out = string(dubbo) + string(path) + string(version) + string(method) + string(desc)
    return out + b"".join(args) + attach


def str_attachments(d):
    return attachments([(string(k), string(v)) for k, v in d.items()])
