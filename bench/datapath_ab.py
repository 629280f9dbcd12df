"""Connect cost of two versions of the datapath, side by side: the A/B test
behind each step of docs/benchmarks-datapath.md ("Connect cost, step by step").

Each side is a git ref (or WORKTREE, the files as they are now), extracted to
a temp dir and loaded by its own agent code into its own cgroup tree and pin
dir; both sides steer the same VIP to their own sink listener (in their
proxy cgroup, like the node's proxy). Rounds alternate A, B and `none`
(a client in no cgroup of ours, straight to a sink) in rotating order, so
the machine's other tenants disturb all three alike; the figures are medians
of per-round ratios.

    python -m bench.datapath_ab --a HEAD~1 --b WORKTREE [--rounds 21] [--seconds 0.3]
         [--pair]     # services that pair (else pair=False, where the version has it)
         [--pair-a | --pair-b]  # only that side's service pairs: pairing's cost, one version
         [--request SIZE]   # one SIZE-byte request and its echo before each close

Needs root, cgroup v2, bcc, cc, git. Owns (TAG = $NODEMESH_BENCH_TAG, default
nm-bench): /sys/fs/bpf/TAG-ab-{a,b}, <v2>/TAG-ab-{a,b}, /tmp/TAG-ab-*, ports
$NODEMESH_BENCH_PORT_BASE + 21..23; removes them at the end.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap

from bench import datapath as dp
from bench.common import print_table

REPO = dp.HERE.parent
SIDES = ("a", "b")
MAX_CONNECTS = 200_000

SETUP = """
import inspect, json, sys
from agent.bpf.loader import Datapath, Settings
from agent.bpf.datapath import Control
cfg = json.loads(sys.argv[1])
s = Settings(pin_dir=cfg["pin_dir"], cgroup_root=cfg["root"], run_dir=cfg["run_dir"])
if cfg["action"] == "down":
    Datapath(s).uninstall()
    sys.exit(0)
if cfg["action"] == "counters":
    print(json.dumps(Control(s).counters()))
    sys.exit(0)
Datapath(s).up()
c = Control(s)
c.set_proxy(local="127.0.0.1:%d" % cfg["sink"], mode="local")
kw = {"pair": cfg["pair"]} if "pair" in inspect.signature(c.add_service).parameters else {}
c.add_service("%s:%d" % (cfg["vip"], cfg["vip_port"]), 1, "tcp", **kw)
c.enroll(cfg["client"])
"""


def extract(ref: str, into: str) -> str:
    """The repository at ref (WORKTREE: as it is on disk) in a directory of its own."""
    if ref == "WORKTREE":
        shutil.copytree(REPO, into, ignore=shutil.ignore_patterns(".git", ".venv", "*.so",
                                                                    "__pycache__", "results"))
        return into
    os.makedirs(into)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return into


class Side:
    def __init__(self, name, ref, tmp, pair):
        self.name, self.ref, self.pair = name, ref, pair
        tag = f"{dp.TAG}-ab-{name}"
        self.tree = extract(ref, os.path.join(tmp, f"tree-{name}"))
        self.pin_dir = f"/sys/fs/bpf/{tag}"
        self.root = os.path.join(dp.CGROUP_V2, tag)
        self.client = os.path.join(self.root, "client")
        self.proxy = os.path.join(self.root, "proxy")
        self.run_dir = os.path.join(tmp, f"run-{name}")
        self.sink = dp.PORT_BASE + 21 + SIDES.index(name)
        self.server = None

    def agent(self, action):
        cfg = {"action": action, "pin_dir": self.pin_dir, "root": self.root,
               "run_dir": self.run_dir, "sink": self.sink, "vip": dp.VIP,
               "vip_port": dp.VIP_PORT, "client": self.client, "pair": self.pair}
        r = subprocess.run([sys.executable, "-c", SETUP, json.dumps(cfg)], cwd=self.tree,
                           env={**os.environ, "PYTHONPATH": self.tree},
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"side {self.name} ({self.ref}) {action}: {r.stderr[-2000:]}")
        return r.stdout

    def up(self):
        for d in (self.root, self.client, self.proxy):
            os.makedirs(d, exist_ok=True)
        self.agent("up")

    def down(self, errors):
        try:
            self.agent("down")
        except Exception as exc:    # keep cleaning the rest
            errors.append(str(exc))
        for d in (self.client, self.proxy, self.root):
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError as exc:
                errors.append(f"rmdir {d}: {exc}")


class AB:
    def __init__(self, a, b, pair, rounds, seconds, request=0):
        self.tmp = tempfile.mkdtemp(prefix=f"{dp.TAG}-ab-")
        pairs = pair if isinstance(pair, tuple) else (pair, pair)
        self.sides = [Side(n, ref, self.tmp, p) for n, ref, p in zip(SIDES, (a, b), pairs)]
        self.rounds, self.seconds, self.request = rounds, seconds, request
        self.bench = dp.Bench()     # for its compile, server and route helpers
        self.plain_sink = dp.PORT_BASE + 23

    def setup(self):
        self.bench.compile()
        self.bench.guard_route()
        listen = "-e" if self.request else "-k"     # echo once, or accept and close
        for side in self.sides:
            side.up()
            side.server = self.bench.server(["-g", side.proxy, listen, f"127.0.0.1:{side.sink}"])
        self.bench.server([listen, f"127.0.0.1:{self.plain_sink}"])

    def teardown(self) -> list:
        errors = self.bench.teardown()
        for side in self.sides:
            side.down(errors)
        shutil.rmtree(self.tmp, ignore_errors=True)
        return errors

    def once(self, who):
        base = ["conn", "-d", str(self.seconds), "-n", str(MAX_CONNECTS)]
        if self.request:
            base += ["-r", str(self.request)]
        if who == "none":
            return self.bench._client(base + ["-a", f"127.0.0.1:{self.plain_sink}"])
        side = self.sides[SIDES.index(who)]
        return self.bench._client(base + ["-a", f"{dp.VIP}:{dp.VIP_PORT}", "-g", side.client])

    def run(self) -> dict:
        order = ("a", "b", "none")
        raw = {w: [] for w in order}
        for rnd in range(self.rounds):
            for w in order[rnd % 3:] + order[:rnd % 3]:
                raw[w].append(self.once(w))
        steered = {s.name: json.loads(s.agent("counters"))["local"] for s in self.sides}
        out = {"refs": {s.name: s.ref for s in self.sides}, "rounds": self.rounds,
               "seconds": self.seconds, "pair": [s.pair for s in self.sides], "request": self.request}
        for w in order:
            out[w] = {"connects_per_s": round(statistics.median(r["rate"] for r in raw[w]), 1),
                      "p50_us": round(statistics.median(r["p50_us"] for r in raw[w]), 2),
                      "client_cpu_us": round(statistics.median(_cpu_us(r) for r in raw[w]), 2)}
        for w in SIDES:
                out[w]["valid"] = steered[w] >= sum(r["count"] for r in raw[w])
                out[w]["paired_ratio_vs_none"] = dp._paired(raw[w], raw["none"])
                out[w]["p50_ratio_vs_none"] = round(out["none"]["p50_us"] / out[w]["p50_us"], 3)
                out[w]["cpu_ratio_vs_none"] = _paired_cpu(raw[w], raw["none"])
        out["paired_ratio_b_vs_a"] = dp._paired(raw["b"], raw["a"])
        out["cpu_ratio_b_vs_a"] = _paired_cpu(raw["b"], raw["a"])
        out["p50_ratio_b_vs_a"] = round(out["a"]["p50_us"] / out["b"]["p50_us"], 3)
        return out


def _cpu_us(r) -> float:
    """The client's CPU per connect: on loopback the whole handshake and both
    ends' teardown run in its syscalls, so this is the cost the tenants'
    scheduling noise touches least."""
    return r["cpu_s"] / max(r["count"], 1) * 1e6


def _paired_cpu(x_runs, base_runs) -> float:
    """Median over rounds of base's CPU per connect / x's (like a rate ratio:
    above 1, x is cheaper)."""
    ratios = [_cpu_us(b) / _cpu_us(x) for x, b in zip(x_runs, base_runs) if _cpu_us(x) > 0]
    return round(statistics.median(ratios), 3) if ratios else 0.0


def report(res: dict) -> None:
    rows = []
    for w in ("a", "b", "none"):
        f = res[w]
        rows.append([w, res["refs"].get(w, "-"),
                     f"{f['connects_per_s']:.0f}" + ("" if f.get("valid", True) else " INVALID"),
                     f"{f.get('paired_ratio_vs_none', 1):.3f}x", f"{f['p50_us']:.1f}",
                     f"{f.get('p50_ratio_vs_none', 1):.3f}x", f"{f['client_cpu_us']:.2f}",
                     f"{f.get('cpu_ratio_vs_none', 1):.3f}x"])
    what = f"connect + {res['request']} B request + close" if res.get("request") else \
        "connect + close"
    print_table(f"{what}, {res['rounds']} rounds of {res['seconds']} s"
                f"{_pairing(res['pair'])}",
                ["side", "ref", "connects/s", "paired vs none", "p50 us", "none p50/p50",
                 "client cpu us", "none cpu/cpu"], rows)
    print(textwrap.dedent(f"""
        b vs a: {res['paired_ratio_b_vs_a']:.3f}x (median of per-round rate ratios), \
{res['p50_ratio_b_vs_a']:.3f}x (p50), {res['cpu_ratio_b_vs_a']:.3f}x (client CPU)"""))


def _pairing(pair) -> str:
    pair = pair if isinstance(pair, list) else [pair, pair]
    if all(pair):
        return " (paired services)"
    return f" (side {SIDES[pair.index(True)]}'s service pairs)" if any(pair) else ""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--a", required=True, help="git ref, or WORKTREE")
    ap.add_argument("--b", required=True, help="git ref, or WORKTREE")
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--seconds", type=float, default=0.3)
    ap.add_argument("--pair", action="store_true", help="services that pair (the default of add_service)")
    only = ap.add_mutually_exclusive_group()
    only.add_argument("--pair-a", action="store_true", help="only side a's service pairs")
    only.add_argument("--pair-b", action="store_true", help="only side b's service pairs")
    ap.add_argument("--request", type=int, default=0, metavar="SIZE",
                    help="one request of SIZE bytes (<= 16384) and its echo before each close")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("the datapath A/B benchmark needs root (BPF, cgroups)")
    if not 0 <= args.request <= 16384:
        sys.exit("--request: 0 to 16384 bytes")
    pair = (args.pair or args.pair_a, args.pair or args.pair_b)
    ab = AB(args.a, args.b, pair, args.rounds, args.seconds, args.request)
    try:
        ab.setup()
        res = ab.run()
    finally:
        errors = ab.teardown()
    report(res)
    if errors:
        print("teardown: " + "; ".join(errors), file=sys.stderr)


if __name__ == "__main__":
    main()
