"""Async tests on both loops, failing on unhandled loop exceptions and leaked tasks."""

from __future__ import annotations

import asyncio
import gc

import pytest

LOOPS = ("asyncio", "uvloop")


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class LoopRunner:
    """Runs a coroutine on a fresh loop; the test fails on what it leaves behind."""

    def __init__(self, kind: str):
        self.kind = kind
        self.errors = []

    def __call__(self, coro, timeout: float = 60.0):
        loop = new_loop(self.kind)
        loop.set_exception_handler(lambda lp, ctx: self.errors.append(ctx))
        asyncio.set_event_loop(loop)
        try:
            result = loop.run_until_complete(asyncio.wait_for(coro, timeout))
            leftover = [t for t in asyncio.all_tasks(loop) if not t.done()]
            # grpc.aio keeps a few internal tasks briefly after close; give them a moment
            if leftover:
                loop.run_until_complete(asyncio.wait(leftover, timeout=2.0))
            leaked = [t for t in asyncio.all_tasks(loop) if not t.done()
                      and "grpc" not in repr(t.get_coro())]
            assert not leaked, f"leaked tasks: {leaked}"
            return result
        finally:
            for t in asyncio.all_tasks(loop):
                t.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            asyncio.set_event_loop(None)
            gc.collect()
            bad = [e for e in self.errors if not _benign(e)]
            assert not bad, f"unhandled loop exceptions: {bad}"


def _benign(ctx) -> bool:
    msg = str(ctx.get("message", "")) + repr(ctx.get("exception", ""))
    # grpc.aio's own poller noise when a channel closes under a pending call
    return "grpc" in msg.lower() and "cancel" in msg.lower()


@pytest.fixture(params=LOOPS)
def run(request):
    return LoopRunner(request.param)


@pytest.fixture
def run_default():
    return LoopRunner("asyncio")
