"""Undo steps, registered before the step they undo is done.

    undo = Undo()
    undo.push("datapath pins", lambda: Datapath(s).uninstall())   # first the undo ...
    Datapath(s).up()                                                # ... then the step

close() runs every step in reverse order, each once, and keeps going when
one fails (a half-built node must still be taken down as far as possible);
it returns the failures as "what: error" strings. Each undo must therefore
be safe to run when its step never happened or only half happened.
"""

from __future__ import annotations

import logging
from typing import Callable, List, Tuple

log = logging.getLogger("nodemesh.demo")


class Undo:
    def __init__(self):
        self._steps: List[Tuple[str, Callable[[], object]]] = []

    def push(self, what: str, fn: Callable[[], object]) -> None:
        self._steps.append((what, fn))

    def __len__(self) -> int:
        return len(self._steps)

    def close(self) -> List[str]:
        errors = []
        while self._steps:
            what, fn = self._steps.pop()
            try:
                fn()
            except Exception as exc:      # noqa: BLE001 - undo the rest regardless
                log.warning("undo %s: %s", what, exc)
                errors.append(f"{what}: {exc}")
        return errors
