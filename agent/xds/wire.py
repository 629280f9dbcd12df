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
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _ld(field: int, data: bytes) -> bytes:
    """A length-delimited field: tag, length, bytes."""
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _str(field: int, text: str) -> bytes:
    return _ld(field, text.encode()) if text else b""


def any_bytes(type_url: str, value: bytes) -> bytes:
    return _str(ANY_TYPE_URL, type_url) + (_ld(ANY_VALUE, value) if value else b"")


def sotw(version: str, type_url: str, nonce: str,
         resources: Iterable[Tuple[str, bytes]]) -> bytes:
    """A DiscoveryResponse; resources are (type_url, value) pairs."""
    parts = [_str(R_VERSION, version)]
    parts += [_ld(R_RESOURCES, any_bytes(t, v)) for t, v in resources]
    parts += [_str(R_TYPE_URL, type_url), _str(R_NONCE, nonce)]
    return b"".join(parts)


def delta(version: str, type_url: str, nonce: str,
          resources: Iterable[Tuple[str, str, str, bytes]], removed: Iterable[str]) -> bytes:
    """A DeltaDiscoveryResponse; resources are (name, version, type_url, value)."""
    parts = [_str(D_VERSION, version)]
    for name, rversion, rtype, value in resources:
        body = _str(RES_VERSION, rversion) + _ld(RES_RESOURCE, any_bytes(rtype, value)) + \
            _str(RES_NAME, name)
        parts.append(_ld(D_RESOURCES, body))
    parts += [_str(D_TYPE_URL, type_url), _str(D_NONCE, nonce)]
    parts += [_str(D_REMOVED, name) for name in removed]
    return b"".join(parts)


def serialize(message) -> bytes:
    """The servers' response serializer: bytes built here, or a message."""
    return message if isinstance(message, (bytes, bytearray)) else message.SerializeToString()
