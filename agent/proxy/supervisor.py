"""`nodemesh proxy`'s parent process: workers, configuration relay, drain, admin API.

The supervisor reads one ConfigSource (a static bootstrap or xDS) and relays
each update, serialized, to every worker over its socketpair. It compiles
nothing itself: every source has validated what it yields (the agent behind
the relay, the source's own store towards a control plane, the bootstrap at
load) and each worker compiles what it serves, so the supervisor keeps the
bytes and versions (RelayedStore: replays to a restarted worker), records
each worker's apply outcome (a worker that rejects shows in /stats and
/ready) and asks worker 0 for /config_dump. Workers open their listening sockets once the
first complete configuration is in ("serve"): the datapath checks that the
local proxy listens before it steers anything to it, so a proxy without
configuration must not listen. A crashed worker is started again (with
back-off) and gets the accepted state replayed. SIGTERM or POST /drain:
workers stop accepting, close client connections at request boundaries and
exit; the supervisor exits when they have.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, List, Optional

from .channel import Channel, ChannelClosed
from .config_apply import RelayedStore, encode_update
from .settings import ProxySettings

log = logging.getLogger("nodemesh.proxy")

WARMING_GRACE = 5.0        # serve anyway this long after the first listeners if RDS/EDS lag
MAX_BACKOFF = 30.0
HEALTHY_RUN = 60.0         # a worker up this long resets its restart back-off
APPLY_TIMEOUT = 120.0      # a worker's reply to one update (50,000 services compile in ~10 s)
DUMP_TIMEOUT = 30.0


class WorkerHandle:
    def __init__(self, index: int):
        self.index = index
        self.proc: Optional[subprocess.Popen] = None
        self.channel: Optional[Channel] = None
        self.served = False
        self.listening: dict = {}
        self.started = 0.0
        self.restarts = 0
        self.backoff = 0.0
        self.restart_at: Optional[float] = None
        self.last_apply: dict = {}
        self.problems: Optional[list] = None   # latest reply's listeners that cannot run

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and self.channel is not None \
            and not self.channel.closed


class Supervisor:
    def __init__(self, settings: ProxySettings, source, remote_ports=None, store=None):
        """store: what the supervisor keeps of the relayed state (default: bytes and
        versions, RelayedStore); a ConfigStore there compiles every update once more."""
        self.settings = settings.validate()
        self.source = source
        self.remote_ports = dict(remote_ports or {})
        self.store = store or RelayedStore(dump=self._config_dump, remote_ports=self.remote_ports)
        self.workers: List[WorkerHandle] = []
        self.versions: Dict[str, str] = {}
        self.serving = False
        self.draining = False
        self.drain_cut = 0
        self.started = time.time()
        self.finished: Optional[asyncio.Future] = None
        self._rejected: List[str] = []
        self._warm_timer = None
        self._admin = None

    # -- main ---------------------------------------------------------------------------

    async def run(self) -> int:
        from agent.admin import AdminServer

        from .admin_api import register

        loop = asyncio.get_running_loop()
        self.finished = loop.create_future()
        self._admin = AdminServer(self.settings.resolved_admin_path())
        register(self._admin, self)
        await self._admin.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: loop.create_task(
                self.drain(self.settings.drain_deadline)))
        n = self.settings.resolved_workers()
        self.workers = [WorkerHandle(i) for i in range(n)]
        for handle in self.workers:
            await self._spawn(handle)
        relay = loop.create_task(self._relay())
        monitor = loop.create_task(self._monitor())
        try:
            return await self.finished
        finally:
            relay.cancel()
            monitor.cancel()
            for handle in self.workers:
                self._kill(handle)
            await self._admin.close()

    # -- workers ------------------------------------------------------------------------

    async def _spawn(self, handle: WorkerHandle) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        args = [sys.executable, "-m", "agent.proxy.worker_main", "--fd", str(child.fileno()),
                "--index", str(handle.index), "--workers", str(len(self.workers)),
                "--settings", json.dumps(self.settings.to_dict()),
                "--remote-ports", json.dumps(self.remote_ports)]
        handle.proc = subprocess.Popen(args, pass_fds=[child.fileno()])
        child.close()
        handle.started = time.monotonic()
        handle.served = False
        handle.last_apply = {}
        handle.problems = None
        loop = asyncio.get_running_loop()
        _, handle.channel = await loop.create_unix_connection(
            lambda: Channel(self._on_message, lambda ch: None), sock=parent)
        self._replay(handle)
        if self.serving:
            loop.create_task(self._serve(handle))

    def _replay(self, handle: WorkerHandle) -> None:
        """The accepted state, one full update per type, dependencies first (as relayed
        bytes: nothing decoded or encoded again)."""
        from agent.config import resources

        order = (resources.CLUSTER, resources.ENDPOINT, resources.ROUTE, resources.META_ROUTE,
                 resources.LISTENER)
        for type_url in order:
            raw = self.store.raw(type_url)
            if not raw and type_url not in self.versions:
                continue
            self._send_update(handle, {"type_url": type_url,
                                       "version": self.versions.get(type_url, ""),
                                       "removed": (), "replace": True, "resources": raw})

    def _send_update(self, handle: WorkerHandle, encoded: dict) -> None:
        """Relay one update; the worker's outcome lands in handle.last_apply. Sent from a
        task: tasks run in creation order, so updates (and the serve after them) keep
        their order on the channel."""
        asyncio.get_running_loop().create_task(self._apply_on(handle, handle.channel, encoded))

    async def _apply_on(self, handle: WorkerHandle, channel: Channel, encoded: dict) -> None:
        try:
            outcome = await channel.request("update", encoded, timeout=APPLY_TIMEOUT)
        except ChannelClosed:
            return                      # the monitor restarts it and replays
        except asyncio.TimeoutError:
            outcome = {"errors": [f"no reply in {APPLY_TIMEOUT:.0f}s"], "failed": True}
        if not isinstance(outcome, dict):
            outcome = {"errors": [f"unexpected reply {outcome!r:.80}"], "failed": True}
        self._record(handle, encoded, outcome)
        await self._serve_when_warm()

    def _record(self, handle: WorkerHandle, encoded: dict, outcome: dict) -> None:
        from agent.config import resources

        type_url = encoded["type_url"]
        handle.last_apply[type_url] = {"version": encoded["version"], **outcome}
        errors = [f"worker {handle.index}: {e}" for e in outcome.get("errors") or ()]
        if errors:                      # rejected by the worker: kept for /stats
            log.warning("%s %s: %s", type_url, encoded["version"], "; ".join(errors[:5]))
            self._rejected = (self._rejected + errors)[-20:]
        # A changed configuration's reply lists every listener that cannot run (a
        # listener before its route table): the worker's state until its next change.
        if outcome.get("accepted") or encoded["removed"]:
            handle.problems = list(outcome.get("problems") or ())
        if handle.problems is not None and not handle.last_apply.get(resources.LISTENER):
            handle.problems = None      # no listener yet: not warm either
        if handle.problems and self.serving:
            log.warning("worker %d: %d listeners cannot run: %s", handle.index,
                        len(handle.problems), handle.problems[0])

    @property
    def config_errors(self) -> List[str]:
        """Rejections (last 20) and the listeners a worker cannot run now (first 5 each)."""
        now = [f"worker {h.index}: {p}" for h in self.workers for p in (h.problems or ())[:5]]
        return self._rejected + now

    def _on_message(self, channel: Channel, msg) -> None:
        kind, _, payload = msg
        if kind == "drained":
            self.drain_cut += int(payload.get("cut", 0))

    async def _serve(self, handle: WorkerHandle) -> None:
        try:
            handle.listening = await handle.channel.request("serve", timeout=30)
            handle.served = True
        except (ChannelClosed, asyncio.TimeoutError) as exc:
            log.error("worker %d did not start serving: %s", handle.index, exc)

    async def _monitor(self) -> None:
        """Restart crashed workers (not while draining); finish when a drain is over."""
        while True:
            await asyncio.sleep(0.2)
            now = time.monotonic()
            for handle in self.workers:
                if handle.proc is None or handle.proc.poll() is None:
                    continue
                if self.draining:
                    continue
                if handle.restart_at is None:
                    code = handle.proc.returncode
                    lived = now - handle.started
                    handle.backoff = self.settings.restart_backoff if lived > HEALTHY_RUN or \
                        not handle.backoff else min(handle.backoff * 2, MAX_BACKOFF)
                    handle.restart_at = now + handle.backoff
                    handle.served = False
                    log.error("worker %d (pid %d) exited with %s; restarting in %.1fs",
                              handle.index, handle.proc.pid, code, handle.backoff)
                elif now >= handle.restart_at:
                    handle.restart_at = None
                    handle.restarts += 1
                    await self._spawn(handle)
            if self.draining and all(h.proc is None or h.proc.poll() is not None
                                     for h in self.workers):
                if not self.finished.done():
                    self.finished.set_result(0)

    def _kill(self, handle: WorkerHandle) -> None:
        if handle.proc is not None and handle.proc.poll() is None:
            handle.proc.kill()
            handle.proc.wait(5)
        if handle.channel is not None:
            handle.channel.close()

    # -- configuration ------------------------------------------------------------------

    async def _relay(self) -> None:
        from agent.config import resources

        loop = asyncio.get_running_loop()
        async for update in self.source.updates():
            self.apply(update)
            if self.serving:
                continue
            if update.type_url == resources.LISTENER and self._warm_timer is None:
                self._warm_timer = loop.call_later(
                    WARMING_GRACE, lambda: loop.create_task(self._start_serving()))
            await self._serve_when_warm()

    def _warm(self) -> bool:
        """Serve once a listener came and nothing is missing: no reference unresolved in
        our store (a compiling one), and every live worker has applied listeners and its
        latest reply names no listener that cannot run (a relay may send a listener
        before its route table: Envoy's CDS, EDS, LDS, RDS order)."""
        if self._warm_timer is None or any(self.store.missing().values()):
            return False
        live = [h for h in self.workers if h.alive]
        return bool(live) and all(h.problems is not None and not h.problems for h in live)

    async def _serve_when_warm(self) -> None:
        if not self.serving and self._warm():
            self._warm_timer.cancel()
            await self._start_serving()

    def apply(self, update) -> None:
        """Keep the bytes (replays), relay to every worker; they compile and report."""
        encoded = encode_update(update)
        result = self.store.update(update.type_url, encoded["resources"], update.version,
                                   removed=update.removed, replace=update.replace)
        self.versions[update.type_url] = update.version
        for err in result.errors:
            log.warning("configuration rejected: %s", err)
        if result.errors:
            self._rejected = (self._rejected + [str(e) for e in result.errors])[-20:]
        for handle in self.workers:
            if handle.alive:
                self._send_update(handle, encoded)

    async def _config_dump(self) -> dict:
        """/config_dump from the first worker that answers: what it compiled and serves.
        With none alive, the relayed bytes compiled here on demand."""
        for handle in self.workers:
            if handle.alive:
                try:
                    dump = await handle.channel.request("config_dump", timeout=DUMP_TIMEOUT)
                except (ChannelClosed, asyncio.TimeoutError):
                    continue
                if isinstance(dump, dict) and "error" not in dump:
                    return dump
        return self.store.compiled().dump()

    async def _start_serving(self) -> None:
        if self.serving or self.draining:
            return
        self.serving = True
        await asyncio.gather(*(self._serve(h) for h in self.workers if h.alive))

    # -- drain --------------------------------------------------------------------------

    async def drain(self, deadline: float) -> None:
        if self.draining:
            return
        self.draining = True
        log.warning("draining: deadline %.1fs", deadline)
        for handle in self.workers:
            if handle.alive:
                try:
                    handle.channel.send("drain", deadline)
                except ChannelClosed:
                    pass
        asyncio.get_running_loop().call_later(deadline + 5.0, self._force_end)

    def _force_end(self) -> None:
        for handle in self.workers:
            self._kill(handle)
        if self.finished is not None and not self.finished.done():
            self.finished.set_result(0)

    # -- reports (admin API) ------------------------------------------------------------

    def ready(self) -> tuple:
        if self.draining:
            return False, "draining"
        if not self.serving:
            return False, "waiting for configuration"
        for h in self.workers:
            if not h.alive or not h.served:
                return False, f"worker {h.index} not serving"
            errors = h.listening.get("errors") if isinstance(h.listening, dict) else None
            if errors:
                return False, f"worker {h.index}: cannot listen: {'; '.join(errors.values())}"
            if any(o.get("failed") for o in h.last_apply.values()):
                return False, f"worker {h.index}: no reply to a configuration update"
        return True, "ok"

    async def gather(self, kind: str, timeout: float = 2.0) -> Dict[int, dict]:
        live = [h for h in self.workers if h.alive]
        results = await asyncio.gather(*(h.channel.request(kind, timeout=timeout) for h in live),
                                       return_exceptions=True)
        return {h.index: r for h, r in zip(live, results) if not isinstance(r, BaseException)}
