"""Start-up time of the `nodemesh` CLI, two versions side by side.

`nodemesh drain` is the DaemonSet's preStop: whatever the CLI does before it
reaches the agent delays the switch to the remote pool. Each side is a git
ref (or WORKTREE, the files as they are now) extracted to a temp dir; rounds
run every command on both sides in alternating order, so the machine's other
tenants disturb both alike. Figures are medians of wall time and of CPU
(user + system of the child) per run, and the median of per-round ratios.

    python -m bench.cli_startup [--a main] [--b WORKTREE] [--rounds 10] [--json FILE]

(a side may also be a directory holding a tree, used as it is)

The commands touch nothing real: `drain --help` parses and prints; `status`
asks a run dir and pin dir that do not exist (it reports the agent and
datapath as absent); `drain --no-wait` is the preStop as it runs on a node
with an agent, against a stand-in agent admin socket that answers
`POST /drain` (the time is until that answer: the CLI's own).
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench.common import print_table, write_results
from bench.datapath_ab import extract

NOWHERE = "/tmp/nm-bench-cli-nowhere"
AGENT_RUN_DIR = "/tmp/nm-bench-cli-agent"
COMMANDS = {
    "drain --help": ["drain", "--help"],
    "status": ["status", "--run-dir", NOWHERE, "--pin-dir", NOWHERE + "-pins"],
    "drain --no-wait": ["drain", "--no-wait", "--run-dir", AGENT_RUN_DIR,
                        "--pin-dir", NOWHERE + "-pins"],
}


class StandInAgent:
    """The agent's admin socket for `nodemesh drain`: POST /drain answers as
    the agent does (202 and the status), on a thread of its own."""

    def __init__(self, run_dir: str):
        import asyncio
        import threading

        self.path = os.path.join(run_dir, "admin.sock")
        os.makedirs(run_dir, exist_ok=True)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.ready.wait(10):
            raise RuntimeError("stand-in agent did not start")

    def _run(self):
        from agent.admin import AdminServer, Response

        status = {"state": "draining", "mode": "remote", "drain": None}
        self.server = AdminServer(self.path)
        self.server.route("POST", "/drain", lambda r: Response(202, status))
        self.server.route("GET", "/failover", lambda r: status)
        self.loop.run_until_complete(self.server.start())
        self.ready.set()
        self.loop.run_forever()

    def close(self):
        import asyncio

        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
TIMEOUT_S = 30.0


def run_once(tree: str, argv: list) -> tuple:
    """(wall seconds, CPU seconds) of one `python -m agent.cli.main ARGV` from tree."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": tree,
           "PYTHONDONTWRITEBYTECODE": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "agent.cli.main", *argv], cwd=tree, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=TIMEOUT_S,
                   check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def warm(tree: str):
    """Compile the tree's bytecode once, so no side pays for it in a round."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(tree, "agent")],
                   check=False, stdout=subprocess.DEVNULL)


def measure(trees: dict, rounds: int) -> dict:
    samples = {(side, cmd): [] for side in trees for cmd in COMMANDS}
    sides = list(trees)
    for i in range(rounds):
        order = sides if i % 2 == 0 else sides[::-1]
        for cmd, argv in COMMANDS.items():
            for side in order:
                samples[(side, cmd)].append(run_once(trees[side], argv))
    out = {}
    for cmd in COMMANDS:
        a, b = samples[(sides[0], cmd)], samples[(sides[1], cmd)]
        out[cmd] = {
            side: {"wall_ms_median": round(statistics.median(w for w, _ in s) * 1000, 1),
                   "cpu_ms_median": round(statistics.median(c for _, c in s) * 1000, 1)}
            for side, s in ((sides[0], a), (sides[1], b))}
        out[cmd]["b_over_a_wall"] = round(statistics.median(
            wb / wa for (wa, _), (wb, _) in zip(a, b)), 3)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cli_startup", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", default="main", help="git ref of side a (default main)")
    p.add_argument("--b", default="WORKTREE", help="git ref of side b (default WORKTREE)")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--json", metavar="FILE",
                   help="write the results here (default bench/results/cli_startup.json)")
    args = p.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="nm-bench-cli-")
    agent = StandInAgent(AGENT_RUN_DIR)
    try:
        trees = {side: ref if os.path.isdir(ref) else extract(ref, os.path.join(tmp, side))
                 for side, ref in (("a", args.a), ("b", args.b))}
        for tree in trees.values():
            warm(tree)
        results = measure(trees, args.rounds)
    finally:
        agent.close()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(AGENT_RUN_DIR, ignore_errors=True)
    report = {"a": args.a, "b": args.b, "rounds": args.rounds,
              "load_average": os.getloadavg(), "results": results}
    print_table(f"nodemesh start-up, medians of {args.rounds} (a={args.a}, b={args.b}; "
                f"load {os.getloadavg()[0]:.1f})",
                ["command", "a wall ms", "b wall ms", "b/a", "a cpu ms", "b cpu ms"],
                [[cmd, r["a"]["wall_ms_median"], r["b"]["wall_ms_median"], r["b_over_a_wall"],
                  r["a"]["cpu_ms_median"], r["b"]["cpu_ms_median"]]
                 for cmd, r in results.items()])
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    else:
        print(f"\nresults: {write_results('cli_startup', report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
