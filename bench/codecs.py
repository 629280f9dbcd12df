"""All codec benchmarks in one table: each bench/codec_<proto>.py that exists.

    python bench/codecs.py [--quick]

Writes bench/results/codecs.json (bench.common.write_results).
"""

import importlib
import os
import pathlib
import sys
import traceback

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench.common import print_table, write_results  # noqa: E402

PROTOCOLS = ["dubbo", "thrift", "redis", "http1", "lengthfield"]
HERE = pathlib.Path(__file__).resolve().parent


def run(quick=False):
    rows, missing, failed = [], [], {}
    for proto in PROTOCOLS:
        if not (HERE / f"codec_{proto}.py").exists():
            missing.append(proto)
            continue
        try:
            module = importlib.import_module(f"bench.codec_{proto}")
            for row in module.run(quick=quick):
                rows.append(dict(row, protocol=proto))
        except Exception:   # one broken bench must not hide the others
            failed[proto] = traceback.format_exc(limit=3)
    return rows, missing, failed


def main(argv):
    quick = "--quick" in argv
    load_before = os.getloadavg()
    rows, missing, failed = run(quick)
    load = {"before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in os.getloadavg()]}
    print_table("codecs (nodemesh vs peer, same run; medians of interleaved rounds)",
                ["benchmark", "unit", "nodemesh/s", "peer", "peer/s", "ratio", "target"],
                [[r["benchmark"], r.get("unit", ""), f'{r["nodemesh_per_s"]:,.0f}', r["peer"],
                  f'{r["peer_per_s"]:,.0f}', r["ratio"], r.get("target", "")] for r in rows])
    if missing:
        print(f"\nno bench yet: {', '.join(missing)}")
    for proto, tb in failed.items():
        print(f"\n{proto} bench failed:\n{tb}")
    print(f"\nload average (1, 5, 15 min) before {load['before']}, after {load['after']} "
          f"on {os.cpu_count()} CPUs; rates per second of the bench thread's CPU time")
    path = write_results("codecs", {"quick": quick, "rows": rows, "missing": missing,
                                    "failed": sorted(failed), "load_average": load})
    print(f"\nwrote {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
