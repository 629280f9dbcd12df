"""A worker process: `python -m agent.proxy.worker_main --fd N ...`, started by the supervisor.

It owns one end of a socketpair to the supervisor and serves:
  update  -> apply to its ConfigStore, swap the snapshot; reply with the outcome
  serve   -> open the listening sockets (after the first full configuration)
  stats / clusters -> its counters / cluster state
  drain   -> stop accepting, close at request boundaries, exit when done
If the supervisor goes away (channel EOF) the worker drains and exits too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sys

from .channel import Channel
from .config_apply import ConfigApplier
from .settings import ProxySettings
from .worker import Worker

log = logging.getLogger("nodemesh.proxy")


class WorkerProcess:
    def __init__(self, worker: Worker, applier: ConfigApplier):
        self.worker = worker
        self.applier = applier
        self.done = worker.loop.create_future()
        self.channel = None
        self.serving = False

    def on_message(self, channel, msg):
        kind, msg_id, payload = msg
        handler = getattr(self, f"on_{kind}", None)
        if handler is None:
            channel.reply(msg_id, {"error": f"unknown message {kind!r}"})
            return
        result = handler(payload)
        if asyncio.iscoroutine(result):
            task = self.worker.loop.create_task(result)
            task.add_done_callback(lambda t: self._answer(msg_id, t))
        elif msg_id:
            channel.reply(msg_id, result)

    def _answer(self, msg_id, task):
        if msg_id and not self.channel.closed and not task.cancelled():
            exc = task.exception()
            self.channel.reply(msg_id, {"error": str(exc)} if exc else task.result())

    def on_update(self, encoded):
        result = self.applier.apply(encoded)
        problems = []
        if result.snapshot is not self.worker.snapshot:     # changed, or versions only
            problems = self.worker.apply_snapshot(result.snapshot, result.delta)
        return {"version": encoded["version"], "type_url": encoded["type_url"],
                "accepted": list(result.accepted), "errors": [str(e) for e in result.errors],
                "problems": problems}

    async def on_serve(self, _):
        if not self.serving:
            self.serving = True
            await self.worker.start()
        return self.worker.listeners.describe()

    def on_stats(self, _):
        return self.worker.export()

    def on_clusters(self, _):
        return self.worker.clusters_state()

    def on_config_dump(self, _):
        return self.applier.store.dump()

    async def on_drain(self, deadline):
        await self.drain(float(deadline))
        return {"draining": True}

    async def drain(self, deadline: float):
        def drained(cut):
            if self.channel is not None and not self.channel.closed:
                self.channel.send("drained", {"cut": cut, "index": self.worker.index})
            if not self.done.done():
                self.done.set_result(cut)

        self.worker.on_drained = drained
        if not self.serving:                  # nothing was ever served: nothing to drain
            self.serving = True
            await self.worker.start()
        await self.worker.drain(deadline)

    def on_stop(self, _):
        if not self.done.done():
            self.done.set_result(0)
        return {"stopping": True}

    def on_lost(self, channel):
        """The supervisor is gone: finish what is in flight and exit."""
        if not self.done.done():
            self.worker.loop.create_task(self.drain(self.worker.settings.drain_deadline))


async def run(args) -> int:
    loop = asyncio.get_running_loop()
    settings = ProxySettings.from_dict(json.loads(args.settings))
    worker = Worker(settings, index=args.index, workers=args.workers, loop=loop)
    proc = WorkerProcess(worker, ConfigApplier(json.loads(args.remote_ports)))
    sock = socket.socket(fileno=args.fd)
    _, proc.channel = await loop.create_unix_connection(
        lambda: Channel(proc.on_message, proc.on_lost), sock=sock)
    # SIGTERM to a worker alone (e.g. from a process manager): drain like the supervisor
    loop.add_signal_handler(signal.SIGTERM,
                            lambda: loop.create_task(proc.drain(settings.drain_deadline)))
    loop.add_signal_handler(signal.SIGINT, lambda: None)    # the supervisor decides
    proc.channel.send("hello", {"index": args.index, "pid": os.getpid()})
    await proc.done
    await worker.stop()
    proc.channel.close()
    return 0


def raise_fd_limit() -> None:
    """Serve as many connections as the hard limit allows (the soft default is often 1024)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="nodemesh-proxy-worker")
    p.add_argument("--fd", type=int, required=True)
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--workers", type=int, required=True)
    p.add_argument("--settings", required=True, help="ProxySettings as JSON")
    p.add_argument("--remote-ports", default="{}", help="nodemesh.remote_ports as JSON")
    args = p.parse_args(argv)
    logging.basicConfig(level=os.environ.get("NODEMESH_LOG_LEVEL", "WARNING"),
                        format=f"%(asctime)s worker[{args.index}] %(levelname)s %(message)s")
    raise_fd_limit()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
