"""deploy/daemonset: builds with kustomize, validates against the Kubernetes
schemas, and holds to the security and wiring rules written down in
docs/kubernetes.md (every rule here is one a reader can check by eye)."""

import copy
import re

import kubernetes_validate
import pytest
import yaml
from google.protobuf import json_format

from agent.config.bootstrap import parse_bootstrap
from agent.k8s.identity import REQUIRED_ENV
from agent.k8s.policy import parse_rules

from .manifests import (TARGETS, bootstrap, build, build_text, containers, find, kubectls, need,
                        normalized, pod_spec)

OVERLAYS = list(TARGETS)
# Kubernetes versions the manifests must pass: the oldest we support (1.30:
# securityContext.appArmorProfile) and the newest schema the validator ships.
VERSIONS = ["1.30.0", kubernetes_validate.utils.latest_version()]
AGENT_CAPS = {"agent": {"BPF", "NET_ADMIN", "PERFMON", "SYS_RESOURCE"}, "proxy": {"BPF"}}
HOST_PATHS = {"/sys/fs/bpf": False, "/sys/fs/cgroup": True, "/lib/modules": True,
              "/usr/src": True, "/run/nodemesh": False}   # path -> mounted read-only
DRAIN_DEADLINE = re.compile(r"--deadline (\d+)")


@pytest.mark.parametrize("target", OVERLAYS)
def test_every_kubectl_builds_the_same_objects(target):
    tools = kubectls()
    need(tools.get("kubectl"), "kubectl")
    builds = {name: normalized(build(target, path)) for name, path in tools.items()}
    first = next(iter(builds.values()))
    for name, objs in builds.items():
        assert objs == first, f"{name} builds {target} differently"


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("target", OVERLAYS)
def test_objects_validate_against_the_schema(target, version):
    for obj in build(target):
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']} ({version}): {exc.message} "
                        f"at {'.'.join(str(p) for p in exc.path)}")


@pytest.mark.parametrize("target", OVERLAYS)
def test_no_privileged_and_named_capabilities_only(target):
    objs = build(target)
    for workload, c in containers(objs):
        sc = c.get("securityContext", {})
        where = f"{workload}/{c['name']}"
        assert sc.get("privileged") is False, f"{where}: privileged must be false"
        assert sc.get("allowPrivilegeEscalation") is False, where
        assert sc.get("readOnlyRootFilesystem") is True, where
        assert sc["capabilities"]["drop"] == ["ALL"], f"{where}: drop ALL first"
        added = set(sc["capabilities"].get("add", []))
        allowed = AGENT_CAPS.get(c["name"], set()) if workload == "nodemesh-agent" else set()
        assert added <= allowed, f"{where}: capabilities {added - allowed} not documented"
        assert "SYS_ADMIN" not in added


@pytest.mark.parametrize("target", OVERLAYS)
def test_remote_pool_runs_unprivileged(target):
    objs = build(target)
    spec = pod_spec(objs, "Deployment", "nodemesh-remote-proxy")
    assert not spec.get("hostNetwork")
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert not [v for v in spec["volumes"] if "hostPath" in v]


@pytest.mark.parametrize("target", OVERLAYS)
def test_resources_probes_and_drain(target):
    objs = build(target)
    for workload, c in containers(objs):
        where = f"{workload}/{c['name']}"
        req, lim = c["resources"]["requests"], c["resources"]["limits"]
        assert req.get("cpu") and req.get("memory") and lim.get("memory"), where
        assert c.get("readinessProbe") and c.get("livenessProbe"), where
    for kind, name in (("DaemonSet", "nodemesh-agent"), ("Deployment", "nodemesh-remote-proxy")):
        spec = pod_spec(objs, kind, name)
        for c in spec["containers"]:
            cmd = " ".join(c["lifecycle"]["preStop"]["exec"]["command"])
            deadline = int(DRAIN_DEADLINE.search(cmd).group(1))
            assert cmd.startswith("nodemesh drain")
            assert spec["terminationGracePeriodSeconds"] >= deadline + 10, \
                f"{name}: grace period must outlast the drain deadline ({deadline} s)"


@pytest.mark.parametrize("target", OVERLAYS)
def test_daemonset_node_integration(target):
    objs = build(target)
    ds = find(objs, "DaemonSet", "nodemesh-agent")
    spec = ds["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert spec["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in spec["tolerations"]
    update = ds["spec"]["updateStrategy"]
    assert update["type"] == "RollingUpdate" and update["rollingUpdate"]["maxSurge"] == 0
    volumes = {v["name"]: v for v in spec["volumes"]}
    host = {v["hostPath"]["path"]: name for name, v in volumes.items() if "hostPath" in v}
    assert set(host) == set(HOST_PATHS), "hostPath volumes are exactly the documented ones"
    for c in spec["containers"]:
        for m in c.get("volumeMounts", []):
            v = volumes[m["name"]]
            assert m.get("mountPropagation") in (None, "HostToContainer"), "never Bidirectional"
            if "hostPath" in v and HOST_PATHS[v["hostPath"]["path"]]:
                assert m.get("readOnly") is True, f"{c['name']}: {m['mountPath']} read-only"
    agent = next(c for c in spec["containers"] if c["name"] == "agent")
    bpf = next(m for m in agent["volumeMounts"] if m["mountPath"] == "/sys/fs/bpf")
    assert bpf["mountPropagation"] == "HostToContainer"


@pytest.mark.parametrize("target", OVERLAYS)
def test_downward_api_gives_the_node_identity(target):
    objs = build(target)
    for workload, c in containers(objs):
        env = {e["name"]: e for e in c.get("env", [])}
        for name, field in REQUIRED_ENV.items():
            assert env[name]["valueFrom"]["fieldRef"]["fieldPath"] == field, \
                f"{workload}/{c['name']}: {name} from {field}"


@pytest.mark.parametrize("target", OVERLAYS)
def test_rbac_is_read_only_pods_and_namespaces(target):
    objs = build(target)
    roles = [o for o in objs if o["kind"] in ("Role", "ClusterRole")]
    assert [r["metadata"]["name"] for r in roles] == ["nodemesh-agent"]
    for rule in roles[0]["rules"]:
        assert rule["apiGroups"] == [""]
        assert set(rule["resources"]) <= {"pods", "namespaces"}
        assert set(rule["verbs"]) <= {"get", "list", "watch"}
    for b in [o for o in objs if o["kind"] in ("RoleBinding", "ClusterRoleBinding")]:
        assert [s["name"] for s in b["subjects"]] == ["nodemesh-agent"]
    ds_sa = pod_spec(objs, "DaemonSet", "nodemesh-agent")["serviceAccountName"]
    assert ds_sa == "nodemesh-agent"


@pytest.mark.parametrize("target", OVERLAYS)
def test_remote_pool_wiring(target):
    objs = build(target)
    dep = find(objs, "Deployment", "nodemesh-remote-proxy")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    svc = find(objs, "Service", "nodemesh-remote-proxy")
    assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())
    ports = {p["name"] for c in dep["spec"]["template"]["spec"]["containers"]
             for p in c.get("ports", [])}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports
    pdb = find(objs, "PodDisruptionBudget", "nodemesh-remote-proxy")
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    hpa = find(objs, "HorizontalPodAutoscaler", "nodemesh-remote-proxy")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "nodemesh-remote-proxy"
    assert "replicas" not in dep["spec"], "the HPA owns the replica count"
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["minAvailable"]
    boot = bootstrap(objs)["nodemesh"]
    assert boot["remote_proxy"].startswith(f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc")


@pytest.mark.parametrize("target", OVERLAYS)
def test_bootstrap_is_a_strict_envoy_bootstrap(target):
    from envoy.config.bootstrap.v3 import bootstrap_pb2
    from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401 - Any types
    from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401

    doc = copy.deepcopy(bootstrap(build(target)))
    section = doc.pop("nodemesh")
    msg = json_format.ParseDict(doc, bootstrap_pb2.Bootstrap())      # unknown fields raise
    clusters = {c.name for c in msg.static_resources.clusters}
    assert msg.dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name in clusters
    assert section["local_proxy"] == "127.0.0.1:15001"
    if target == "aeraki":
        assert "aeraki-xds" in clusters


@pytest.mark.parametrize("target", TARGETS)
def test_bootstrap_is_what_the_agent_accepts(target):
    """The ConfigMap's bootstrap through the agent's own parser, nodemesh: section included."""
    settings = parse_bootstrap(yaml.safe_dump(bootstrap(build(target))), target).settings
    assert settings.enrollment.labels == parse_rules(["nodemesh.io/enabled=true/false",
                                                      "istio.io/dataplane-mode=ambient/none"])
    assert settings.enrollment.cgroup_root == "/host/sys/fs/cgroup"


@pytest.mark.parametrize("target", OVERLAYS)
def test_bootstrap_paths_are_mounted(target):
    objs = build(target)
    section = bootstrap(objs)["nodemesh"]
    spec = pod_spec(objs, "DaemonSet", "nodemesh-agent")
    agent = next(c for c in spec["containers"] if c["name"] == "agent")
    mounts = [m["mountPath"] for m in agent["volumeMounts"]]
    env = {e["name"]: e.get("value") for e in agent["env"]}
    assert section["enrollment"]["cgroup_root"] == env["NODEMESH_CGROUP_ROOT"] in mounts
    paths = [section["admin"], section["proxy_admin"], section["xds"]["persist_path"]]
    paths += [v for v in (section["xds"].get("tls", {}).get("ca"), section["xds"].get("token_path"))
              if v]
    for path in paths:
        assert any(path.startswith(m.rstrip("/") + "/") for m in mounts), f"{path} not mounted"


@pytest.mark.parametrize("target", OVERLAYS)
def test_one_image_for_every_container(target):
    images = {c["image"] for _, c in containers(build(target))}
    assert len(images) == 1 and next(iter(images)).startswith("nodemesh/nodemesh:")


def test_namespace_is_never_enrolled():
    ns = find(build("base"), "Namespace", "nodemesh-system")
    assert ns["metadata"]["labels"]["nodemesh.io/enabled"] == "false"
    from agent.k8s.policy import DEFAULT_EXCLUDED_NAMESPACES
    assert ns["metadata"]["name"] in DEFAULT_EXCLUDED_NAMESPACES


def test_build_output_is_not_empty_for_every_target():
    tool = need(kubectls().get("kubectl"), "kubectl")
    for target in OVERLAYS:
        assert "kind: DaemonSet" in build_text(target, tool)
