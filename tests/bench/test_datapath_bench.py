"""The datapath benchmark's own parts: the C client's connect + one request mode
against the echo-once listener, and the claims it derives from results. The
benchmark itself needs root and BPF and runs in bench/ (minutes)."""

import json
import shutil
import socket
import subprocess

import pytest

from bench import datapath as dp

needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")


@pytest.fixture(scope="module")
def tool(tmp_path_factory):
    exe = tmp_path_factory.mktemp("datapath-rr") / "datapath_rr"
    subprocess.run(["cc", "-O2", "-Wall", "-pthread", "-o", str(exe), str(dp.C_SOURCE)],
                   check=True, capture_output=True, timeout=120)
    return str(exe)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(tool, flag, port):
    p = subprocess.Popen([tool, "serve", "-T", "30", flag, f"127.0.0.1:{port}"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


def _conn(tool, port, *extra):
    return subprocess.run([tool, "conn", "-a", f"127.0.0.1:{port}", "-d", "0.2", "-n", "300",
                           *extra], capture_output=True, text=True, timeout=30, check=False)


@needs_cc
def test_connect_with_one_request_round_trips_through_echo_once(tool):
    port = _free_port()
    srv = _serve(tool, "-e", port)
    try:
        r = _conn(tool, port, "-r", "64")
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["count"] > 0 and out["failed"] == 0
    finally:
        srv.kill()
        srv.wait(5)


@needs_cc
def test_a_request_to_a_sink_fails_instead_of_counting(tool):
    """A sink closes without answering: the request mode must notice."""
    port = _free_port()
    srv = _serve(tool, "-k", port)
    try:
        r = _conn(tool, port, "-r", "64")
        assert r.returncode == 1
        assert json.loads(r.stdout)["failed"] == 1
        assert _conn(tool, port).returncode == 0     # bare connects are fine there
    finally:
        srv.kill()
        srv.wait(5)


@needs_cc
def test_request_size_is_bounded(tool):
    assert _conn(tool, 1, "-r", "16385").returncode == 2


def _fig(p50, cpu):
    return {"p50_us": p50, "cpu_us_per_connect": cpu, "p50_ratio_vs_none": round(30 / p50, 3),
            "cpu_ratio_vs_none": round(30 / cpu, 3), "paired_ratio_vs_none": 1.0}


def test_claims_judge_p50_against_the_targets():
    res = {
        "request_response": {"64B/8": {"cpu_ratio_redirect_vs_tcp": 1.5,
                                       "ratio_rps_redirect_vs_tcp": 1.4,
                                       "ratio_p50_redirect_vs_unix": 1.2}},
        "connect": {"bpf": _fig(31, 31), "bpf_paired": _fig(35, 35), "iptables": _fig(40, 40)},
        "connect_request": {"bpf_paired": _fig(29, 31), "iptables": _fig(40, 40)},
    }
    met = {c["claim"]: c["met"] for c in dp.claims(res)}
    assert len(met) == 6
    by = {key: next(v for k, v in met.items() if key in k) for key in
          ("requests per CPU", "unix", "service that pairs", "pair=False", "iptables REDIRECT",
           "one 64 B request")}
    assert by == {"requests per CPU": True, "unix": False, "service that pairs": False,
                  "pair=False": True, "iptables REDIRECT": True, "one 64 B request": True}


def test_claims_of_a_partial_run():
    assert dp.claims({"request_response": None, "connect": None, "connect_request": None}) == []
