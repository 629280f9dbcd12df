"""cgroup layouts, enrollment precedence, node identity, back-off, pods.json."""

import json
import os
import random
import re

import pytest

from agent.k8s import podsfile
from agent.k8s.backoff import Backoff
from agent.k8s.cgroups import (CgroupLayoutError, container_dir, detect_driver, pod_candidates,
                               pod_relative_path, resolve_pod_cgroup)
from agent.k8s.identity import IdentityError, node_identity
from agent.k8s.objects import ObjectError, parse_namespace, parse_pod
from agent.k8s.policy import DEFAULT_RULES, LabelRule, Verdict, decide, parse_rules

from .conftest import namespace, pod

UID = "7c1d3e9a-52b1-4a8e-9f00-0123456789ab"
UID_ = UID.replace("-", "_")


@pytest.mark.parametrize("qos,driver,want", [
    ("Guaranteed", "systemd", f"kubepods.slice/kubepods-pod{UID_}.slice"),
    ("Burstable", "systemd",
     f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"),
    ("BestEffort", "systemd",
     f"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice"),
    ("Guaranteed", "cgroupfs", f"kubepods/pod{UID}"),
    ("Burstable", "cgroupfs", f"kubepods/burstable/pod{UID}"),
    ("BestEffort", "cgroupfs", f"kubepods/besteffort/pod{UID}"),
])
def test_kubelet_layouts(qos, driver, want):
    assert pod_relative_path(UID, qos, driver) == want


def test_kubelet_cgroup_root_is_a_prefix_in_both_spellings():
    assert pod_relative_path(UID, "burstable", "systemd", "/kubelet") == (
        "kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/"
        f"kubelet-kubepods-burstable-pod{UID_}.slice")
    assert pod_relative_path(UID, "burstable", "systemd", "kubelet.slice") == \
        pod_relative_path(UID, "burstable", "systemd", "/kubelet")
    assert pod_relative_path(UID, "guaranteed", "cgroupfs", "/kubelet") == f"kubelet/kubepods/pod{UID}"


def test_unknown_driver_and_qos_search_everything_known_first():
    every = pod_candidates(UID)
    assert len(every) == 6 and len(set(every)) == 6
    assert pod_candidates(UID, "Burstable", "cgroupfs") == [f"kubepods/burstable/pod{UID}"]
    assert pod_candidates(UID, None, "systemd")[0].startswith("kubepods.slice/kubepods-pod")


@pytest.mark.parametrize("bad,field", [
    (dict(uid="../../etc"), "metadata.uid"), (dict(qos="Gold"), "status.qosClass"),
    (dict(driver="cgroupv1"), "cgroup driver"),
])
def test_bad_layout_inputs_name_the_field(bad, field):
    args = dict(uid=UID, qos="Burstable", driver="systemd") | bad
    with pytest.raises(CgroupLayoutError, match=field):
        pod_relative_path(args["uid"], args["qos"], args["driver"])


def test_resolve_needs_a_cgroup_v2_directory(tmp_path):
    rel = pod_relative_path(UID, "besteffort", "cgroupfs")
    (tmp_path / rel).mkdir(parents=True)
    path, searched = resolve_pod_cgroup(str(tmp_path), UID)
    assert path is None and len(searched) == 6       # a bare directory is not a cgroup
    (tmp_path / rel / "cgroup.procs").touch()
    path, _ = resolve_pod_cgroup(str(tmp_path), UID)
    assert path == str(tmp_path / rel)
    assert detect_driver(str(tmp_path)) == "cgroupfs"


def test_container_dirs_by_runtime():
    cid = "ab" * 32
    assert container_dir("/p", f"containerd://{cid}", "systemd") == f"/p/cri-containerd-{cid}.scope"
    assert container_dir("/p", f"cri-o://{cid}", "systemd") == f"/p/crio-{cid}.scope"
    assert container_dir("/p", f"docker://{cid}", "cgroupfs") == f"/p/{cid}"
    with pytest.raises(CgroupLayoutError, match="unknown runtime"):
        container_dir("/p", f"rkt://{cid}", "systemd")


# -- policy --------------------------------------------------------------------

def verdict(p, ns, **kw):
    return decide(parse_pod(p), None if ns is None else parse_namespace(ns), **kw)


@pytest.mark.parametrize("pod_labels,ns_labels,want,reason", [
    ({}, {"nodemesh.io/enabled": "true"}, Verdict.ENROLL, "namespace label nodemesh.io"),
    ({"nodemesh.io/enabled": "false"}, {"nodemesh.io/enabled": "true"}, Verdict.EXCLUDE, "pod"),
    ({"nodemesh.io/enabled": "true"}, {}, Verdict.ENROLL, "pod label"),
    ({}, {"istio.io/dataplane-mode": "ambient"}, Verdict.ENROLL, "istio.io"),
    ({"istio.io/dataplane-mode": "none"}, {"istio.io/dataplane-mode": "ambient"},
     Verdict.EXCLUDE, "pod label istio.io/dataplane-mode=none"),
    ({"nodemesh.io/enabled": "true", "istio.io/dataplane-mode": "none"}, {}, Verdict.ENROLL,
     "nodemesh.io"),                            # ours first at the same level
    ({"istio.io/dataplane-mode": "ambient"}, {"nodemesh.io/enabled": "false"},
     Verdict.ENROLL, "pod label"),              # the pod level first
    ({}, {}, Verdict.EXCLUDE, "no enrollment label"),
])
def test_precedence(pod_labels, ns_labels, want, reason):
    d = verdict(pod("p", "shop", labels=pod_labels), namespace("shop", ns_labels))
    assert d.verdict is want and reason in d.reason


@pytest.mark.parametrize("kwargs,reason", [
    (dict(host_network=True), "host network"), (dict(phase="Succeeded"), "phase Succeeded"),
    (dict(containers=("app", "istio-proxy")), "Istio sidecar"),
    (dict(annotations={"sidecar.istio.io/status": "{}"}), "Istio sidecar"),
    (dict(namespace="nodemesh-system"), "excluded"),
])
def test_never_enrolled(kwargs, reason):
    ns = kwargs.get("namespace", "shop")
    d = verdict(pod("p", labels={"nodemesh.io/enabled": "true"}, **kwargs),
                namespace(ns, {"nodemesh.io/enabled": "true"}))
    assert d.verdict is Verdict.EXCLUDE and reason in d.reason


def test_malformed_label_is_skipped_not_read_as_opt_out():
    d = verdict(pod("p", labels={"nodemesh.io/enabled": "yes"}),
                namespace("shop", {"nodemesh.io/enabled": "true"}))
    assert d.verdict is Verdict.ENROLL
    assert d.problems == ("pod label nodemesh.io/enabled='yes': expected 'true' or 'false'",)


def test_unseen_namespace_is_undecided_unless_the_pod_decides():
    assert verdict(pod("p"), None).verdict is Verdict.UNDECIDED
    assert verdict(pod("p", labels={"nodemesh.io/enabled": "true"}), None).verdict is Verdict.ENROLL


def test_rules_from_configuration():
    assert parse_rules(None) == DEFAULT_RULES
    assert parse_rules(["mesh=on/off", {"key": "k", "on": "1"}]) == (
        LabelRule("mesh", "on", "off"), LabelRule("k", "1", ""))
    for bad, msg in [("x=y", "list"), ([], "empty"), (["novalue"], r"\[0\]"),
                     ([{"key": "k"}], r"\[0\]"), ([3], "string or a mapping")]:
        with pytest.raises(ValueError, match=msg):
            parse_rules(bad)


def test_unreadable_pods_name_the_field():
    p = pod("p")
    p["spec"]["hostNetwork"] = "yes"
    with pytest.raises(ObjectError, match="spec.hostNetwork: expected bool"):
        parse_pod(p)
    del p["metadata"]["uid"]
    with pytest.raises(ObjectError, match="metadata.uid: missing"):
        parse_pod(p)


# -- identity ------------------------------------------------------------------

ENV = {"NODE_NAME": "node-a", "POD_NAME": "nodemesh-agent-x7k2p", "POD_NAMESPACE": "nodemesh-system",
       "POD_IP": "10.0.0.7", "SERVICE_ACCOUNT": "nodemesh-agent",
       "ISTIO_META_ISTIO_VERSION": "1.22.0", "ISTIO_META_MESH_ID": "cluster.local"}


def test_istio_shaped_node_identity():
    ident = node_identity(ENV)
    assert ident.id == ("sidecar~10.0.0.7~nodemesh-agent-x7k2p.nodemesh-system~"
                        "nodemesh-system.svc.cluster.local")
    md = ident.metadata
    assert (md["NAMESPACE"], md["INSTANCE_IPS"], md["SERVICE_ACCOUNT"], md["NODE_NAME"]) == (
        "nodemesh-system", "10.0.0.7", "nodemesh-agent", "node-a")
    assert md["ISTIO_VERSION"] == "1.22.0" and md["MESH_ID"] == "cluster.local"
    assert md["CLUSTER_ID"] == "Kubernetes"
    assert ident.as_node()["id"] == ident.id
    remote = node_identity(ENV, role="remote", template="{type}~{ip}~{pod}.{namespace}~{domain}",
                           domain="corp.local")
    assert remote.id == "router~10.0.0.7~nodemesh-agent-x7k2p.nodemesh-system~corp.local"


def test_identity_errors_name_the_variable_and_field():
    env = dict(ENV, POD_IP="")
    with pytest.raises(IdentityError, match="POD_IP.*status.podIP"):
        node_identity(env)
    with pytest.raises(IdentityError, match="template"):
        node_identity(ENV, template="{type}~{zone}")


def test_node_identity_parses_as_an_envoy_node():
    from envoy.config.core.v3 import base_pb2
    from google.protobuf import json_format

    node = json_format.ParseDict(node_identity(ENV).as_node(), base_pb2.Node())
    assert node.metadata.fields["NODE_NAME"].string_value == "node-a"


# -- back-off and pods.json --------------------------------------------------------

def test_backoff_grows_with_jitter_and_caps():
    b = Backoff(base=1, cap=8, rng=random.Random(7))
    delays = [b.next_delay() for _ in range(8)]
    ceilings = [1, 2, 4, 8, 8, 8, 8, 8]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings))
    b.reset()
    assert b.next_delay() <= 1
    with pytest.raises(ValueError):
        Backoff(base=0)


def test_pods_file_is_replaced_atomically(tmp_path):
    path = str(tmp_path / "run" / "pods.json")
    pods = [{"cgroup_id": 7, "namespace": "b", "name": "x", "uid": "u", "cgroup": "/c",
             "reason": "r"}, {"cgroup_id": 9, "namespace": "a", "name": "y", "uid": "v",
                              "cgroup": "/d", "reason": "r"}]
    podsfile.write(path, "node-a", pods)
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    assert [p["name"] for p in json.load(open(path))["pods"]] == ["y", "x"]
    assert set(podsfile.read(path)) == {7, 9}
    assert os.listdir(tmp_path / "run") == ["pods.json"]      # no temporary left behind
    open(path, "w").write("{half")
    assert podsfile.read(path) == {}


@pytest.mark.parametrize("value, rules", [
    (None, DEFAULT_RULES),
    (["a=on/off", {"key": "b", "on": "yes"}], (LabelRule("a", "on", "off"), LabelRule("b", "yes"))),
    ({"a": "on/off", "b": "yes"}, (LabelRule("a", "on", "off"), LabelRule("b", "yes"))),
])
def test_label_rules_from_configuration(value, rules):
    assert parse_rules(value) == rules


@pytest.mark.parametrize("value, message", [
    ("a=b", "expected a list of rules"),
    ([], "empty"),
    (["novalue"], "[0]: 'novalue': expected 'key=on'"),
    ([{"key": "a"}], "[0]: expected {key, on, off}"),
    ({"a": 1}, "[0]: expected {key, on, off}"),
    ([3], "[0]: expected a string or a mapping, got int"),
])
def test_label_rules_errors_name_the_rule(value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_rules(value)
