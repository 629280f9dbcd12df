"""The committed *_pb2.py are exactly what scripts/gen_protos.sh generates."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROTOS = ROOT / "agent" / "config" / "protos"


def test_regeneration_is_identical(tmp_path):
    subprocess.run([str(ROOT / "scripts" / "gen_protos.sh"), str(tmp_path)], check=True,
                   cwd=ROOT, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
                   capture_output=True, timeout=120)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2.py"))
    committed = sorted(p.relative_to(ROOT) for p in PROTOS.rglob("*_pb2.py"))
    assert generated == committed
    for rel in generated:
        assert (tmp_path / rel).read_bytes() == (ROOT / rel).read_bytes(), rel


def test_every_proto_has_its_module():
    for proto in PROTOS.rglob("*.proto"):
        assert proto.with_name(proto.stem + "_pb2.py").exists(), proto
