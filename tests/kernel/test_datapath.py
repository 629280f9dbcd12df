"""The kernel datapath on the real kernel: steering, records, sk_msg, failover."""

import os
import signal

import pytest

from agent.bpf.loader import Datapath
from agent.bpf.sources import PROGRAMS

from .node import Held, Node, dial, free_port, run_in

pytestmark = pytest.mark.kernel

VIP = ("198.18.10.1", 80)


@pytest.fixture(scope="module")
def node():
    n = Node("nm-kt").start(loader="subprocess")
    try:
        n.local = ("127.0.0.1", free_port("127.0.0.1"))
        n.remote_port = free_port("127.0.0.2")
        n.remote = ("127.0.0.2", n.remote_port)
        n.local_listener = n.listen(*n.local)
        n.remote_listener = n.listen(*n.remote)
        n.ctl.set_proxy(local="%s:%d" % n.local, remote="127.0.0.2", mode="local", spill=0)
        n.ctl.add_service("%s:%d" % VIP, 1, "http1", remote_port=n.remote_port)
        n.ctl.enroll(n.cg("pod-a"))
        n.ctl.enroll(n.cg("pod-b"))
        yield n
    finally:
        n.stop()


@pytest.fixture
def counters(node):
    """Counter deltas over one test."""
    node.settle()
    before = node.ctl.counters()

    def delta():
        after = node.ctl.counters()
        return {k: after[k] - before[k] for k in after if after[k] != before[k]}
    return delta


def test_loader_was_killed_and_datapath_works_without_it(node, counters):
    assert node.loader_exit == -signal.SIGKILL
    [seen] = dial(node, "pod-a", VIP)
    assert seen["server"] == "%s:%d" % node.local
    assert counters()["local"] == 1


def test_redirect_records_original_destination_and_pod(node, counters):
    with Held(node, "pod-a", VIP) as conn:
        # the listener saw the client; the record for that address names the VIP and pod
        rec = node.ctl.accept_record(*conn.client, delete=False)
        assert rec == {"original_dst": "198.18.10.1:80", "service_id": 1,
                       "cgroup_id": os.stat(node.cg("pod-a")).st_ino, "target": "local"}
    # the record outlives the client's socket until the proxy reads it
    # (tests/kernel/test_accept_records.py: a client gone before accept)
    assert node.ctl.accept_record(*conn.client)["service_id"] == 1
    assert node.ctl.accept_record(*conn.client) is None
    assert counters()["record_added"] == 1


def test_getpeername_returns_the_vip(node, counters):
    [seen] = dial(node, "pod-b", VIP)
    assert seen["peername"] == "198.18.10.1:80"
    assert counters()["peername_restored"] >= 1


def test_sk_msg_pairs_and_redirects(node, counters):
    [seen] = dial(node, "pod-a", VIP, send=b"x" * 100_000)
    assert seen["echo_ok"]
    d = counters()
    assert d["sockhash_added"] == 2          # the app's socket and the proxy's
    assert d["msg_redirected"] >= 2
    assert d["msg_redirected_bytes"] >= 200_000


def test_service_without_pairing_skips_the_sockhash(node, counters):
    node.ctl.add_service("198.18.10.3:80", 3, "http1", remote_port=node.remote_port, pair=False)
    try:
        [seen] = dial(node, "pod-a", ("198.18.10.3", 80), send=b"y" * 10_000)
        with Held(node, "pod-a", ("198.18.10.3", 80)) as conn:
            assert node.ctl.accept_record(*conn.client)["service_id"] == 3
    finally:
        node.ctl.del_service("198.18.10.3:80")
    assert seen["echo_ok"] and seen["server"] == "%s:%d" % node.local
    assert seen["peername"] == "198.18.10.3:80"
    d = counters()
    assert d["local"] == 2 and d["record_added"] == 2 and d["closed"] == 2
    assert "sockhash_added" not in d and "msg_redirected" not in d


def test_direct_connection_to_the_proxy_is_not_paired(node, counters):
    # an enrolled pod dialling the proxy's own address: nothing to steer, and
    # the proxy's accepted end has no paired client: no psock on either end
    [seen] = dial(node, "pod-a", node.local, send=b"z" * 1000)
    assert seen["echo_ok"] and seen["peername"] == "%s:%d" % node.local
    assert counters() == {"not_service": 1}


@pytest.mark.slow
def test_one_gib_both_directions_is_byte_exact(node, counters):
    code = """
        import hashlib, socket, threading
        s = socket.create_connection(("198.18.10.1", 80))
        greeting = b""
        while not greeting.endswith(b"\\n"):
            greeting += s.recv(1)
        total, block = 1 << 30, 1 << 20
        seed = hashlib.sha256(b"nodemesh").digest()
        chunks = [hashlib.sha256(seed + bytes([i])).digest() * (block // 32) for i in range(8)]
        sent_hash, recv_hash = hashlib.blake2b(), hashlib.blake2b()
        def sender():
            for i in range(total // block):
                sent_hash.update(chunks[i % 8])
                s.sendall(chunks[i % 8])
            s.shutdown(socket.SHUT_WR)
        t = threading.Thread(target=sender); t.start()
        got = 0
        buf = bytearray(1 << 20)
        while True:
            n = s.recv_into(buf)
            if not n:
                break
            recv_hash.update(memoryview(buf)[:n])
            got += n
        t.join()
        print(got, sent_hash.hexdigest() == recv_hash.hexdigest())
    """
    out = run_in(node.cg("pod-a"), code, timeout=300).split()
    assert out == [str(1 << 30), "True"]
    assert counters()["msg_redirected_bytes"] >= 2 * (1 << 30)


def test_non_enrolled_cgroup_is_untouched(node, counters):
    [seen] = dial(node, "other", VIP)
    assert seen["error"] in ("ENETUNREACH", "EHOSTUNREACH")   # the unreachable route
    assert counters() == {"not_enrolled": 1}


def test_not_a_mesh_service_is_untouched(node, counters):
    [seen] = dial(node, "pod-a", ("198.18.10.2", 80))
    assert seen["error"] in ("ENETUNREACH", "EHOSTUNREACH")
    assert counters() == {"not_service": 1}


def test_local_listener_gone_next_connect_goes_remote(node, counters):
    node.local_listener.stop()
    try:
        seen = dial(node, "pod-a", VIP, count=20)
        assert all(s.get("server") == "%s:%d" % node.remote for s in seen), seen
        assert counters()["remote_no_listener"] == 20
    finally:
        node.local_listener = node.listen(*node.local)
    [seen] = dial(node, "pod-a", VIP)
    assert seen["server"] == "%s:%d" % node.local


@pytest.mark.parametrize("mode,reason", [("remote", "remote_mode"), ("bypass", "bypass_mode")])
def test_modes(node, counters, mode, reason):
    node.ctl.set_proxy(mode=mode)
    try:
        [seen] = dial(node, "pod-a", VIP)
    finally:
        node.ctl.set_proxy(mode="local")
    if mode == "remote":
        assert seen["server"] == "%s:%d" % node.remote
        assert seen["peername"] == "198.18.10.1:80"
    else:
        assert seen["error"] in ("ENETUNREACH", "EHOSTUNREACH")
    assert counters()[reason] == 1


def test_bypass_reaches_a_reachable_original_destination(node, counters):
    orig = ("127.0.0.5", free_port("127.0.0.5"))
    node.listen(*orig, cgroup="other")
    node.ctl.add_service("%s:%d" % orig, 2, "redis", remote_port=node.remote_port)
    try:
        [seen] = dial(node, "pod-a", orig)
        assert seen["server"] == "%s:%d" % node.local
        node.ctl.set_proxy(mode="bypass")
        [seen] = dial(node, "pod-a", orig)
        assert seen["server"] == "%s:%d" % orig
    finally:
        node.ctl.set_proxy(mode="local")
        node.ctl.del_service("%s:%d" % orig)


def test_no_remote_configured_fails_open(node, counters):
    node.ctl.set_proxy(mode="remote", remote="")
    try:
        [seen] = dial(node, "pod-a", VIP)
    finally:
        node.ctl.set_proxy(mode="local", remote="127.0.0.2")
    assert seen["error"] in ("ENETUNREACH", "EHOSTUNREACH")
    assert counters()["failopen_no_remote"] == 1


def test_spill_share_is_statistically_right(node, counters):
    node.ctl.set_proxy(spill=30)
    try:
        code = """
            import socket
            for _ in range(2000):
                s = socket.create_connection(("198.18.10.1", 80), timeout=5)
                s.close()
        """
        run_in(node.cg("pod-b"), code, timeout=120)
    finally:
        node.ctl.set_proxy(spill=0)
    d = counters()
    spilled, local = d.get("remote_spill", 0), d.get("local", 0)
    assert spilled + local == 2000
    # binomial(2000, 0.3): sd ~ 20.5; 5 sd either side
    assert 600 - 103 <= spilled <= 600 + 103, spilled


def test_per_pod_spill_override(node, counters):
    node.ctl.enroll(node.cg("pod-b"), spill=100)
    try:
        seen = dial(node, "pod-b", VIP, count=10)
        assert all(s["server"] == "%s:%d" % node.remote for s in seen)
        seen = dial(node, "pod-a", VIP, count=10)
        assert all(s["server"] == "%s:%d" % node.local for s in seen)
    finally:
        node.ctl.enroll(node.cg("pod-b"))


def test_hostile_map_contents_fail_open_and_count(node, counters):
    m = node.ctl.map("proxy")
    cfg = m.get(0)
    saved = bytes(__import__("agent.bpf.layout", fromlist=["ffi"]).ffi.buffer(cfg))
    cfg.mode = 250
    m.set(0, cfg)
    try:
        [seen] = dial(node, "pod-a", VIP)
    finally:
        from agent.bpf.layout import ffi
        restored = ffi.new("struct nm_proxy_config *")
        ffi.memmove(restored, saved, len(saved))
        m.set(0, restored)
    assert seen["error"] in ("ENETUNREACH", "EHOSTUNREACH")
    assert counters()["failopen_bad_config"] == 1


def test_adopt_after_restart_keeps_the_same_programs(node):
    ids = node.our_prog_ids()
    result = Datapath(node.settings).up()
    assert result["action"] == "adopted"
    assert node.our_prog_ids() == ids
    [seen] = dial(node, "pod-a", VIP)
    assert seen["server"] == "%s:%d" % node.local


def test_reload_swaps_programs_without_dropping_connections(node, counters):
    code = """
        import socket, sys, time
        s = socket.create_connection(("198.18.10.1", 80))
        greeting = s.recv(256)
        print("open", flush=True)
        sys.stdin.readline()
        s.sendall(b"still-here")
        print(s.recv(100).decode(), flush=True)
    """
    import subprocess
    import textwrap

    from .node import PY, ROOT, join_cgroup_code
    proc = subprocess.Popen([PY, "-c", join_cgroup_code(node.cg("pod-a")) + textwrap.dedent(code)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "open"
    old = node.our_prog_ids()
    assert Datapath(node.settings).up(reload=True)["action"] == "reloaded"
    assert node.our_prog_ids().isdisjoint(old)
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "still-here"
    proc.wait(10)
    [seen] = dial(node, "pod-a", VIP)
    assert seen["server"] == "%s:%d" % node.local


def test_full_orig_dst_map_fails_open_and_counts():
    n = Node("nm-full", defines={"NM_MAX_CONNS": 2}).start(loader="inprocess")
    try:
        local = ("127.0.0.1", free_port())
        n.listen(*local)
        n.ctl.set_proxy(local="%s:%d" % local, mode="local")
        n.ctl.add_service("198.18.20.1:80", 9, "tcp")
        n.ctl.enroll(n.cg("pod-a"))
        code = """
            import socket, errno
            held = [socket.create_connection(("198.18.20.1", 80), timeout=5) for _ in range(2)]
            try:
                socket.create_connection(("198.18.20.1", 80), timeout=5)
                print("connected")
            except OSError as e:
                print(errno.errorcode[e.errno])
        """
        out = run_in(n.cg("pod-a"), code).strip()
        assert out in ("ENETUNREACH", "EHOSTUNREACH")
        c = n.ctl.counters()
        assert c["failopen_map_full"] == 1 and c["local"] == 2
    finally:
        n.stop()


def test_uninstall_leaves_nothing():
    n = Node("nm-uninst").start(loader="inprocess")
    try:
        ids = n.our_prog_ids()
        assert len(ids) == len(PROGRAMS)
        removed = Datapath(n.settings).uninstall()
        assert {"link/connect4", "link/connect6", "map/services", "map/sock_pairs6"} <= set(removed)
        assert not os.path.exists(n.settings.pin_dir)
        assert n.attached_under_cgroup() == []
        import subprocess
        listed = subprocess.run(["bpftool", "prog", "show"], capture_output=True, text=True).stdout
        assert not any(f"{i}:" in listed.split() for i in ids)
    finally:
        n.stop()


def test_doctor_loads_every_program_the_loader_lists():
    # `nodemesh doctor` enumerates agent/bpf's PROGRAMS: the IPv6 twins included
    from agent.cli.doctor_programs import check_programs

    assert {"connect6", "getpeername6"} <= set(PROGRAMS)
    assert check_programs() == {p: None for p in PROGRAMS}
