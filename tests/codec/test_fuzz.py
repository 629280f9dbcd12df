"""libFuzzer + ASan/UBSan over every codec (native/fuzz/): build the target,
replay the seeds, fuzz for NODEMESH_FUZZ_SECONDS (default 20) each."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
RUN = ROOT / "native" / "fuzz" / "run.sh"
PROTOCOLS = ["dubbo", "thrift", "redis", "http1", "lengthfield"]
SECONDS = int(os.environ.get("NODEMESH_FUZZ_SECONDS", "20"))

pytestmark = pytest.mark.slow


def run(proto, seconds, out):
    if not (shutil.which("clang-14") or shutil.which("clang")):
        pytest.fail("clang (clang-14, llvm-14, libclang-rt-14-dev) is needed to fuzz the codecs")
    env = dict(os.environ, FUZZ_OUT=str(out), PYTHON=sys.executable)
    proc = subprocess.run(["sh", str(RUN), proto, str(seconds)], env=env, capture_output=True,
                          text=True, timeout=seconds + 300)
    if proc.returncode:
        crashes = sorted(out.glob("crash-*")) + sorted(out.glob("timeout-*")) + sorted(out.glob("oom-*"))
        blob = crashes[0].read_bytes().hex() if crashes else "(no crash file)"
        log = (out / "log").read_text(errors="replace")[-3000:] if (out / "log").exists() else ""
        pytest.fail(f"{proc.stdout}{proc.stderr}\ninput hex: {blob[:4096]}\n{log}")
    return proc.stdout.strip()


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_fuzz_codec(proto, tmp_path):
    replay = run(proto, 0, tmp_path)
    assert replay.startswith(f"fuzz {proto}: ok"), replay
    summary = run(proto, SECONDS, tmp_path)
    assert summary.startswith(f"fuzz {proto}: ok"), summary
    print(summary)


def test_fuzz_mux(tmp_path):
    """native/mux.c (the batch request-id rewrite of agent.codec._frames.rewrite)."""
    assert run("mux", 0, tmp_path).startswith("fuzz mux: ok")
    summary = run("mux", SECONDS, tmp_path)
    assert summary.startswith("fuzz mux: ok"), summary
    print(summary)
