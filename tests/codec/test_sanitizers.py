"""The codec unit tests against an ASan/UBSan build of the extensions.

Builds agent.codec._native (the codecs, cffi) and agent.codec._frames (the
frame reader) with NODEMESH_SANITIZE=1 into a temporary copy of
the package (the working tree's build is untouched) and runs tests/codec in a
subprocess with the compiler's ASan runtime preloaded (the interpreter itself
is not instrumented). ASAN_OPTIONS=detect_leaks=0: CPython leaks by design.
"""

import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

# The codec unit tests (the slow ones are this file and the fuzzers; the
# bench smoke test needs bench/, which the copy leaves out).
SKIP = {"test_fuzz.py", "test_sanitizers.py", "test_bench_codecs.py"}


def asan_runtime(cc):
    """The shared ASan runtime of the compiler cffi builds with."""
    name = "libclang_rt.asan-x86_64.so" if "clang" in cc else "libasan.so"
    out = subprocess.run([cc, f"-print-file-name={name}"], capture_output=True, text=True,
                         check=True).stdout.strip()
    if not os.path.isabs(out) or not os.path.exists(out):
        pytest.fail(f"{cc} has no {name}: install its ASan runtime")
    return out


def test_codec_tests_under_asan_and_ubsan(tmp_path):
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    runtime = asan_runtime(cc)
    shutil.copytree(ROOT / "native", tmp_path / "native",   # fuzz/: seeds for test_frames
                    ignore=shutil.ignore_patterns("out", "crash-*"))
    shutil.copytree(ROOT / "agent", tmp_path / "agent",
                    ignore=shutil.ignore_patterns("_native*", "_frames*", "__pycache__"))
    shutil.copytree(ROOT / "tests", tmp_path / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, NODEMESH_SANITIZE="1", PYTHONPATH=str(tmp_path))
    build = subprocess.run([sys.executable, "native/build_codec.py"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    tests = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "tests" / "codec").glob("test_*.py")
                   if p.name not in SKIP)
    env.update(LD_PRELOAD=runtime, ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    where = subprocess.run([sys.executable, "-c", "import agent.codec._native as n; print(n.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert where.stdout.startswith(str(tmp_path)), where.stdout + where.stderr
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           # live-server tests time real clients (too slow under ASan); the copy has no corpus
                           "-m", "not slow", "-k", "not live_server and not seed_corpus", *tests],
                          cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    report = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, report
    assert " passed" in proc.stdout, report
    assert "AddressSanitizer" not in proc.stderr and "runtime error" not in proc.stderr, report
    # the build really is instrumented: the codecs and the frame reader
    for name in ("_native", "_frames"):
        lib = next((tmp_path / "agent" / "codec").glob(name + "*.so"))
        assert b"__asan_" in lib.read_bytes(), lib
