"""A store that accepts without compiling: for a source behind the agent's relay.

What the relay serves, the agent has validated, warmed and ordered already;
the proxy's workers compile it once more into their own stores. Compiling
it a third time in between (in the supervisor's XdsSource) would double the
proxy's work for nothing, so there the source keeps names and versions only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

from agent.config import model


@dataclass
class PassedResult:
    accepted: List[str]
    errors: List[object] = field(default_factory=list)
    snapshot: model.Snapshot = field(default_factory=model.Snapshot)
    changed: bool = False
    removed: List[str] = field(default_factory=list)
    kept: List[str] = field(default_factory=list)
    unchanged: List[str] = field(default_factory=list)


class PassThroughStore:
    def __init__(self):
        self._versions: Dict[str, Dict[str, str]] = {}
        self._snapshot = model.Snapshot()

    def update(self, type_url, resources, version, *, removed=(), replace=False,
               static=False) -> PassedResult:
        table = self._versions.setdefault(type_url, {})
        names = list(resources)
        for name in names:
            table[name] = version
        gone = [n for n in removed if table.pop(n, None) is not None]
        return PassedResult(names, snapshot=self._snapshot, changed=bool(names or gone),
                            removed=gone)

    def snapshot(self) -> model.Snapshot:
        return self._snapshot

    def message(self, type_url, name):
        return None

    def status(self) -> dict:
        return {t: dict(v) for t, v in self._versions.items()}

    def dump(self) -> dict:
        return {"passthrough": self.status()}
