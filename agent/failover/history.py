"""What the controller did and why: recent transitions, counters, JSON log lines,
and the operator's override kept across agent restarts."""

from __future__ import annotations

import collections
import json
import logging
import os
from typing import Optional

from .table import Context, State, plan

log = logging.getLogger("nodemesh.failover")


class History:
    def __init__(self, kept: int, wallclock):
        self.wallclock = wallclock
        self.transitions = collections.deque(maxlen=kept)
        self.counts = {"events": collections.Counter(), "transitions": collections.Counter(),
                       "entered": collections.Counter()}
        self.error: Optional[str] = None

    def event(self, name: str):
        self.counts["events"][name] += 1

    def record(self, before: Optional[Context], after: Context, event: str,
               action: Optional[str], reason: str) -> dict:
        """One change of state or of what the map says: kept, counted, logged."""
        p = plan(after)
        rec = {"at": round(self.wallclock(), 3),
               "from": before.state.value if before else None, "to": after.state.value,
               "event": event, "action": action, "reason": reason,
               "mode": p.mode, "spill_percent": p.spill}
        self.transitions.append(rec)
        if before is not None:
            self.counts["transitions"][(rec["from"], rec["to"])] += 1
            if before.state is not after.state:
                self.counts["entered"][rec["to"]] += 1
        log.info(json.dumps({"failover": "transition", **rec}))
        return rec

    def fail(self, message: str):
        """An error worth one log line per change, shown in the status until cleared."""
        if self.error != message:
            log.warning(json.dumps({"failover": "error", "error": message}))
        self.error = message


FORCED = {State.FORCED_LOCAL: "local", State.FORCED_REMOTE: "remote"}


def load_override(path: str) -> Optional[str]:
    """The operator's forced mode from before a restart, if any."""
    try:
        with open(path) as fh:
            mode = json.load(fh).get("mode")
        return mode if mode in ("local", "remote") else None
    except (OSError, ValueError, AttributeError):
        return None


def save_override(path: str, state: State):
    """Keep a forced mode (atomically), forget it otherwise; OSError to the caller."""
    forced = FORCED.get(state)
    if forced:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path + ".tmp", "w") as fh:
            json.dump({"mode": forced}, fh)
        os.replace(path + ".tmp", path)
    elif os.path.exists(path):
        os.unlink(path)
