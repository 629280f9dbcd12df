"""Resource updates as they cross the channel, and the worker's own ConfigStore.

The supervisor serializes each ResourceUpdate's messages (protobuf bytes);
every worker decodes them and applies them to its own ConfigStore, so each
worker validates exactly as the supervisor and the agent do, and swaps its
Snapshot in one assignment.
"""

from __future__ import annotations

from typing import Mapping, Optional


def encode_update(update) -> dict:
    """A ResourceUpdate as plain data: messages as serialized protobuf bytes."""
    return {"type_url": update.type_url, "version": update.version,
            "removed": tuple(update.removed), "replace": bool(update.replace),
            "resources": {name: _serialize(msg) for name, msg in update.resources.items()}}


def _serialize(message) -> bytes:
    if isinstance(message, (bytes, bytearray)):
        return bytes(message)
    return message.SerializeToString()


class ConfigApplier:
    """A worker's ConfigStore fed with encoded updates."""

    def __init__(self, remote_ports: Optional[Mapping[str, int]] = None):
        from agent.config.store import ConfigStore

        self.store = ConfigStore(remote_ports=dict(remote_ports or {}))

    def apply(self, encoded: dict):
        from agent.config.resources import decode

        type_url = encoded["type_url"]
        messages = {name: decode(type_url, raw) for name, raw in encoded["resources"].items()}
        return self.store.update(type_url, messages, encoded["version"],
                                 removed=encoded["removed"], replace=encoded["replace"])
