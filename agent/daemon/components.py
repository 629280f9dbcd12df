"""Pluggable parts of the agent (failover controller, pod enroller, ...).

A component has `start(agent)` and `stop()`, each plain or async. One that
runs blocking code (the Kubernetes client is synchronous) wraps it in
ThreadComponent: `run(stop_event)` on a daemon thread, stopped by setting
the event. A component that fails to start is logged and reported in
/stats; the agent keeps serving (the datapath fails open without it).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol

log = logging.getLogger("nodemesh.agent")


class Component(Protocol):
    def start(self, agent) -> Any: ...

    def stop(self) -> Any: ...


async def call(fn, *args):
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


@dataclass
class Running:
    component: Any
    name: str
    state: str = "starting"          # starting, running, failed, stopped
    error: Optional[str] = None

    def status(self) -> dict:
        return {"name": self.name, "state": self.state, "error": self.error}


class ThreadComponent:
    """A blocking `run(stop_event)` callable on its own daemon thread."""

    def __init__(self, name: str, factory: Callable[[Any], Any], join_timeout: float = 10.0):
        self.name, self.factory, self.join_timeout = name, factory, join_timeout
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.error: Optional[BaseException] = None

    def start(self, agent):
        target = self.factory(agent)

        def body():
            try:
                target.run(self._stop)
            except BaseException as exc:   # noqa: BLE001 - reported, not raised in a thread
                self.error = exc
                log.exception("component %s stopped with an error", self.name)

        self._thread = threading.Thread(target=body, name=self.name, daemon=True)
        self._thread.start()

    async def stop(self):
        self._stop.set()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join,
                                                             self.join_timeout)
