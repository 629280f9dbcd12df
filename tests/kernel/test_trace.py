"""The trace reader on the real kernel: real connects, their events."""

import os
import threading
import time

import pytest

from agent.bpf.errors import DatapathError
from agent.bpf.trace import TraceReader, decode

from .node import Node, free_port, run_in

pytestmark = pytest.mark.kernel

VIP = ("198.18.40.1", 80)
CONNECTS = """
import os, socket
print(os.getpid(), flush=True)
for _ in range(N):
    try:
        socket.create_connection(ADDR, timeout=5).close()
    except OSError:
        pass
"""


@pytest.fixture(scope="module")
def node():
    n = Node("nm-trace").start(loader="inprocess")
    try:
        n.local = ("127.0.0.1", free_port())
        n.listen(*n.local)
        n.ctl.set_proxy(local="%s:%d" % n.local, mode="local")
        n.ctl.add_service("%s:%d" % VIP, 11, "redis", pair=False)
        n.ctl.enroll(n.cg("pod-a"))
        yield n
    finally:
        n.stop()


def connect(node, count, addr=VIP) -> int:
    """count connects from a process in pod-a; its pid."""
    code = f"N = {count}\nADDR = {tuple(addr)!r}\n" + CONNECTS
    return int(run_in(node.cg("pod-a"), code).split()[0])


def collect(reader, count, timeout=10):
    got = []
    for ev in reader.events(timeout=timeout, stop=lambda: len(got) >= count):
        got.append(ev)
    return got


def test_real_connects_produce_their_events(node):
    with TraceReader(node.settings) as reader:
        assert node.ctl.proxy()["trace"]                  # on while reading
        started = time.time()
        pid = connect(node, 3)
        events = collect(reader, 3)
    assert not node.ctl.proxy()["trace"]                  # back off on close
    assert len(events) == 3
    cgroup_id = os.stat(node.cg("pod-a")).st_ino
    for ev in events:
        assert ev.pid == pid and ev.tid == pid            # single-threaded client
        assert ev.comm.startswith("python")
        assert ev.cgroup_id == cgroup_id
        assert ev.original_dst == "198.18.40.1:80"
        assert ev.target_dst == "%s:%d" % node.local
        assert (ev.target, ev.reason, ev.service_id) == ("local", "local", 11)
        assert started - 1 <= ev.time <= time.time() + 1
        assert set(ev.as_dict()) >= {"pid", "cgroup_id", "original_dst", "reason"}
    assert len({ev.cookie for ev in events}) == 3         # three sockets
    assert [ev.ts_ns for ev in events] == sorted(ev.ts_ns for ev in events)


def test_fail_open_decisions_are_traced_too(node):
    node.ctl.set_proxy(mode="remote")                     # no remote pool: fail open
    try:
        with TraceReader(node.settings) as reader:
            connect(node, 1)
            [ev] = collect(reader, 1)
    finally:
        node.ctl.set_proxy(mode="local")
    assert (ev.target, ev.reason) == ("original", "failopen_no_remote")
    assert ev.target_dst == ev.original_dst == "198.18.40.1:80"


def test_events_stop_on_timeout_and_on_stop(node):
    with TraceReader(node.settings) as reader:
        t0 = time.monotonic()
        assert list(reader.events(timeout=0.3)) == []
        assert 0.25 <= time.monotonic() - t0 < 5
        done = threading.Event()
        threading.Timer(0.2, done.set).start()
        assert list(reader.events(stop=done)) == []       # no timeout: the event ends it
        assert done.is_set()


def test_backlog_is_skipped_unless_asked_for(node):
    node.ctl.set_proxy(trace=True)
    try:
        connect(node, 2)                                  # written with no reader
        with TraceReader(node.settings) as reader:
            assert list(reader.events(timeout=0.2)) == []
        connect(node, 2)
        with TraceReader(node.settings, backlog=True) as reader:
            assert len(collect(reader, 2, timeout=2)) == 2
        assert node.ctl.proxy()["trace"]                  # it was on: left on
    finally:
        node.ctl.set_proxy(trace=False)


def test_errors_are_clear(node, tmp_path):
    from agent.bpf.loader import Settings

    with pytest.raises(DatapathError, match="no trace buffer at .*datapath up"):
        TraceReader(Settings(pin_dir=str(tmp_path)))
    with pytest.raises(DatapathError, match="not this datapath's layout"):
        decode(b"\0" * 8)
