"""Failover benchmark: failed requests and time-to-divert for each scenario, under steady load.

The scenarios are the tests' (tests/failover/scenarios.py) on the same
namespace-built node: pods with real clients (redis-py and a raw TCP
request/response client, 250 requests/s each, a new connection every 5
requests), the real `nodemesh proxy` locally and as the remote pool, the real
`nodemesh agent` for restart and drain, fail-open to the backends. Each runs
--repeat times with the controller's default settings (a node's), and once
more with the tests' fast tick (probe every 0.1 s) to show what the tick buys.

Reported per scenario: success % (target 100% for drain and agent restart;
Istio ztunnel's restart test accepts 90%), failed/total requests, and medians
of the times to divert (kernel: the first request served elsewhere; controller:
its mode change) and to return.

Owns: netns nm-failover-<pid>-*, cgroup <v2>/nm-failover-<pid>, pin dir
/sys/fs/bpf/nm-failover-<pid>, all removed at the end. Needs root and bcc.

    python -m bench.failover [--quick] [--repeat N] [--only SCENARIO ...]
"""

import argparse
import os
import statistics
import sys
import time

from bench.common import print_table, write_results

TARGET = {"drain_upgrade": 100.0, "kill_agent": 100.0}
ZTUNNEL_RESTART_ACCEPTS = 90.0


def plans(profile):
    """Each scenario's call, with timings that fit the profile's tick."""
    from tests.failover import scenarios as sc

    if profile == "fast":
        s = sc.FAST
        load = {**sc.LOAD, "duration": 6.0, "max_requests": 6000}
        return {
            "kill_local": lambda t: sc.kill_local(t, load=load, settings=s),
            "drain_upgrade": lambda t: sc.drain_upgrade(t, load=load, settings=s),
            "kill_agent": lambda t: sc.kill_agent(t, load=load, settings=s),
            "remote_down": lambda t: sc.remote_down(t, load=load, settings=s),
            "flap": lambda t: sc.flap(t),          # its own N (scenarios.FLAP)
            "overload": lambda t: sc.overload(t, settings=s),
        }
    s = sc.DEFAULT
    load = {**sc.LOAD, "duration": 8.0, "max_requests": 8000}
    return {
        "kill_local": lambda t: sc.kill_local(t, load={**load, "duration": 11.0, "max_requests":
                                                       11000}, settings=s, down_s=1.0),
        "drain_upgrade": lambda t: sc.drain_upgrade(t, load=load, settings=s, lead_s=1.5),
        "kill_agent": lambda t: sc.kill_agent(t, load=load, settings=s, down_s=2.0),
        "remote_down": lambda t: sc.remote_down(t, load=load, settings=s, local_down_s=1.0),
        "flap": lambda t: sc.flap(t, settings={"flap_window": 30}, cycles=5, down_s=1.5),
        "overload": lambda t: sc.overload(t, settings=s, hot_s=8.0, duration=12.0),
        # (thresholds at the stand-in proxy's scale: scenarios.OVERLOAD)
    }


def compact(run: dict) -> dict:
    """A run as kept in the results file: counts and percentiles, not the
    per-request traces the divert times were computed from."""
    run = {k: v for k, v in run.items() if k not in ("transitions", "cli")}
    run["clients"] = {name: {k: v for k, v in c.items() if k not in ("path_changes",
                                                                    "failures_at")}
                      for name, c in run["clients"].items()}
    return run


def med(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 1) if values else None


def summarize(name, runs) -> dict:
    out = {"runs": len(runs),
           "success_percent_min": min(r["success_percent"] for r in runs),
           "failed": sum(r["failed"] for r in runs), "requests": sum(r["requests"] for r in runs)}
    for key in ("divert_ms", "return_ms"):
        fields = sorted({f for r in runs for f in (r.get(key) or {})})
        for f in fields:
            out[f"{key}.{f}"] = med([r[key].get(f) for r in runs])
    if name == "flap":
        out["returns_to_local"] = [r["returns_to_local"] for r in runs]
        out["cycles"] = runs[0]["cycles"]
        out["steady_return_s"] = med([r["steady_return_s"] for r in runs])
    if name == "overload":
        out["peak_spill"] = med([r["peak_spill"] for r in runs])
        out["remote_fraction_noisy"] = med([r["remote_fraction"]["noisy"] for r in runs])
        out["remote_fraction_quiet"] = med([r["remote_fraction"]["quiet"] for r in runs])
        out["quiet_local_p99_ms"] = med([(r["local_latency_ms"]["quiet"] or {}).get("p99")
                                         for r in runs])
    if name == "remote_down":
        out["failures_after_bypass"] = sum(r["failures_after_bypass"] for r in runs)
    if name == "kill_agent":
        out["steering_changed"] = any(r["steering_changed"] for r in runs)
        out["proxy_map_written"] = any(r.get("proxy_map_written") for r in runs)
        out["agent"] = runs[0]["agent"]
    return out


def run(profiles, repeat, only=None) -> dict:
    from tests.failover import scenarios as sc
    from tests.failover.topology import Topology

    topo = Topology("nm-failover").start()
    results = {}
    try:
        topo.start_remote_proxy()
        for profile in profiles:
            for name, fn in plans(profile).items():
                if only and name not in only:
                    continue
                runs = []
                for _ in range(repeat if profile == "default" else 1):
                    try:
                        r = fn(topo)
                    finally:
                        sc.reset(topo)
                    runs.append(compact(r))
                results.setdefault(profile, {})[name] = {"summary": summarize(name, runs),
                                                         "runs": runs}
                print(f"  {profile:<8} {name:<14} {results[profile][name]['summary']}",
                      flush=True)
    finally:
        topo.stop()
    return results


def merged(fresh: dict) -> dict:
    """The results file's scenarios with the freshly run ones replaced."""
    import json

    from bench.common import RESULTS

    try:
        old = json.loads((RESULTS / "failover.json").read_text())["results"]
    except (OSError, ValueError, KeyError):
        return fresh
    for profile, scen in fresh.items():
        old.setdefault(profile, {}).update(scen)
    return old


def table(results):
    for profile, scen in results.items():
        rows = []
        for name, data in scen.items():
            s = data["summary"]
            target = TARGET.get(name)
            divert = s.get("divert_ms.kernel_first_remote") or s.get("divert_ms.first_remote") \
                or s.get("divert_ms.controller_bypass")
            rows.append([name, f"{s['success_percent_min']:.3f}",
                         f"{s['failed']}/{s['requests']}",
                         "-" if target is None else ("met" if s["success_percent_min"] >= target
                                                     else "MISSED"),
                         divert if divert is not None else "-",
                         s.get("divert_ms.controller_mode_remote") or "-",
                         s.get("return_ms.local_again") or "-"])
        print_table(f"failover ({profile} settings): worst success %, failed/total; medians in ms "
                    f"(ztunnel restart accepts {ZTUNNEL_RESTART_ACCEPTS:g}%)",
                    ["scenario", "success%", "failed", "target 100%", "divert",
                     "ctl->remote", "back local"], rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.failover")
    p.add_argument("--quick", action="store_true", help="default profile only, one run each")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--only", action="append", metavar="SCENARIO",
                   help="run these scenarios only; their results replace theirs in the file")
    a = p.parse_args(argv)
    started, load_before = time.monotonic(), os.getloadavg()
    profiles = ["default"] if a.quick else ["default", "fast"]
    results = run(profiles, 1 if a.quick else a.repeat, a.only)
    if a.only:
        results = merged(results)
    table(results)
    path = write_results("failover", {"profiles": profiles, "results": results,
                                      "seconds": round(time.monotonic() - started, 1),
                                      "load_average": {"start": load_before,
                                                       "end": os.getloadavg()}})
    print(f"\nresults: {path}")
    missed = [n for n, d in results["default"].items()
              if n in TARGET and d["summary"]["success_percent_min"] < TARGET[n]]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
