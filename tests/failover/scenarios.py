"""The failover scenarios, each a function that runs it on a Topology and
returns what it measured. The tests assert on these; bench/failover.py
repeats them with the controller's default settings and aggregates.

Times are wall-clock (time.time()), the clock the clients, the controller's
transition log and this module share across processes.
"""

import os
import time

from agent.admin import AdminClient, AdminError
from agent.bpf.host import cgroup_id

LOAD = dict(duration=4.0, max_requests=4000, rate=250, session=5)
FAST = {"probe_interval": 0.1, "remote_timeout": 0.3, "drain_deadline": 10, "drain_grace": 2}
"""The tests' controller settings: ticks five times faster than the default."""
DEFAULT = {}
"""The controller's own defaults (FailoverSettings): what a node runs."""


def agent_status(topo) -> dict:
    return AdminClient(os.path.join(topo.run_dir, "admin.sock")).get("/failover")


def wait_for(pred, timeout=10.0, every=0.05, what="condition"):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = pred()
            if last:
                return last
        except AdminError as e:
            last = e
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} (last: {last})")


def finish(proc, timeout=90) -> dict:
    import json

    out, err = proc.communicate(timeout=timeout)
    for line in reversed(out.splitlines()):
        data = json.loads(line)
        if data.get("final"):
            return data
    raise AssertionError(f"client gave no summary: {err[-2000:]}")


def reset(topo):
    """Back to the starting point: mode local, no spill, no override, no local proxy or agent."""
    for name in [n for n in topo.procs if n not in ("redis", "echo", "remote-proxy")]:
        topo.kill(name)
    if "remote-proxy" not in topo.procs:
        topo.start_remote_proxy()
    topo.node.ctl.set_proxy(mode="local", spill=0)
    for pod in ("pod-a", "pod-b"):
        topo.node.ctl.enroll(topo.node.cg(pod), proxy_netns=topo.link_netnsid(pod))
    for f in ("failover-override.json", "admin.sock", "proxy-local.sock"):
        try:
            os.unlink(os.path.join(topo.run_dir, f))
        except FileNotFoundError:
            pass


def counters(topo, before=None):
    now = topo.node.ctl.counters()
    before = before or {}
    return {k: now[k] - before.get(k, 0) for k in now if now[k] != before.get(k, 0)}


def _clients(topo, load):
    return {"redis": topo.client("redis-a", "pod-a", "redis", **load),
            "echo": topo.client("echo-b", "pod-b", "echo", **load)}


def _summary(name, clients, extra) -> dict:
    failed = sum(c["connect_failed"] + c["lost_in_flight"] for c in clients.values())
    total = failed + sum(c["ok"] for c in clients.values())
    return {"scenario": name, "requests": total, "failed": failed,
            "success_percent": round(100.0 * (total - failed) / max(1, total), 3),
            "clients": clients, **extra}


def first_after(changes, t, path):
    """Wall time of the first request served by `path` after t, or None."""
    return next((at for at, p in changes if at >= t and p == path), None)


def _ms(a, b):
    return None if a is None or b is None else round((a - b) * 1000, 1)


def _transition_at(status, to, after):
    return next((t["at"] for t in status["transitions"] if t["to"] == to and t["at"] >= after),
                None)


# -- scenarios ----------------------------------------------------------------------------

def kill_local(topo, load=LOAD, settings=FAST, down_s=0.8):
    topo.start_local_proxy()
    topo.start_controller(**settings)
    before = counters(topo)
    procs = _clients(topo, load)
    time.sleep(load["duration"] * 0.3)
    killed = time.time()
    topo.kill("local-proxy")
    wait_for(lambda: agent_status(topo)["mode"] == "remote", what="the controller sees it")
    time.sleep(down_s)
    restarted = time.time()
    topo.start_local_proxy()
    clients = {k: finish(p) for k, p in procs.items()}
    st = wait_for(lambda: (s := agent_status(topo))["state"] == "local" and s,
                  what="back to local", timeout=30)
    changes = clients["echo"]["path_changes"]
    return _summary("kill_local", clients, {
        "kernel": counters(topo, before),
        "divert_ms": {"kernel_first_remote": _ms(first_after(changes, killed, "remote"), killed),
                      "controller_mode_remote": _ms(_transition_at(st, "remote", killed), killed)},
        "return_ms": {"local_again": _ms(first_after(changes, restarted, "local"), restarted)},
        "paths": clients["echo"]["by_path"]})


def drain_upgrade(topo, load=LOAD, settings=FAST, deadline=5, lead_s=1.0):
    topo.start_local_proxy(name="proxy-v1")
    _agent(topo, settings)
    load = {**load, "duration": load["duration"] + 1}
    procs = _clients(topo, load)
    time.sleep(lead_s)
    asked = time.time()
    cli = topo.nodemesh("drain", "--deadline", str(deadline))   # returns once v1 exited
    exit_code = topo.procs["proxy-v1"].wait(deadline + 5)
    drained = time.time()
    topo.start_local_proxy(name="proxy-v2", ready_delay=0.3)
    wait_for(lambda: agent_status(topo)["state"] == "local", what="v2 takes traffic", timeout=30)
    clients = {k: finish(p) for k, p in procs.items()}
    st = agent_status(topo)
    changes = clients["echo"]["path_changes"]
    return _summary("drain_upgrade", clients, {
        "cli": cli.stdout, "old_proxy_exit": exit_code,
        "drain_s": round(drained - asked, 3),
        "divert_ms": {"controller_mode_remote": _ms(_transition_at(st, "draining", asked), asked),
                      "first_remote": _ms(first_after(changes, asked, "remote"), asked)},
        "return_ms": {"local_again": _ms(first_after(changes, drained, "local"), drained)},
        "path": [(t["from"], t["to"]) for t in st["transitions"] if t["from"]],
        "paths": clients["echo"]["by_path"]})


def _agent(topo, settings):
    """The real `nodemesh agent` when this checkout has it, else the controller alone."""
    from .topology import REAL_AGENT

    if REAL_AGENT:
        return topo.start_agent(failover=settings)       # the bootstrap's nodemesh.failover
    return topo.start_controller(**settings)


def _steering(topo):
    """What decides where connections go: the proxy map (not its write count), pods."""
    proxy = {k: v for k, v in topo.node.ctl.proxy().items() if k != "generation"}
    return proxy, sorted(map(str, topo.node.ctl.enrolled())), topo.node.ctl.services()


def _settings_in_use(status, wanted) -> dict:
    """The settings the controller reports that differ from what was asked for."""
    used = status.get("settings", {})
    return {k: (used.get(k), v) for k, v in wanted.items()
            if not isinstance(v, dict) and used.get(k) != v}


def kill_agent(topo, load=LOAD, settings=FAST, down_s=1.0):
    topo.start_local_proxy()
    _agent(topo, settings)
    wait_for(lambda: agent_status(topo)["local"]["probe"] is not None)
    maps = _steering(topo)
    generation = topo.node.ctl.proxy()["generation"]
    before = counters(topo)
    procs = _clients(topo, load)
    time.sleep(load["duration"] * 0.25)
    topo.kill("agent")
    time.sleep(down_s)
    _agent(topo, settings)
    wait_for(lambda: agent_status(topo)["local"]["probe"] is not None)
    clients = {k: finish(p) for k, p in procs.items()}
    st = agent_status(topo)
    from .topology import REAL_AGENT

    return _summary("kill_agent", clients, {
        "agent": "nodemesh agent" if REAL_AGENT else "python -m agent.failover",
        "kernel": counters(topo, before),
        "steering_changed": _steering(topo) != maps,
        "proxy_map_written": topo.node.ctl.proxy()["generation"] != generation,
        "settings_not_applied": _settings_in_use(st, settings),
        "first_event_after_restart": st["transitions"][0]["event"],
        "transitions": st["transitions"], "paths": clients["echo"]["by_path"]})


def remote_down(topo, load=LOAD, settings=FAST, local_down_s=0.5):
    topo.start_local_proxy()
    topo.start_controller(**settings)
    wait_for(lambda: agent_status(topo)["remote"].get("up"))
    before = counters(topo)
    load = {**load, "duration": load["duration"] + 0.5}
    procs = _clients(topo, load)
    time.sleep(1.0)
    topo.kill("local-proxy")
    wait_for(lambda: agent_status(topo)["mode"] == "remote")
    time.sleep(local_down_s)
    stopped = time.time()
    topo.kill("remote-proxy")
    st = wait_for(lambda: (s := agent_status(topo))["mode"] == "bypass" and s, what="fail open",
                  timeout=30)
    clients = {k: finish(p) for k, p in procs.items()}
    st = agent_status(topo)
    changes = clients["echo"]["path_changes"]
    failures = [t for c in clients.values() for t in c["failures_at"]]
    return _summary("remote_down_fail_open", clients, {
        "kernel": counters(topo, before), "state": st["state"],
        "entered_bypass": st["counters"]["entered"].get("bypass", 0),
        "divert_ms": {"controller_bypass": _ms(_transition_at(st, "bypass", stopped), stopped),
                      "first_direct": _ms(first_after(changes, stopped, "direct"), stopped)},
        "failures_after_bypass": sum(1 for t in failures if t > (_transition_at(
            st, "bypass", stopped) or stopped) + 0.05),
        "paths": clients["echo"]["by_path"]})


FLAP = {**FAST, "healthy_probes": 4, "flap_window": 30}
"""The flap scenario's settings: N = 4, so an up phase of N + 1 probes is
three probes short of 2N: the test's reaction time has 0.3 s of slack."""


def flap(topo, settings=FLAP, cycles=6, down_s=0.3):
    """Up for N + 1 of the controller's healthy probes (more than N, fewer than
    2N), then SIGKILL, over and over: without hysteresis each cycle would bring
    traffic back; with it, one at most (the first, before anything flapped).

    The up phase is counted in the controller's own probes, not in seconds: a
    loaded machine stretches a proxy's start-up and the test's sleeps (a 0.45 s
    sleep once let a proxy answer 2N probes, and the controller rightly
    returned), but not what the controller has seen."""
    n = settings.get("healthy_probes", 3)
    topo.start_controller(**settings)
    interval = settings.get("probe_interval", 1.0)
    load = dict(duration=cycles * ((n + 1) * interval + down_s) + 1.0, max_requests=20000,
                rate=150, session=3)
    proc = topo.client("echo-b", "pod-b", "echo", **load)
    modes = []
    for _ in range(cycles):
        topo.start_local_proxy(name="flappy")
        wait_for(lambda: agent_status(topo)["local"]["healthy_streak"] > n, timeout=60,
                 every=0.02, what=f"{n + 1} healthy probes of the flapping proxy")
        modes.append(topo.node.ctl.proxy()["mode"])
        topo.kill("flappy")
        time.sleep(down_s)
    st = agent_status(topo)
    up_again = time.time()
    topo.start_local_proxy(name="steady")
    wait_for(lambda: agent_status(topo)["state"] == "local", timeout=60,
             what="a steady proxy comes back")
    back = time.time()
    clients = {"echo": finish(proc)}
    return _summary("flap", clients, {
        "cycles": cycles, "returns_to_local": st["counters"]["transitions"].get("remote->local", 0),
        "modes_while_up": modes, "flaps": st["local"]["flaps"], "healthy_probes": n,
        "healthy_needed": st["local"]["healthy_needed"],
        "steady_return_s": round(back - up_again, 2)})


OVERLOAD = {"loop_lag_ms": 10}
"""The stand-in proxy's scale: a Python relay on a shared 2-core box, whose CPU
readings mostly measure the neighbours; its loop lag is the honest signal."""


def overload(topo, settings=FAST, cpu_ms=4.0, hot_s=4.0, duration=8.0, thresholds=OVERLOAD):
    topo.start_local_proxy(kind="standin")          # its POST /fault burns CPU per request
    topo.start_controller(**{"spill_step": 10, "spill_decay": 5, "overload": thresholds,
                             **settings})
    noisy = topo.client("noisy", "pod-a", "echo", duration=duration, rate=800, session=2,
                        concurrency=8, max_requests=20000)
    quiet = topo.client("quiet", "pod-b", "echo", duration=duration, rate=40, session=2)
    proxy_admin = AdminClient(topo.admin_path("proxy-local"))
    time.sleep(1.0)
    proxy_admin.post("/fault", {"cpu_ms": cpu_ms})
    samples, end = [], time.monotonic() + hot_s
    while time.monotonic() < end:
        st = agent_status(topo)
        samples.append((st["spill_percent"], dict(st["pod_spill_percent"])))
        time.sleep(0.2)
    proxy_admin.post("/fault", {"cpu_ms": 0})
    cooled = time.time()
    clients = {"noisy": finish(noisy), "quiet": finish(quiet)}
    wait_for(lambda: agent_status(topo)["state"] == "local", timeout=60, what="spill back to 0")
    a, b = str(cgroup_id(topo.node.cg("pod-a"))), str(cgroup_id(topo.node.cg("pod-b")))
    series = [(s[0], s[1].get(a, 0.0), s[1].get(b, 0.0)) for s in samples]
    return _summary("overload", clients, {
        "spill_samples": [s[0] for s in samples], "peak_spill": max(s[0] for s in samples),
        "pod_spill_samples": series,      # (share, noisy pod, quiet pod) percent
        "remote_fraction": {k: round(c["by_path"].get("remote", 0) / max(1, c["ok"]), 3)
                            for k, c in clients.items()},
        "local_latency_ms": {k: c["latency_ms"].get("local") for k, c in clients.items()},
        "back_to_local_s": round(time.time() - cooled, 2)})
