"""Build deploy/daemonset with kubectl kustomize and hand out the objects."""

import functools
import os
import pathlib
import re
import shutil
import subprocess

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "daemonset"
TARGETS = {"base": DEPLOY / "base", "istio": DEPLOY / "overlays" / "istio",
           "aeraki": DEPLOY / "overlays" / "aeraki"}
# Debian 12's kubernetes-client (kubectl 1.20, kustomize v2.0.3), unpacked by
# scripts/setup.sh beside the venv: its /usr/bin/kubectl would clash with a
# newer kubectl package, so it is not installed.
DEBIAN_KUBECTL = ROOT / ".venv-tools" / "kubernetes-client" / "usr" / "bin" / "kubectl"
IN_CI = os.environ.get("CI") == "true"


def kubectls() -> dict:
    """name -> path of every kubectl to build with."""
    found = {}
    main = os.environ.get("NODEMESH_KUBECTL") or shutil.which("kubectl")
    if main:
        found["kubectl"] = main
    if DEBIAN_KUBECTL.exists():
        found["debian-kubectl"] = str(DEBIAN_KUBECTL)
    return found


def need(tool, what):
    """Skip without the tool, except in CI where scripts/setup.sh installs it."""
    if not tool:
        if IN_CI:
            pytest.fail(f"{what} missing in CI: scripts/setup.sh should have installed it")
        pytest.skip(f"{what} not installed (scripts/setup.sh installs it)")
    return tool


@functools.lru_cache(maxsize=None)
def build_text(target: str, kubectl: str) -> str:
    res = subprocess.run([kubectl, "kustomize", str(TARGETS[target])], capture_output=True,
                         text=True, timeout=120)
    if res.returncode != 0:
        raise AssertionError(f"{kubectl} kustomize {target} failed:\n{res.stderr}")
    return res.stdout


def build(target: str, kubectl: str = None) -> list:
    kubectl = kubectl or need(kubectls().get("kubectl"), "kubectl")
    return [o for o in yaml.safe_load_all(build_text(target, kubectl)) if o]


def find(objs, kind, name=None):
    hits = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert hits, f"no {kind} {name or ''} in the build"
    return hits[0] if name else hits


def pod_spec(objs, kind, name):
    return find(objs, kind, name)["spec"]["template"]["spec"]


def containers(objs):
    """(workload name, container) of every container of every workload."""
    out = []
    for o in objs:
        if o["kind"] in ("DaemonSet", "Deployment"):
            for c in o["spec"]["template"]["spec"]["containers"]:
                out.append((o["metadata"]["name"], c))
    return out


def normalized(objs) -> list:
    """Objects with generated ConfigMap suffixes and empty maps taken out, so
    two kustomize versions' builds can be compared."""
    text = yaml.safe_dump_all(objs, sort_keys=True)
    text = re.sub(r"nodemesh-bootstrap-[a-z0-9]{10}", "nodemesh-bootstrap-HASH", text)
    out = []
    for o in yaml.safe_load_all(text):
        meta = o.get("metadata", {})
        for k in ("labels", "annotations"):
            if meta.get(k) == {}:
                del meta[k]
        out.append(o)
    return sorted(out, key=lambda o: (o["kind"], o["metadata"]["name"]))


def bootstrap(objs) -> dict:
    cm = [o for o in objs if o["kind"] == "ConfigMap"
          and o["metadata"]["name"].startswith("nodemesh-bootstrap")]
    assert len(cm) == 1, "one bootstrap ConfigMap"
    return yaml.safe_load(cm[0]["data"]["bootstrap.yaml"])
