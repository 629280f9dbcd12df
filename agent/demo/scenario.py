"""`nodemesh demo`: a whole node at work, its failures, and nothing left behind.

    summary = run(DemoSettings(duration=40), output="text")

Phases, while two pods send Redis, Thrift, Dubbo and HTTP requests to mesh
VIPs: 1 steady on the local proxy; 2 the HTTP route's weights rewritten in
xds-serve's directory (100/0 -> 50/50 -> 0/100); 3 the local proxy killed
with SIGKILL (the kernel sends new connections to the remote proxy); 4 it
restarts and traffic returns after the controller's hysteresis; 5 `nodemesh
drain`, the old proxy exits after its requests in flight, a new one takes
over. Then the summary. SIGINT/SIGTERM at any point take the node down.
"""

from __future__ import annotations

import concurrent.futures
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, List, Optional

from . import display, preflight
from .node import DemoNode
from .paths import Paths
from .settings import PROTOCOLS, DemoSettings
from .traffic import Fleet

MIN_PHASE_S = 3.0       # each phase shows at least three one-second lines
SETTLE_S = 2.0          # after a phase's action: lines that show its effect


@dataclass
class Phase:
    name: str                            # 15 characters at most (the live view's column)
    share: float                         # of --duration
    action: Optional[Callable[[], str]]  # returns what happened, for the event line


class Interrupted(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: stop, take the node down, exit 130."""


def run(settings: DemoSettings, output: str = "text", out=None) -> dict:
    """Run the demo; return the summary (also printed: a table, or JSON with -o json)."""
    out = out or sys.stdout          # the current one: a default would be bound at import
    say = (lambda text: print(text, file=out, flush=True)) if output == "text" else \
        (lambda text: None)
    node = DemoNode(settings)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    # Ctrl-C raises even where SIGINT was inherited ignored (`nodemesh demo &` in a script)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        say("checking the node (nodemesh doctor) ...")
        preflight.check(settings, node.pin_dir, "/tmp")
        try:
            node.build(say)
            summary = Scenario(node, settings, say).play()
        finally:
            _shielded(node.close)
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    summary["node"] = node.names()
    summary["leftovers"] = node.leftovers()
    summary["ok"], summary["problems"] = judge(summary)
    if output == "json":
        import json

        print(json.dumps(summary, indent=2), file=out, flush=True)
    else:
        say(display.summary_text(summary))
    return summary


def _interrupt(signum, frame):
    raise Interrupted()


def _shielded(fn):
    """Run fn with SIGINT/SIGTERM held off: a second Ctrl-C must not stop the cleanup."""
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return fn()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


class Scenario:
    def __init__(self, node: DemoNode, settings: DemoSettings, say):
        self.node, self.s, self.say = node, settings, say
        self.fleet = Fleet(node, settings)
        self.records: List[dict] = []
        self.t0 = 0.0

    def phases(self) -> List[Phase]:
        _, half, full = self.s.splits
        return [
            Phase("1 steady", 0.2, None),
            Phase(f"2 route {half[0]}/{half[1]}", 0.1, lambda: self._split(half)),
            Phase(f"2 route {full[0]}/{full[1]}", 0.1, lambda: self._split(full)),
            Phase("3 kill local", 0.15, self._kill),
            Phase("4 restart", 0.2, self._restart),
            Phase("5 drain+upgrade", 0.25, self._drain_and_upgrade),
        ]

    # -- the play --------------------------------------------------------------------------

    def play(self) -> dict:
        phases = self.phases()
        budget = 2 * self.s.duration + len(phases) * (self.s.step_timeout + MIN_PHASE_S)
        self.fleet.start(seconds=budget)
        self.node.wait("every client's first report", self.fleet.reported)
        self.paths = Paths(self.node)
        self.t0 = time.monotonic()
        self.next_tick = self.t0 + 1.0
        self.say(display.LEGEND)
        self.say(display.header())
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="demo-step") as pool:
            try:
                for phase in phases:
                    self._phase(phase, pool)
            except BaseException:
                self.node.stopping = True        # the step thread stops waiting; pool joins it
                raise
        self.fleet.stop()
        return self.summary()

    def _phase(self, phase: Phase, pool) -> None:
        self.fleet.set_phase(phase.name)
        start = time.monotonic()
        record = {"name": phase.name, "started_s": round(start - self.t0, 1)}
        self.records.append(record)
        step = pool.submit(phase.action) if phase.action else None
        dwell = max(MIN_PHASE_S, phase.share * self.s.duration)
        while True:
            now = time.monotonic()
            if step is not None and step.done():
                record["event"] = step.result()            # raises what the step raised
                self.say(display.event(now - self.t0, record["event"]))
                step, dwell = None, max(dwell, now - start + SETTLE_S)
            if step is None and now - start >= dwell:
                break
            time.sleep(max(0.0, min(self.next_tick, start + dwell) - now, 0.05 if step else 0))
            if time.monotonic() >= self.next_tick:
                self.next_tick += 1.0
                self._tick(phase.name)
        record["seconds"] = round(time.monotonic() - start, 1)

    def _tick(self, phase: str) -> None:
        second, paths = self.fleet.second(), self.paths.read()
        if self.fleet.running() == 0:
            raise RuntimeError("every client has stopped; see their logs")
        self.say(display.line(time.monotonic() - self.t0, phase, second, paths, self.s.pods))

    # -- the actions (on the step thread) ------------------------------------------------

    def _split(self, weights) -> str:
        """Responses count for the new split from one report after the local proxy has
        the new route: a report spans a second, and the push takes a few hundred ms."""
        self.fleet.split_from = float("inf")
        started = time.monotonic()
        before = self.node.config_versions()
        self.node.set_split(weights)
        self.node.wait("the new route at the local proxy",
                       lambda: self.node.config_versions() != before)
        applied = time.monotonic()
        self.fleet.split_from = applied + 1.0
        return (f"routes.yaml: http v1/v2 = {weights[0]}/{weights[1]}; at the local proxy "
                f"{applied - started:.1f} s later")

    def _kill(self) -> str:
        started = time.monotonic()
        self.node.kill_local_proxy()
        self.node.wait_state("remote")
        return (f"local proxy SIGKILLed; kernel: no listener -> remote; controller: remote "
                f"after {time.monotonic() - started:.1f} s")

    def _restart(self) -> str:
        started = time.monotonic()
        self.node.start_local_proxy()
        ready = time.monotonic() - started
        self.node.wait_state("local")
        return (f"local proxy restarted, ready in {ready:.1f} s; back on local after "
                f"{time.monotonic() - started:.1f} s (hysteresis)")

    def _drain_and_upgrade(self) -> str:
        started = time.monotonic()
        code = self.node.drain()
        old_gone = time.monotonic() - started
        self.node.start_local_proxy()
        self.node.wait_state("local")
        return (f"nodemesh drain: old proxy exited ({code}) after {old_gone:.1f} s; "
                f"new one on local after {time.monotonic() - started:.1f} s")

    # -- the summary -------------------------------------------------------------------------

    def summary(self) -> dict:
        snap = self.fleet.snapshot()
        protocols = {p: {pod: _counts(snap["totals"].get((p, pod), {})) for pod in self.s.pods}
                     for p in PROTOCOLS}
        phases = []
        for r in self.records:
            per = snap["phases"].get(r["name"], {})
            total = sum(per.values(), Counter())
            phases.append({**r, **_counts(total),
                           "by_protocol": {p: _counts(per.get(p, {})) for p in PROTOCOLS}})
        split = {}
        for r in self.records:
            if r["name"].startswith(("1 ", "2 ")):
                weights = r["name"].split()[-1] if r["name"].startswith("2 ") else \
                    "/".join(map(str, self.s.splits[0]))
                split[weights] = dict(snap["backends"].get(r["name"], {}))
        try:
            transitions = [f"{t['from']}->{t['to']} ({t['event']})"
                           for t in self.node.failover()["transitions"] if t["from"]]
        except Exception as exc:      # noqa: BLE001 - the summary still stands
            transitions = [f"unavailable: {exc}"]
        return {"duration_s": round(time.monotonic() - self.t0, 1), "protocols": protocols,
                "phases": phases, "split": split,
                "paths": {"requests": dict(self.paths.requests),
                          "connections": self.paths.connections(),
                          "kernel": self.paths.kernel()},
                "failover_transitions": transitions, "errors": snap["errors"]}


def _counts(c) -> dict:
    return {"ok": c.get("ok", 0), "failed": c.get("failed", 0), "retried": c.get("retried", 0)}


def judge(s: dict):
    """(ok, problems): what a reader must know went wrong."""
    problems = []
    for proto, pods in s["protocols"].items():
        for pod, c in pods.items():
            if c["ok"] == 0:
                problems.append(f"{proto} from {pod}: no request served")
    for ph in s["phases"]:
        if ph["failed"]:
            problems.append(f"phase {ph['name']}: {ph['failed']} failed requests")
    first, *_, last = list(s["split"].values()) or [{}, {}]
    if not (first.get("http-v1", 0) > 0 and last.get("http-v2", 0) > last.get("http-v1", 0)):
        problems.append(f"the HTTP split did not move: {s['split']}")
    if s["leftovers"]:
        problems.append(f"left behind: {', '.join(s['leftovers'])}")
    return not problems, problems
