"""DiscoveryResponse / DeltaDiscoveryResponse bytes built directly from stored bytes.

The server keeps each resource as its serialized bytes. Building protobuf
messages around them only to serialize them again costs several
microseconds per resource (an initial sync of 50,000 services is 200,000
resources, every proxy); writing the few wire-format fields by hand costs a
fraction of that. Field numbers are checked against the descriptors at
import, and tests compare the output with protobuf's own encoding.
"""

from __future__ import annotations

from typing import Iterable, Tuple

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2


def _field(msg, name) -> int:
    return msg.DESCRIPTOR.fields_by_name[name].number


ANY_TYPE_URL, ANY_VALUE = _field(any_pb2.Any, "type_url"), _field(any_pb2.Any, "value")
R = discovery_pb2.DiscoveryResponse
R_VERSION, R_RESOURCES, R_TYPE_URL, R_NONCE = (_field(R, n) for n in (
    "version_info", "resources", "type_url", "nonce"))
D = discovery_pb2.DeltaDiscoveryResponse
D_VERSION, D_RESOURCES, D_TYPE_URL, D_REMOVED, D_NONCE = (_field(D, n) for n in (
    "system_version_info", "resources", "type_url", "removed_resources", "nonce"))
RES = discovery_pb2.Resource
RES_NAME, RES_VERSION, RES_RESOURCE = (_field(RES, n) for n in ("name", "version", "resource"))


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _ONE_BYTE[n]
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


_ONE_BYTE = tuple(bytes((i,)) for i in range(0x80))


def _tag(field: int) -> bytes:
    """The key of a length-delimited field."""
    return _varint(field << 3 | 2)


def _ld(field: int, data: bytes) -> bytes:
    """A length-delimited field: tag, length, bytes."""
    return _tag(field) + _varint(len(data)) + data


def _str(field: int, text: str) -> bytes:
    return _ld(field, text.encode()) if text else b""


def any_bytes(type_url: str, value: bytes) -> bytes:
    return _str(ANY_TYPE_URL, type_url) + (_ld(ANY_VALUE, value) if value else b"")


# Per-resource encoding is the relay's and xds-serve's hot loop (40,000
# resources for 10,000 services, per proxy): tags are constants, the small
# pieces are built once per type URL, and each resource's bytes are copied
# once, into the final join.
_T_R_RESOURCES, _T_D_RESOURCES = _tag(R_RESOURCES), _tag(D_RESOURCES)
_T_RES_VERSION, _T_RES_RESOURCE, _T_RES_NAME = (_tag(f) for f in (
    RES_VERSION, RES_RESOURCE, RES_NAME))
_T_ANY_VALUE = _tag(ANY_VALUE)


def _any_parts(type_url: str, value: bytes, head_cache: dict):
    """(the Any's leading bytes up to its value, its total length)."""
    head = head_cache.get(type_url)
    if head is None:
        head = head_cache[type_url] = _str(ANY_TYPE_URL, type_url)
    if not value:
        return head, len(head)
    head_v = head + _T_ANY_VALUE + _varint(len(value))
    return head_v, len(head_v) + len(value)


def sotw(version: str, type_url: str, nonce: str,
         resources: Iterable[Tuple[str, bytes]]) -> bytes:
    """A DiscoveryResponse; resources are (type_url, value) pairs."""
    parts, heads = [_str(R_VERSION, version)], {}
    for rtype, value in resources:
        head, size = _any_parts(rtype, value, heads)
        parts += (_T_R_RESOURCES, _varint(size), head, value)
    parts += [_str(R_TYPE_URL, type_url), _str(R_NONCE, nonce)]
    return b"".join(parts)


def delta(version: str, type_url: str, nonce: str,
          resources: Iterable[Tuple[str, str, str, bytes]], removed: Iterable[str]) -> bytes:
    """A DeltaDiscoveryResponse; resources are (name, version, type_url, value)."""
    parts, heads = [_str(D_VERSION, version)], {}
    add, varint = parts.extend, _varint
    t_res, t_ver, t_body, t_name = _T_D_RESOURCES, _T_RES_VERSION, _T_RES_RESOURCE, _T_RES_NAME
    for name, rversion, rtype, value in resources:
        head, size = _any_parts(rtype, value, heads)
        ver, name_b, any_len = rversion.encode(), name.encode(), varint(size)
        ver_len, name_len = varint(len(ver)), varint(len(name_b))
        body = 3 + len(ver_len) + len(ver) + len(any_len) + size + len(name_len) + len(name_b)
        if not ver:                               # empty strings are not written
            body -= 1 + len(ver_len)
        if not name_b:
            body -= 1 + len(name_len)
        add((t_res, varint(body)))
        if ver:
            add((t_ver, ver_len, ver))
        add((t_body, any_len, head, value))
        if name_b:
            add((t_name, name_len, name_b))
    parts += [_str(D_TYPE_URL, type_url), _str(D_NONCE, nonce)]
    parts += [_str(D_REMOVED, name) for name in removed]
    return b"".join(parts)


def serialize(message) -> bytes:
    """The servers' response serializer: bytes built here, or a message."""
    return message if isinstance(message, (bytes, bytearray)) else message.SerializeToString()
