"""Accept records on the real kernel: a record waits for the proxy even when
its client is gone, and a leftover record is never read by another connection."""

import json
import os
import subprocess
import time

import pytest

from agent.bpf import layout

from .node import PY, ROOT, Node, free_port, join_cgroup_code, run_in

pytestmark = pytest.mark.kernel

VIP = ("198.18.40.1", 80)

# A proxy that accepts only when told: one connection per "accept" line on
# stdin, read to EOF; prints its peer and what it read.
LAZY_PROXY = """
import json, socket, sys
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(16)
print(ls.getsockname()[1], flush=True)
for line in sys.stdin:
    c, peer = ls.accept()
    c.settimeout(5)
    data = b""
    while chunk := c.recv(65536):
        data += chunk
    c.close()
    print(json.dumps({"peer": list(peer), "data": data.decode()}), flush=True)
"""


@pytest.fixture(scope="module")
def node():
    n = Node("nm-rec").start(loader="inprocess")
    proxy = subprocess.Popen([PY, "-c", join_cgroup_code(n.cg("proxy")) + LAZY_PROXY],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        n.proxy_port = int(proxy.stdout.readline())
        n.lazy = proxy
        n.ctl.set_proxy(local="127.0.0.1:%d" % n.proxy_port, mode="local")
        n.ctl.add_service("%s:%d" % VIP, 4, "tcp")
        n.ctl.enroll(n.cg("pod-a"))
        yield n
    finally:
        proxy.kill()
        proxy.wait(10)
        n.stop()


def accept(node) -> dict:
    node.lazy.stdin.write("accept\n")
    node.lazy.stdin.flush()
    return json.loads(node.lazy.stdout.readline())


def wait_closed(node, count, timeout=5.0):
    """Until `count` steered client sockets have closed (their close callback ran)."""
    deadline = time.monotonic() + timeout
    while node.ctl.counters()["closed"] < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return node.ctl.counters()["closed"]


def test_client_gone_before_accept_still_has_its_record(node):
    closed = node.ctl.counters()["closed"]
    code = """
        import socket
        s = socket.create_connection(%r, timeout=5)
        s.sendall(b"fire and forget")
        s.close()
    """ % (VIP,)
    run_in(node.cg("pod-a"), code)
    # the client's socket is closed (its FIN acknowledged by the queued,
    # not yet accepted end) before the proxy accepts
    assert wait_closed(node, closed + 1) == closed + 1
    got = accept(node)
    assert got["data"] == "fire and forget"
    rec = node.ctl.accept_record(*got["peer"])
    assert rec is not None and rec["original_dst"] == "%s:%d" % VIP and rec["service_id"] == 4
    assert node.ctl.accept_record(*got["peer"]) is None      # the proxy's read deleted it


def test_leftover_record_is_not_read_by_a_later_connection(node):
    # a record as a half-done handshake leaves it: written for the client's
    # address by a connection whose proxy end never got established
    port = free_port()
    key = layout.new("struct nm_addr_key", ip=layout.ip_to_be32("127.0.0.1"),
                     port=layout.port_to_be16(port))
    value = layout.new("struct nm_orig_dst", ip=layout.ip_to_be32(VIP[0]),
                       port=layout.port_to_be16(VIP[1]), service_id=4,
                       target=layout.C.NM_TARGET_LOCAL, server_seq=12345)
    node.ctl.map("accept_records").set(key, value)
    stale = node.ctl.counters()["record_stale"]
    # the same address dials the proxy directly: not steered, no record of its own
    code = """
        import socket
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", %d))
        s.connect(("127.0.0.1", %d))
        s.sendall(b"direct")
        s.close()
    """ % (port, node.proxy_port)
    run_in(node.cg("pod-a"), code)
    got = accept(node)
    assert got["peer"] == ["127.0.0.1", port] and got["data"] == "direct"
    assert node.ctl.accept_record("127.0.0.1", port) is None
    assert node.ctl.counters()["record_stale"] == stale + 1


def test_records_of_a_version_without_the_sequence_number_are_read(node):
    # an accept record copied from an older version's map (server_seq 0) by
    # an upgrade, for a connection established across the swap of programs
    port = free_port()
    key = layout.new("struct nm_addr_key", ip=layout.ip_to_be32("127.0.0.1"),
                     port=layout.port_to_be16(port))
    value = layout.new("struct nm_orig_dst", ip=layout.ip_to_be32(VIP[0]),
                       port=layout.port_to_be16(VIP[1]), service_id=4,
                       target=layout.C.NM_TARGET_LOCAL)
    node.ctl.map("accept_records").set(key, value)
    code = """
        import socket
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", %d))
        s.connect(("127.0.0.1", %d))
        s.close()
    """ % (port, node.proxy_port)
    run_in(node.cg("pod-a"), code)
    got = accept(node)
    assert got["peer"] == ["127.0.0.1", port]
    assert node.ctl.accept_record("127.0.0.1", port)["service_id"] == 4


def test_no_record_is_left_behind_once_the_proxy_read_it(node):
    before = len(node.ctl.map("accept_records"))
    run_in(node.cg("pod-a"), "import socket\nsocket.create_connection(%r, timeout=5).close()\n"
           % (VIP,))
    got = accept(node)
    assert len(node.ctl.map("accept_records")) == before + 1
    assert node.ctl.accept_record(*got["peer"]) is not None
    assert len(node.ctl.map("accept_records")) == before
    assert os.path.exists(node.settings.pin_dir)
