"""Where resources come from: a static bootstrap or an xDS stream, one shape for both.

A ConfigSource yields ResourceUpdates: the resources of one type as the
source accepted them, to be applied with ConfigStore.update(**fields). The
proxy supervisor reads one source and relays its updates to its workers; it
never knows whether they came from a file or a control plane.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, AsyncIterator, Mapping, Protocol, Tuple


@dataclass(frozen=True)
class ResourceUpdate:
    type_url: str
    resources: Mapping[str, Any]      # name -> message, or its serialized bytes (xDS)
    version: str
    removed: Tuple[str, ...] = ()     # delta removals
    replace: bool = False             # SotW LDS/CDS: names absent from `resources` are removed


class ConfigSource(Protocol):
    def updates(self) -> AsyncIterator[ResourceUpdate]:
        """Every update, in order; the first ones carry the whole current state."""
