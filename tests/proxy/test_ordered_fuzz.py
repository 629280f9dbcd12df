"""libFuzzer + ASan/UBSan over the ordered lean path in C (native/fuzz/fuzz_ordered.c):
build the target, replay the seeds, fuzz for NODEMESH_FUZZ_SECONDS (default 20).
Each input is a scenario run with the C path and with the Python path
(native/fuzz/fuzz_ordered_driver.py); a difference, an exception or a sanitizer
report is a finding."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
RUN = ROOT / "native" / "fuzz" / "run.sh"
SECONDS = int(os.environ.get("NODEMESH_FUZZ_SECONDS", "20"))

pytestmark = pytest.mark.slow


def run(seconds, out):
    if not (shutil.which("clang-14") or shutil.which("clang")):
        pytest.fail("clang (clang-14, llvm-14, libclang-rt-14-dev) is needed to fuzz")
    env = dict(os.environ, FUZZ_OUT=str(out), PYTHON=sys.executable)
    proc = subprocess.run(["sh", str(RUN), "ordered", str(seconds)], env=env,
                          capture_output=True, text=True, timeout=seconds + 300, check=False)
    if proc.returncode:
        crashes = sorted(out.glob("crash-*")) + sorted(out.glob("timeout-*"))
        blob = crashes[0].read_bytes().hex() if crashes else "(no crash file)"
        log = (out / "log").read_text(errors="replace")[-3000:] if (out / "log").exists() else ""
        pytest.fail(f"{proc.stdout}{proc.stderr}\ninput hex: {blob[:1024]}\n{log}")
    return proc.stdout.strip()


def test_fuzz_ordered(tmp_path):
    assert run(0, tmp_path).startswith("fuzz ordered: ok")
    summary = run(SECONDS, tmp_path)
    assert summary.startswith("fuzz ordered: ok"), summary
    print(summary)
