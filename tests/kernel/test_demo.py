"""`nodemesh demo`, unattended: the whole node (xds-serve, agent, local and remote proxy,
real clients and servers) through its phases, and nothing left behind; also when
interrupted half-way."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.kernel.node import ROOT

pytestmark = pytest.mark.kernel

DURATION = 24        # seconds of traffic; the run takes about twice that with set-up
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def demo(*argv, **popen):
    return subprocess.Popen([sys.executable, "-m", "agent.cli.main", "demo", *argv], cwd=ROOT,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **popen)


def traces(pid: int) -> list:
    """Anything still named after the demo process `pid`: namespaces, pins, cgroups,
    attachments, links, processes."""
    tag = f"nm-demo-{pid}"
    out = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    out += [line.split()[0] for line in netns.splitlines() if line.startswith(tag)]
    if os.path.exists(f"/sys/fs/bpf/{tag}"):
        out.append(f"/sys/fs/bpf/{tag}")
    from agent.bpf import host

    cg = os.path.join(host.cgroup2_mount(), tag)
    if os.path.exists(cg):
        out.append(cg)
    tree = subprocess.run(["bpftool", "cgroup", "tree"], capture_output=True, text=True).stdout
    out += [f"bpftool: {line}" for line in tree.splitlines() if tag in line]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    out += [f"link {line.split(':')[1].strip()}" for line in links.splitlines()
            if line.split(":")[1].strip().startswith(f"n{pid % 100000:05d}")]
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    out += [f"process {line.strip()}" for line in ps.splitlines() if tag in line]
    return out


def test_demo_runs_every_phase_without_failed_requests_and_leaves_nothing():
    proc = demo("--duration", str(DURATION), "-o", "json")
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:] + out[-3000:]
    s = json.loads(out)
    assert s["ok"] and s["problems"] == [], s["problems"]
    # every protocol served, from both pods
    for proto in ("redis", "thrift", "dubbo", "http1"):
        for pod in ("pod-a", "pod-b"):
            assert s["protocols"][proto][pod]["ok"] > 50, (proto, pod, s["protocols"])
    phases = {p["name"]: p for p in s["phases"]}
    assert list(phases) == ["1 steady", "2 route 50/50", "2 route 0/100", "3 kill local",
                            "4 restart", "5 drain+upgrade"]
    # zero failed requests across the kill and the drain (resends are counted apart)
    assert phases["3 kill local"]["failed"] == 0, phases["3 kill local"]
    assert phases["5 drain+upgrade"]["failed"] == 0, phases["5 drain+upgrade"]
    assert all(p["failed"] == 0 for p in s["phases"])
    # the split moved with the route's weights
    split = s["split"]
    assert split["100/0"].get("http-v1", 0) > 0 and split["100/0"].get("http-v2", 0) == 0
    assert split["50/50"].get("http-v1", 0) > 0 and split["50/50"].get("http-v2", 0) > 0
    assert split["0/100"]["http-v2"] > 5 * split["0/100"].get("http-v1", 0)
    # the kernel sent new connections to the remote proxy when the local one was gone
    kernel = s["paths"]["kernel"]
    assert kernel.get("remote_no_listener", 0) > 0 and kernel.get("local", 0) > 0
    assert s["paths"]["requests"]["local"] > 0 and s["paths"]["requests"]["remote"] > 0
    assert any("(drain" in t for t in s["failover_transitions"]) or any(
        "draining" in t for t in s["failover_transitions"]), s["failover_transitions"]
    # nothing left behind, by the demo's own account and by looking
    assert s["leftovers"] == []
    assert traces(proc.pid) == []


def test_interrupted_demo_takes_everything_down():
    proc = demo("--duration", "60")
    deadline = time.monotonic() + 120
    seen = []
    for line in proc.stdout:                    # the live view, until the kill phase
        seen.append(line)
        if ">> local proxy SIGKILLed" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)             # Ctrl-C
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, "".join(seen[-5:]) + out[-2000:] + err[-2000:]
    assert "interrupted" in err and "removed" in err
    assert any("3 kill local" in line for line in seen)
    assert traces(proc.pid) == []


def test_not_root_is_one_clear_line_and_nothing_is_built():
    proc = demo("--duration", "5", preexec_fn=lambda: (os.setgid(65534), os.setuid(65534)))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 4, err
    assert err.strip().splitlines() == [err.strip()]
    assert "not root" in err and "sudo" in err
    assert traces(proc.pid) == []


def test_port_taken_is_one_clear_line_and_nothing_is_built():
    import socket

    from agent.demo.settings import DemoSettings

    port = DemoSettings().local_port
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", port))
        busy.listen()
        proc = demo("--duration", "5")
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert f"port {port}" in err and "already taken" in err
    assert traces(proc.pid) == []


def test_kernel_without_a_feature_gives_doctors_reason(monkeypatch, capsys):
    """doctor's first failing check becomes the one line; exit 5; nothing built."""
    from agent.cli import doctor, main

    monkeypatch.setattr(doctor, "run_checks", lambda args: [
        doctor.check("kernel", "ok", "6.18"),
        doctor.check("program/getpeername4", "fail", "verifier rejected the program",
                     "apps see the proxy as their peer")])
    code = main.main(["demo", "--duration", "5"])
    err = capsys.readouterr().err
    assert code == 5, err
    assert "program/getpeername4: verifier rejected the program" in err
    assert "nothing was set up" in err
    assert traces(os.getpid()) == []


def test_a_step_failing_half_way_leaves_nothing(monkeypatch, capsys):
    """The local proxy 'fails to start' once the namespaces, backends, xds-serve, the agent
    (datapath pinned and attached), the enrollments and the remote proxy are up."""
    from agent.cli import main
    from agent.demo.node import DemoNode, StepError

    def broken(self):
        assert self.ctl.enrolled() and os.path.exists(self.pin_dir)    # half-way indeed
        raise StepError("local-proxy-1 ready: injected failure")

    monkeypatch.setattr(DemoNode, "start_local_proxy", broken)
    code = main.main(["demo", "--duration", "5"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "demo stopped: local-proxy-1 ready: injected failure" in err
    assert "everything it set up was removed" in err
    assert traces(os.getpid()) == []
