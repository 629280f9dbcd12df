"""The proxy benchmarks' own parts: the C backends and load generator, the uvloop relay,
frame builders, and the summaries that become claims. The benchmarks themselves run in
bench/ (they take minutes); these check that what they measure with is right."""

import json
import shutil
import socket
import struct
import sys

import pytest

from bench import proxy_common as pc
from bench import proxy_profile

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")


@pytest.fixture(scope="module")
def procs():
    with pc.Procs() as p:
        yield p


@pytest.fixture(scope="module")
def tool(procs):
    return pc.build_load_tool(procs)


@pytest.fixture(scope="module")
def ports():
    return pc.Ports()


def dubbo_files(tmp):
    from agent.demo import dubbo_wire

    req, rep = tmp / "d.req", tmp / "d.rep"
    req.write_bytes(dubbo_wire.request(1, "svc", "sayHello", "x"))
    rep.write_bytes(dubbo_wire.response(1, "hello"))
    return req, rep


DUBBO = ["-L", "12:4:16", "-i", "4:8", "-r", "4"]


def test_http_serve_answers_pipelined_requests_in_order(procs, tool, ports):
    port = ports.take()
    procs.start([tool, "http-serve", "-t", f"127.0.0.1:{port}", "-T", "60"], port=port,
                ready_line="ready")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n" * 3)
        data = b""
        while data.count(b"hello, world\n") < 3:
            chunk = s.recv(4096)
            assert chunk
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 3


def test_rpc_serve_copies_the_request_id_and_load_counts_replies(procs, tool, ports):
    port = ports.take()
    req, rep = dubbo_files(procs.tmp)
    procs.start([tool, "rpc-serve", "-t", f"127.0.0.1:{port}", "-f", rep, *DUBBO, "-T", "60"],
                port=port, ready_line="ready")
    from agent.demo import dubbo_wire

    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(dubbo_wire.request(0x1234567890, "svc", "m", "x"))
        head = s.recv(16)
        assert struct.unpack(">q", head[4:12])[0] == 0x1234567890
    out = pc.run_json([tool, "rpc-load", "-a", f"127.0.0.1:{port}", "-f", req, *DUBBO,
                       "-c", 4, "-p", 4, "-d", 0.3, "-n", 100_000], timeout=30)
    assert out["count"] > 100 and out["errors"] == 0 and out["lost"] == 0 and not out["failed"]
    capped = pc.run_json([tool, "rpc-load", "-a", f"127.0.0.1:{port}", "-f", req, *DUBBO,
                          "-c", 2, "-p", 1, "-d", 5, "-n", 50], timeout=30)
    assert 50 <= capped["count"] <= 52               # bounded in count, not only in time


def test_uvloop_relay_forwards_both_ways(procs, tool, ports):
    backend, relay = ports.take(), ports.take()
    req, rep = dubbo_files(procs.tmp)
    procs.start([tool, "rpc-serve", "-t", f"127.0.0.1:{backend}", "-f", rep, *DUBBO, "-T", "60"],
                port=backend, ready_line="ready")
    procs.start([sys.executable, "-m", "bench.proxy_relay", "127.0.0.1", relay, "127.0.0.1",
                 backend], port=relay, cwd=pc.ROOT, env={"PYTHONPATH": str(pc.ROOT)})
    out = pc.run_json([tool, "rpc-load", "-a", f"127.0.0.1:{relay}", "-f", req, *DUBBO,
                       "-c", 8, "-p", 2, "-d", 0.3, "-n", 100_000], timeout=30)
    assert out["count"] > 100 and out["errors"] == 0 and not out["failed"]


def test_thrift_call_has_its_seqid_where_the_load_generator_writes_it():
    from bench.proxy_rpc import thrift_request

    frame = thrift_request()
    assert struct.unpack(">I", frame[:4])[0] == len(frame) - 4
    assert frame[12:16] == b"echo" and struct.unpack(">I", frame[16:20])[0] == 1


def test_py_spy_report_ranks_python_apart_from_syscalls(tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_text(
        "run (a.py:1);Session.flush (agent/proxy/session.py:386);write (libc.so.6) 60\n"
        "run (a.py:1);Decoder.feed (agent/codec/decoder.py:227) 30\n"
        "run (a.py:1);Decoder.feed (agent/codec/decoder.py:230);nm_decode (_native.so) 10\n")

    class Done:
        def wait(self, timeout):
            return 0

    rep = proxy_profile.py_spy_report(Done(), raw)
    assert rep["leaf_percent"][0] == ["syscall write", 60.0]
    assert rep["python_self"][0] == ["Decoder.feed (agent/codec/decoder.py)", 100.0]
    assert ["native _native", 10.0] in rep["leaf_percent"]


def test_summaries_and_claims():
    samples = {"ref": [{"rate": 100.0, "count": 10, "cpu_us_per_req": 2.0}] * 3,
               "x": [{"rate": r, "count": 10, "cpu_us_per_req": 4.0} for r in (40, 50, 90)]}
    rows = {r["peer"]: r for r in pc.summarize(samples, reference="ref")}
    assert rows["x"]["rate"] == 50 and rows["x"]["vs_ref"] == 0.5
    assert rows["x"]["proxy_vcpu_per_1k_rps"] == 0.004
    c = pc.claim("c", 0.5, 1.0)
    assert c == {"claim": "c", "measured": "0.50x", "target": ">= 1.00x", "met": False, "note": ""}
    assert pc.claim("v", 0.02, 0.05, "<=", "vCPU")["met"] is True


def test_procs_kills_what_it_started(tmp_path):
    with pc.Procs() as p:
        proc = p.start([sys.executable, "-c", "import time; time.sleep(60)"])
    assert proc.poll() is not None
    assert not p.tmp.exists()


def test_report_rewrites_only_between_the_markers(tmp_path, monkeypatch):
    from bench import proxy_report

    results = tmp_path / "results"
    results.mkdir()
    (results / "proxy_http.json").write_text(json.dumps({
        "rows": [{"peer": "haproxy", "rate": 100.0, "vs_haproxy": 1.0, "cpu_us_per_req": 2.0,
                  "user_us_per_req": 1.0, "system_us_per_req": 1.0,
                  "proxy_vcpu_per_1k_rps": 0.002}],
        "claims": [{"claim": "c", "measured": "1.00x", "target": ">= 1.00x", "met": True}]}))
    doc = tmp_path / "doc.md"
    doc.write_text(f"# t\nhand\n{proxy_report.START}\nold\n{proxy_report.END}\nafter\n")
    monkeypatch.setattr(proxy_report, "RESULTS", results)
    monkeypatch.setattr(proxy_report, "DOC", doc)
    monkeypatch.setattr(proxy_report, "ROOT", tmp_path)
    assert proxy_report.main() == 0
    text = doc.read_text()
    assert text.startswith("# t\nhand\n") and text.endswith(f"{proxy_report.END}\nafter\n")
    assert "old" not in text and "| haproxy | 100.0 | 1.00x |" in text and "| c | 1.00x |" in text
