"""The node demo, unattended: every request served, none failed across the
kill of the local relay, nothing left behind."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.kernel


def test_demo_json_summary_and_cleanup():
    res = subprocess.run([sys.executable, "-m", "agent.cli.main", "demo", "--duration", "6",
                          "-o", "json"], capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["ok"] and summary["failed_new_connections"] == 0
    assert summary["requests_ok"] > 100
    assert summary["kernel"]["local"] > 0 and summary["kernel"]["remote_no_listener"] > 0
    assert [p["phase"] for p in summary["phases"]] == [
        "steady on local", "local relay killed (SIGKILL)", "local relay back"]
    leftovers = [d for d in os.listdir("/sys/fs/bpf") if d.startswith("nodemesh-demo")]
    assert leftovers == []
    tree = subprocess.run(["bpftool", "cgroup", "tree"], capture_output=True, text=True).stdout
    assert "nodemesh-demo" not in tree
