"""What the applier keeps of each accepted resource, and what it hands to its sinks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

from google.protobuf import any_pb2

if TYPE_CHECKING:   # pragma: no cover
    from .config_api import ConfigError


@dataclass(slots=True)
class Record:
    """One accepted resource as received: what is relayed and persisted.

    Kept as its serialized bytes, not as a message: 10,000 services are 40,000
    records, and a protobuf object costs several times its wire size."""

    version: str
    type_url: str                      # of the payload (routes come in two shapes)
    value: bytes
    source: str                        # ADS, an RDS stream's cluster, STATIC
    updated: float                     # wall clock, for /config_dump
    expires: Optional[float] = None    # monotonic deadline from the resource TTL

    @property
    def payload(self) -> any_pb2.Any:
        return any_pb2.Any(type_url=self.type_url, value=self.value)


@dataclass
class ServedChange:
    """What changed in the served configuration for one type."""

    type_url: str
    upserts: Dict[str, Record]
    removed: Tuple[str, ...]
    version: str
    messages: Dict[str, object] = field(default_factory=dict)   # decoded, where at hand


@dataclass
class ApplyStats:
    applies: int = 0
    resources: int = 0                 # resources in the responses applied
    last_seconds: float = 0.0          # the last apply, store + warming + publication
    total_seconds: float = 0.0


@dataclass
class Outcome:
    errors: List[ConfigError]
    changed: bool
    published: List[ServedChange]


Sink = Callable[[object, List["ServedChange"]], None]
"""Called with (applier, changes) after every change of what is served."""
