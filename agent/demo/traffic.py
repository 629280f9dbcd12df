"""The pods' clients (agent/demo/load.py processes) and what they report.

Each client prints one JSON line a second; a reader thread per client folds
the lines into totals per (protocol, pod), per phase, and the latest second
for the live view. The phase a line counts in is the one current when it
arrives (lines arrive within a second of the requests they count).
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections import Counter
from typing import Dict, List, Tuple

from .node import PY
from .settings import PROTOCOLS

COUNTS = ("ok", "failed", "retried", "reconnects")
MAX_ERRORS = 20


class Fleet:
    def __init__(self, node, settings):
        self.node, self.s = node, settings
        self.lock = threading.Lock()
        self.phase = "start"
        self.totals: Dict[Tuple[str, str], Counter] = {}
        self.phases: Dict[str, Dict[str, Counter]] = {}     # phase -> protocol -> counts
        self.backends: Dict[str, Counter] = {}       # phase -> http backend -> requests
        self.last: Dict[Tuple[str, str], dict] = {}
        self.finals: Dict[Tuple[str, str], dict] = {}
        self.errors: List[str] = []
        self.split_from = 0.0       # monotonic time from which HTTP backends count for a split
        self._threads: List[threading.Thread] = []
        self._names: List[str] = []

    def start(self, seconds: float) -> None:
        """One client per pod and protocol, bounded by `seconds` (stop() ends them sooner)."""
        for pod in self.s.pods:
            member = self.node.topo.members[pod]
            for i, proto in enumerate(PROTOCOLS):
                name = f"client-{pod}-{proto}"
                argv = [PY, "-m", "agent.demo.load", proto,
                        f"{self.s.vips[i]}:{self.s.service_ports[i]}", "--pod", pod,
                        "--seconds", f"{seconds:.1f}", "--rate", f"{self.s.rate:g}",
                        "--connection-age", f"{self.s.connection_age:g}"]
                proc = self.node.spawn(name, member, argv, stdout=subprocess.PIPE, text=True)
                key = (proto, pod)
                self.totals[key] = Counter()
                t = threading.Thread(target=self._read, args=(key, proc), daemon=True,
                                     name=name)
                t.start()
                self._threads.append(t)
                self._names.append(name)

    def set_phase(self, phase: str) -> None:
        with self.lock:
            self.phase = phase
            self.phases.setdefault(phase, {})

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM: each client finishes its request, reports, and exits."""
        for name in self._names:
            proc = self.node.procs.get(name)
            if proc is not None and proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for t in self._threads:
            t.join(timeout)

    def reported(self) -> bool:
        """Every client has sent its first one-second report."""
        with self.lock:
            return all(self.totals[k] for k in self.totals) and len(self.totals) == \
                len(self._names)

    def running(self) -> int:
        return sum(1 for n in self._names if self.node.procs[n].poll() is None)

    # -- reading -------------------------------------------------------------------------

    def _read(self, key, proc) -> None:
        for line in proc.stdout:
            try:
                data = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                if data.get("final"):
                    self.finals[key] = data
                else:
                    self._fold(key, data)

    def _fold(self, key, data) -> None:
        counts = Counter({k: data.get(k, 0) for k in COUNTS})
        self.totals[key].update(counts)
        self.phases.setdefault(self.phase, {}).setdefault(key[0], Counter()).update(counts)
        self.last[key] = data
        if key[0] == "http1" and time.monotonic() >= self.split_from:
            self.backends.setdefault(self.phase, Counter()).update(data.get("by_backend", {}))
        for e in data.get("errors", ()):
            if len(self.errors) < MAX_ERRORS:
                self.errors.append(f"{key[1]} {key[0]} ({self.phase}): {e}")

    # -- views --------------------------------------------------------------------------

    def second(self) -> Dict[Tuple[str, str], dict]:
        """The latest one-second report of each client (and forget it: shown once)."""
        with self.lock:
            out, self.last = self.last, {}
        return out

    def snapshot(self) -> dict:
        with self.lock:
            return {"totals": {k: Counter(v) for k, v in self.totals.items()},
                    "phases": {k: {p: Counter(c) for p, c in v.items()}
                               for k, v in self.phases.items()},
                    "backends": {k: Counter(v) for k, v in self.backends.items()},
                    "finals": dict(self.finals), "errors": list(self.errors)}
