"""Fixtures for enrollment tests: the scripted API, a kubelet-like cgroup tree,
a map that records what it holds, and an enroller running in a thread."""

import contextlib
import os
import pathlib
import threading
import time
import uuid

import pytest
from kubernetes import client as k8s_client

from agent.k8s import Enroller, EnrollerSettings
from agent.k8s.cgroups import pod_relative_path

from .scripted_api import ScriptedAPI

NODE = "node-a"


@pytest.fixture
def api():
    server = ScriptedAPI().start()
    yield server
    server.stop()


def pod(name, namespace="shop", labels=None, node=NODE, qos="Burstable", phase="Running",
        host_network=False, uid=None, containers=("app",), annotations=None):
    spec = {"nodeName": node, "containers": [{"name": c, "image": "example/app:1"}
                                             for c in containers]}
    if host_network:
        spec["hostNetwork"] = True
    meta = {"name": name, "namespace": namespace, "uid": uid or str(uuid.uuid4()),
            "labels": dict(labels or {})}
    if annotations:
        meta["annotations"] = annotations
    status = {"phase": phase}
    if qos:
        status["qosClass"] = qos
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def namespace(name, labels=None):
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "uid": str(uuid.uuid4()), "labels": dict(labels or {})}}


class KubeletTree:
    """Pod cgroup directories laid out as the kubelet lays them out (a plain
    directory with a cgroup.procs file stands for a cgroup v2 directory)."""

    def __init__(self, root, driver, real_cgroups=False):
        self.root, self.driver, self.real = pathlib.Path(root), driver, real_cgroups

    def path(self, obj) -> pathlib.Path:
        m, qos = obj["metadata"], obj["status"].get("qosClass", "BestEffort")
        return self.root / pod_relative_path(m["uid"], qos, self.driver)

    def add(self, obj) -> pathlib.Path:
        p = self.path(obj)
        p.mkdir(parents=True, exist_ok=True)
        if not self.real:
            (p / "cgroup.procs").touch()
        return p

    def remove(self, obj):
        p = self.path(obj)
        if self.real:
            os.rmdir(p)
        else:
            (p / "cgroup.procs").unlink()
            p.rmdir()


class FakeControl:
    """The enrolled map's contract (enroll/unenroll by path, enrolled) plus
    unenroll_id, with a record of every call and scripted failures."""

    def __init__(self):
        self.entries = {}        # cgroup id -> path
        self.calls = []
        self.fail_next = 0
        self.lock = threading.Lock()

    def _maybe_fail(self, what):
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError(f"datapath map enrolled not found ({what})")

    def enroll(self, path, spill=None):
        with self.lock:
            self._maybe_fail("enroll")
            if not os.path.isfile(os.path.join(path, "cgroup.procs")):
                raise RuntimeError(f"{path}: not a cgroup v2 directory")
            cid = os.stat(path).st_ino
            self.entries[cid] = str(path)
            self.calls.append(("enroll", str(path)))
            return cid

    def unenroll(self, path):
        with self.lock:
            self._maybe_fail("unenroll")
            cid = os.stat(path).st_ino
            self.calls.append(("unenroll", str(path)))
            return self.entries.pop(cid, None) is not None

    def unenroll_id(self, cid):
        with self.lock:
            self._maybe_fail("unenroll")
            self.calls.append(("unenroll_id", cid))
            return self.entries.pop(cid, None) is not None

    def enrolled(self):
        with self.lock:
            return [{"cgroup_id": cid} for cid in self.entries]

    def paths(self) -> set:
        with self.lock:
            return set(self.entries.values())


def fast_settings(tmp_path, **over) -> EnrollerSettings:
    base = dict(watch_timeout=2, request_timeout=1.0, api_backoff_base=0.05,
                api_backoff_cap=0.2, retry_base=0.05, retry_cap=0.2, resync_interval=0.2,
                pods_file=str(tmp_path / "run" / "pods.json"))
    base.update(over)
    return EnrollerSettings(**base)


def wait_until(predicate, what, timeout=15.0):
    """Poll until predicate() is true (bounded); fail naming what was awaited."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for: {what}")


@contextlib.contextmanager
def running(api, control, cgroup_root, settings, labels=None):
    cfg = k8s_client.Configuration(host=api.url)
    enroller = Enroller(k8s_client.ApiClient(cfg), NODE, control, str(cgroup_root),
                        labels=labels, settings=settings)
    stop = threading.Event()
    t = threading.Thread(target=enroller.run, args=(stop,), daemon=True)
    t.start()
    try:
        yield enroller
    finally:
        stop.set()
        t.join(timeout=15)
        assert not t.is_alive(), "enroller.run() did not return after stop"
