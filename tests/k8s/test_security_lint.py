"""Offline security lint: checkov's Kubernetes and Dockerfile policies over what
kustomize builds. Nothing may fail; every skip carries a reason next to the
resource and is explained in docs/kubernetes.md.

checkov pins older versions of packages the project uses (packaging,
python-dateutil), so scripts/setup.sh installs it in its own virtual
environment (.venv-lint), as pre-commit isolates its linters.
"""

import json
import os
import shutil
import subprocess

import pytest

from .manifests import ROOT, TARGETS, build_text, kubectls, need

DOCS = ROOT / "docs" / "kubernetes.md"


def checkov():
    for cand in (os.environ.get("NODEMESH_CHECKOV"), ROOT / ".venv-lint" / "bin" / "checkov",
                 shutil.which("checkov")):
        if cand and os.path.exists(cand):
            return str(cand)
    return need(None, "checkov")


def run_checkov(*args) -> list:
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE", CHECKOV_RUN_SCA_PACKAGE_SCAN_V2="false",
               LOG_LEVEL="WARNING")
    res = subprocess.run([checkov(), *args, "--skip-download", "--compact", "-o", "json"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode in (0, 1), f"checkov failed to run:\n{res.stderr[-2000:]}"
    doc = json.loads(res.stdout)
    return doc if isinstance(doc, list) else [doc]


def results(reports, key) -> list:
    return [c for r in reports for c in r.get("results", {}).get(key, [])]


@pytest.fixture(scope="module")
def manifest_reports(tmp_path_factory):
    tool = need(kubectls().get("kubectl"), "kubectl")
    out = tmp_path_factory.mktemp("built")
    for target in TARGETS:
        (out / f"{target}.yaml").write_text(build_text(target, tool))
    return run_checkov("-d", str(out), "--framework", "kubernetes")


def test_manifests_pass_checkov(manifest_reports):
    passed = results(manifest_reports, "passed_checks")
    failed = [f"{c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']})"
              for c in results(manifest_reports, "failed_checks")]
    assert passed, "checkov ran no Kubernetes check"
    assert not failed, "\n".join(failed)


def test_every_skip_is_explained(manifest_reports):
    docs = DOCS.read_text()
    for c in results(manifest_reports, "skipped_checks"):
        reason = c["check_result"].get("suppress_comment") or ""
        assert len(reason) > 10, f"{c['check_id']} on {c['resource']}: skipped without a reason"
        assert c["check_id"] in docs, f"{c['check_id']} skipped but not explained in {DOCS.name}"


def test_dockerfile_passes_checkov():
    reports = run_checkov("-f", str(ROOT / "Dockerfile"), "--framework", "dockerfile")
    assert results(reports, "passed_checks")
    assert not results(reports, "failed_checks")
    docs = DOCS.read_text()
    for c in results(reports, "skipped_checks"):
        assert c["check_id"] in docs
