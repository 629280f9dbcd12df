"""What every benchmark shares: timing by medians, machine facts, results files.

A benchmark measures nodemesh and its peers in the same run and reports
ratios; absolute figures on this noisy machine only mean something next to
the peer measured a moment before.
"""

import json
import os
import pathlib
import platform
import statistics
import time

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def median_rate(fn, units_per_call, repeat=7, min_time=0.2):
    """Median units/second of fn() over `repeat` rounds of at least min_time each."""
    rates = []
    for _ in range(repeat):
        calls, start = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        rates.append(calls * units_per_call / elapsed)
    return statistics.median(rates)


def machine() -> dict:
    import psutil

    return {
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def write_results(name: str, data: dict) -> pathlib.Path:
    """bench/results/<name>.json with the machine attached."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps({"machine": machine(), **data}, indent=2, sort_keys=True) + "\n")
    return out


def print_table(title: str, header: list, rows: list) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    print(f"\n{title}")
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
