"""Resource updates as they cross the channel, and the worker's own ConfigStore.

The supervisor serializes each ResourceUpdate's resources (protobuf bytes;
what came from xDS already is bytes and crosses as is); every worker hands
those bytes to its own ConfigStore, which decodes and validates exactly as
the supervisor and the agent do, keeps the bytes instead of a decoded
message, and swaps its Snapshot in one assignment.
"""

from __future__ import annotations

from typing import Mapping, Optional

from google.protobuf import any_pb2


def encode_update(update) -> dict:
    """A ResourceUpdate as plain data: resources as serialized protobuf bytes."""
    return {"type_url": update.type_url, "version": update.version,
            "removed": tuple(update.removed), "replace": bool(update.replace),
            "resources": {name: _serialize(msg) for name, msg in update.resources.items()}}


def _serialize(message) -> bytes:
    if type(message) is bytes:
        return message
    if isinstance(message, (bytearray, memoryview)):
        return bytes(message)
    if isinstance(message, any_pb2.Any):          # the resource inside, not the wrapper
        return message.value
    return message.SerializeToString()


class ConfigApplier:
    """A worker's ConfigStore fed with encoded updates."""

    def __init__(self, remote_ports: Optional[Mapping[str, int]] = None):
        from agent.config.store import ConfigStore

        self.store = ConfigStore(remote_ports=dict(remote_ports or {}))

    def apply(self, encoded: dict):
        """Bytes go to the store as they are: it decodes each once and keeps the bytes."""
        return self.store.update(encoded["type_url"], encoded["resources"], encoded["version"],
                                 removed=encoded["removed"], replace=encoded["replace"])
