"""The last good configuration, kept on the node's disk.

Whenever the served configuration changes, the agent writes it (debounced)
so that an agent restarted while the control plane is unreachable still
serves what it served before. The file holds one DeltaDiscoveryResponse per
(type, source): resources with their versions, the type's version in
system_version_info, the source (ADS or an RDS stream's cluster) in
control_plane.identifier. It is written to a temporary file, fsynced and
renamed over the old one, then the directory is fsynced: a crash leaves the
old file or the new one, never a torn one; a SHA-256 trailer catches any
other damage.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Tuple

from envoy.service.discovery.v3 import discovery_pb2

from .applier import STATIC, Applier
from .incoming import Incoming, Unwrapped
from .types import APPLY_ORDER

log = logging.getLogger("nodemesh.xds")

MAGIC = b"NMLASTGOOD1\n"
MAX_FILE_BYTES = 1 << 30


class PersistError(ValueError):
    pass


@dataclass
class Saved:
    type_url: str
    source: str
    version: str
    resources: Dict[str, Tuple[str, object]]   # name -> (version, Any)


def collect(applier: Applier) -> List[Saved]:
    """What the applier serves now, by (type, source); static resources are left out
    (they come from the bootstrap on every start)."""
    out: Dict[Tuple[str, str], Saved] = {}
    for type_url in APPLY_ORDER:
        for name, rec in applier.records[type_url].items():
            if rec.source == STATIC or not applier.is_serving(type_url, name):
                continue
            key = (type_url, rec.source)
            saved = out.get(key)
            if saved is None:
                saved = out[key] = Saved(type_url, rec.source,
                                         applier.versions.get(type_url, ""), {})
            saved.resources[name] = (rec.version, rec)
    return list(out.values())


def encode(saved: List[Saved]) -> bytes:
    parts = [MAGIC]
    for s in saved:
        msg = discovery_pb2.DeltaDiscoveryResponse(type_url=s.type_url,
                                                   system_version_info=s.version)
        msg.control_plane.identifier = s.source
        for name, (version, payload) in sorted(s.resources.items()):
            r = msg.resources.add(name=name, version=version)
            r.resource.type_url, r.resource.value = payload.type_url, payload.value
        body = msg.SerializeToString()
        parts.append(struct.pack(">I", len(body)))
        parts.append(body)
    data = b"".join(parts)
    return data + hashlib.sha256(data).digest()


def decode_file(data: bytes) -> List[Saved]:
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 32:
        raise PersistError("not a nodemesh last-good file")
    body, digest = data[:-32], data[-32:]
    if hashlib.sha256(body).digest() != digest:
        raise PersistError("checksum mismatch (damaged file)")
    out, pos = [], len(MAGIC)
    while pos < len(body):
        (n,) = struct.unpack_from(">I", body, pos)
        pos += 4
        msg = discovery_pb2.DeltaDiscoveryResponse()
        msg.ParseFromString(body[pos:pos + n])
        pos += n
        out.append(Saved(msg.type_url, msg.control_plane.identifier, msg.system_version_info,
                         {r.name: (r.version, r.resource) for r in msg.resources}))
    return out


def write_atomic(path: str, data: bytes, mode: int = 0o600):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".last-good-", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def save(path: str, applier: Applier) -> int:
    data = encode(collect(applier))
    write_atomic(path, data)
    return len(data)


def load(path: str) -> List[Saved]:
    """The saved configuration, [] if there is none; PersistError if it is unusable."""
    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise PersistError(f"{path}: {size} bytes, over the {MAX_FILE_BYTES} limit")
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise PersistError(f"{path}: {exc.strerror}") from None
    try:
        return decode_file(data)
    except PersistError as exc:
        raise PersistError(f"{path}: {exc}") from None
    except Exception as exc:   # noqa: BLE001 - any parse failure means a bad file
        raise PersistError(f"{path}: unreadable ({exc})") from None


def restore(applier: Applier, saved: List[Saved]) -> list:
    """Apply saved state through the same validation; returns the errors."""
    errors = []
    order = {t: i for i, t in enumerate(APPLY_ORDER)}
    for s in sorted(saved, key=lambda s: order.get(s.type_url, 99)):
        if s.type_url not in applier.records:
            continue
        out = Unwrapped()
        for name, (version, payload) in s.resources.items():
            out.add(s.type_url, Incoming(name, version, payload))
        errors += applier.apply(s.type_url, out, version=s.version, source=s.source).errors
    return errors
