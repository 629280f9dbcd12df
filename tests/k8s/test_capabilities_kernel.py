"""The DaemonSet's capability lists are what the datapath needs on this kernel:
the agent loads, pins, attaches and enrolls with exactly its list (and not
without BPF or NET_ADMIN); the local proxy reads the pinned maps with its own."""

import json
import os
import subprocess
import sys

import pytest

from tests.kernel.node import ROOT, Node, dial, free_port

from .manifests import build, need, kubectls, pod_spec

pytestmark = pytest.mark.kernel

VIP = ("198.18.12.2", 80)

AGENT = """
import json, sys
from agent.bpf.datapath import Control
from agent.bpf.loader import Datapath, Settings
s = Settings(**json.loads(sys.argv[1]))
try:
    Datapath(s).up()
    c = Control(s)
    c.set_proxy(local=sys.argv[3], remote="127.0.0.2", mode="local", spill=0)
    c.add_service(sys.argv[4], 1, "http1")
    print(json.dumps({"ok": True, "cgroup_id": c.enroll(sys.argv[2])}))
except Exception as exc:
    print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}))
"""

PROXY = """
import json, sys
from agent.bpf.datapath import Control
from agent.bpf.loader import Settings
c = Control(Settings(**json.loads(sys.argv[1])))
print(json.dumps({"record": c.accept_record("127.0.0.1", 1), "enrolled": len(c.enrolled())}))
"""


def manifest_caps(container) -> list:
    need(kubectls().get("kubectl"), "kubectl")
    spec = pod_spec(build("base"), "DaemonSet", "nodemesh-agent")
    c = next(c for c in spec["containers"] if c["name"] == container)
    return c["securityContext"]["capabilities"]["add"]


def run_with_caps(caps, code, *args) -> dict:
    bounding = ",".join(["-all"] + [f"+{c.lower()}" for c in caps])
    res = subprocess.run(["setpriv", f"--bounding-set={bounding}", "--inh-caps=-all",
                          sys.executable, "-c", code, *args],
                         capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.fixture
def node():
    n = Node("nm-k8s-cap")
    n.cgroup.mkdir(exist_ok=True)
    n.cg("pod")
    n.cg("proxy")
    n._add_route()
    yield n
    n.stop()


def settings_json(node):
    s = node.settings
    return json.dumps({"pin_dir": s.pin_dir, "cgroup_root": s.cgroup_root, "run_dir": s.run_dir})


def test_agent_capabilities_are_enough_and_each_needed(node):
    caps = manifest_caps("agent")
    assert set(caps) == {"BPF", "NET_ADMIN", "PERFMON", "SYS_RESOURCE"}
    local = ("127.0.0.1", free_port())
    args = (settings_json(node), str(node.cg("pod")), "%s:%d" % local, "%s:%d" % VIP)
    for missing in ("BPF", "NET_ADMIN", "PERFMON"):
        out = run_with_caps([c for c in caps if c != missing], AGENT, *args)
        assert not out["ok"], f"the datapath loaded without CAP_{missing}"
        assert not os.path.exists(os.path.join(node.settings.pin_dir, "links")), \
            "a failed load left attachments behind"
    out = run_with_caps(caps, AGENT, *args)
    assert out["ok"], out["error"]
    assert out["cgroup_id"] == os.stat(node.cg("pod")).st_ino
    node.listen(*local)
    [seen] = dial(node, "pod", VIP)              # the datapath it loaded steers
    assert seen["server"] == "%s:%d" % local
    proxy = run_with_caps(manifest_caps("proxy"), PROXY, settings_json(node))
    assert proxy == {"record": None, "enrolled": 1}
