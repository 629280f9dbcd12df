"""Per-request cost of the proxy's policies: Balancer.pick() per policy at
10/100/1000 hosts, breaker acquire/release, rate-limit allow, fault decide,
fairness admit/done, and table rebuild times.

The peer on this noisy 2-core machine is the floor of a pick in Python,
`random.choice(hosts)`, measured in rounds alternating with each policy's:
the ratio says what a policy costs on top of choosing at all.

    python -m bench.proxy_policies [--quick]
"""

import random
import statistics
import sys
import time

from agent.config.model import (CircuitBreakers, Cluster, Endpoint, FaultPolicy,
                                RateLimitPolicy)
from agent.proxy.circuit import CircuitBreaker
from agent.proxy.fairness import PodFairness
from agent.proxy.fault import decide
from agent.proxy.hosts import HostSet
from agent.proxy.lb import make_balancer
from agent.proxy.lb_hash import HASH_FUNCTION
from agent.proxy.ratelimit import RateLimiter
from bench.common import median_rate, print_table, write_results

POLICIES = ("round_robin", "least_request", "random", "ring_hash", "maglev")
SIZES = (10, 100, 1000)
BATCH = 1000


def cluster(n, policy, weighted=False):
    eps = tuple(Endpoint(f"10.{i // 250}.{i % 250}.1", 8080,
                         weight=(1 + i % 4) if weighted else 1) for i in range(n))
    return Cluster("bench", "1", lb_policy=policy, endpoints=eps)


def ns_per_op(fn, repeat, min_time):
    return 1e9 / median_rate(fn, BATCH, repeat=repeat, min_time=min_time)


def paired_ns(fn, peer, repeat, min_time):
    """Median ns/op of fn and of peer, measured in alternating rounds so both
    see the same machine load (other tests share these 2 cores)."""
    ours, theirs = [], []
    for _ in range(repeat):
        ours.append(ns_per_op(fn, 1, min_time))
        theirs.append(ns_per_op(peer, 1, min_time))
    return statistics.median(ours), statistics.median(theirs)


def bench_pick(policy, n, weighted, repeat, min_time, floor):
    c = cluster(n, policy, weighted)
    hs = HostSet(c)
    b = make_balancer(c, hs, rng=random.Random(1))
    start = time.perf_counter()
    b.pick()                       # first pick builds the table
    build_ms = (time.perf_counter() - start) * 1e3
    pick = b.pick
    if policy in ("ring_hash", "maglev"):
        keys = [f"user-{i}".encode() for i in range(BATCH)]

        def run():
            for k in keys:
                pick(k)
    else:
        def run():
            for _ in range(BATCH):
                pick()
    ns, floor_ns = paired_ns(run, floor, repeat, min_time)
    return ns, floor_ns, build_ms


def floor_for(n):
    """The peer: random.choice over the same hosts, the least a pick can cost."""
    hosts = HostSet(cluster(n, "random")).hosts
    choice = random.Random(1).choice

    def run():
        for _ in range(BATCH):
            choice(hosts)
    return run


def bench_others(repeat, min_time):
    cb = CircuitBreaker(CircuitBreakers(max_requests=10**9))
    acquire, release = cb.try_acquire, cb.release

    def breaker():
        for _ in range(BATCH):
            acquire("requests")
            release("requests")

    shared = RateLimiter(RateLimitPolicy(10**9, 10**9, 1.0))
    per_pod = RateLimiter(RateLimitPolicy(10**9, 10**9, 1.0, per_source_pod=True))
    pods = [i % 50 for i in range(BATCH)]

    def allow_shared():
        for p in pods:
            shared.allow(p)

    def allow_pod():
        for p in pods:
            per_pod.allow(p)

    fault = FaultPolicy(delay=0.01, delay_percent=10, abort_status=503, abort_percent=5)
    rng = random.Random(1)

    def faults():
        for _ in range(BATCH):
            decide(fault, rng)

    fair = PodFairness(10**6)
    admit, done = fair.admit, fair.done

    def fairness():
        for p in pods:
            admit(p)
            done(p)

    rows = [("breaker try_acquire+release", breaker), ("ratelimit allow (shared)", allow_shared),
            ("ratelimit allow (50 pods)", allow_pod), ("fault decide", faults),
            ("fairness admit+done", fairness)]
    return {name: ns_per_op(fn, repeat, min_time) for name, fn in rows}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    quick = "--quick" in argv
    repeat, min_time = (3, 0.05) if quick else (7, 0.2)
    picks, rows = {}, []
    for n in SIZES:
        floor = floor_for(n)
        for policy in POLICIES:
            for weighted in (False, True):
                ns, floor_ns, build = bench_pick(policy, n, weighted, repeat, min_time, floor)
                label = f"{policy}{' weighted' if weighted else ''}"
                picks[f"{label}/{n}"] = {"ns": round(ns, 1), "floor_ns": round(floor_ns, 1),
                                         "build_ms": round(build, 2),
                                         "vs_floor": round(ns / floor_ns, 2)}
                rows.append((label, n, f"{ns:.0f}", f"{floor_ns:.0f}", f"{ns / floor_ns:.2f}x",
                             f"{build:.2f}"))
    print_table(f"pick() ns/op, medians of {repeat} rounds alternating with the floor, "
                f"random.choice (hash: {HASH_FUNCTION})",
                ["policy", "hosts", "ns/op", "floor", "ratio", "build ms"], rows)
    others = bench_others(repeat, min_time)
    print_table("per-request policy calls", ["call", "ns/op"],
                [(k, f"{v:.0f}") for k, v in others.items()])
    if not quick:
        out = write_results("proxy_policies", {"pick": picks, "calls": {
            k: round(v, 1) for k, v in others.items()}, "hash_function": HASH_FUNCTION})
        print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
