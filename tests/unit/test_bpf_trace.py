"""Decoding trace events: the layout of bpf/lib/layout.h, both families."""

from agent.bpf import layout
from agent.bpf.trace import decode


def event(**fields) -> bytes:
    ev = layout.new("struct nm_trace_event", **fields)
    return bytes(layout.ffi.buffer(ev))


def test_an_ipv4_decision():
    raw = event(ts_ns=5_000_000_000, cookie=77, cgroup_id=1234, pid=10, tid=11, family=2,
                orig_ip=layout.ip_to_be32("198.18.10.1"), orig_port=layout.port_to_be16(80),
                new_ip=layout.ip_to_be32("127.0.0.1"), new_port=layout.port_to_be16(15001),
                target=layout.C.NM_TARGET_LOCAL, reason=layout.C.NM_R_LOCAL, service_id=3,
                comm=b"java")
    ev = decode(raw, clock_offset=1000.0)
    assert ev.as_dict() == {
        "ts_ns": 5_000_000_000, "time": 1005.0, "cookie": 77, "cgroup_id": 1234,
        "pid": 10, "tid": 11, "comm": "java", "original_dst": "198.18.10.1:80",
        "target_dst": "127.0.0.1:15001", "target": "local", "reason": "local",
        "service_id": 3}


def test_ipv6_and_ipv4_mapped_decisions():
    ev = decode(event(family=10, orig_ip6=layout.ip6_to_words("fd00::10"),
                      orig_port=layout.port_to_be16(80),
                      new_ip6=layout.ip6_to_words("::ffff:127.0.0.1"),
                      new_port=layout.port_to_be16(15001),
                      target=layout.C.NM_TARGET_REMOTE, reason=layout.C.NM_R_REMOTE_MODE))
    assert (ev.original_dst, ev.target_dst) == ("[fd00::10]:80", "[::ffff:127.0.0.1]:15001")
    assert (ev.target, ev.reason) == ("remote", "remote_mode")


def test_an_unknown_reason_is_named_as_such():
    assert decode(event(family=2, reason=31)).reason == "unknown(31)"
