"""What the codec benchmarks share: interleaved medians and the result rows.

The machine is shared and noisy, so the sides of a comparison are measured
round by round, alternating (and rotating which goes first): a burst of load
then slows every side alike instead of one, and each side's figure is the
median of its rounds. Time is the benchmark thread's CPU time
(time.thread_time): while other load keeps it off the CPU, no side is
charged; on an idle machine it equals wall time.
"""

import statistics
import time

import agent.codec


def require_c_reader():
    """Benchmarks measure the C frame reader; a tree without it would
    quietly measure the Python reference instead."""
    if not agent.codec.ACCELERATED:
        raise SystemExit("agent/codec/_frames*.so is not built: run native/build_codec.py")


def rate_once(fn, units, min_time):
    """units per CPU second of fn() over one round of at least min_time."""
    calls, start = 0, time.thread_time()
    while True:
        fn()
        calls += 1
        elapsed = time.thread_time() - start
        if elapsed >= min_time:
            return calls * units / elapsed


def interleaved(sides: dict, units: float, repeat: int = 7, min_time: float = 0.2) -> dict:
    """Median units/s of each callable in `sides`, rounds interleaved."""
    samples = {name: [] for name in sides}
    order = list(sides)
    for r in range(repeat):
        for name in order[r % len(order):] + order[:r % len(order)]:
            samples[name].append(rate_once(sides[name], units, min_time))
    return {name: statistics.median(v) for name, v in samples.items()}


def settings(quick: bool) -> tuple:
    """(repeat, min_time): at least 5 rounds either way."""
    return (5, 0.05) if quick else (9, 0.15)


def row(benchmark, ours, peer, peer_rate, target, unit="frames/s", **extra) -> dict:
    return {"benchmark": benchmark, "unit": unit, "nodemesh_per_s": round(ours, 1),
            "peer": peer, "peer_per_s": round(peer_rate, 1),
            "ratio": round(ours / peer_rate, 2), "target": target, **extra}
