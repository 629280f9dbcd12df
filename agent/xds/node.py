"""The xDS node identity sent on the first request of every stream.

An Envoy bootstrap's `node` is used as it is (an Envoy user's bootstrap works
unchanged). What it leaves empty is filled from the downward-API environment
the DaemonSet sets (NODE_NAME, POD_NAME, POD_NAMESPACE, POD_IP,
SERVICE_ACCOUNT), in Istio's shape: id `type~ip~pod.ns~ns.svc.domain` and the
metadata keys istiod reads (NAMESPACE, INSTANCE_IPS, NODE_NAME, NAME, ...).
"""

from __future__ import annotations

import os
import socket
from typing import Mapping, Optional

from envoy.config.core.v3 import base_pb2

ISTIO_ID_TEMPLATE = "{type}~{ip}~{pod}.{namespace}~{namespace}.svc.{domain}"
USER_AGENT = "nodemesh"

# Istio metadata key -> environment variable it comes from.
METADATA_ENV = {
    "NAMESPACE": "POD_NAMESPACE",
    "INSTANCE_IPS": "POD_IP",
    "NODE_NAME": "NODE_NAME",
    "NAME": "POD_NAME",
    "SERVICE_ACCOUNT": "SERVICE_ACCOUNT",
    "CLUSTER_ID": "CLUSTER_ID",
    "MESH_ID": "MESH_ID",
    "ISTIO_VERSION": "ISTIO_VERSION",
}


def identity_fields(env: Mapping[str, str] = os.environ) -> dict:
    """The values the id template may use, from the environment."""
    pod = env.get("POD_NAME") or socket.gethostname()
    ip = env.get("POD_IP") or "127.0.0.1"
    node = env.get("NODE_NAME") or socket.gethostname()
    return {
        "type": env.get("NODEMESH_PROXY_TYPE", "sidecar"),
        "ip": ip, "pod_ip": ip,
        "pod": pod, "pod_name": pod,
        "namespace": env.get("POD_NAMESPACE") or "default",
        "domain": env.get("CLUSTER_DOMAIN") or "cluster.local",
        "node": node, "node_name": node,
    }


def build_node(bootstrap_node: Optional[base_pb2.Node] = None, *,
               env: Mapping[str, str] = os.environ,
               id_template: str = ISTIO_ID_TEMPLATE,
               version: str = "") -> base_pb2.Node:
    """The bootstrap node, completed from the environment where it is empty."""
    node = base_pb2.Node()
    if bootstrap_node is not None:
        node.CopyFrom(bootstrap_node)
    fields = identity_fields(env)
    if not node.id:
        try:
            node.id = id_template.format(**fields)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"xds node id template {id_template!r}: {exc}; "
                             f"fields: {', '.join(sorted(fields))}") from None
    if not node.cluster:
        node.cluster = env.get("NODEMESH_CLUSTER") or "nodemesh"
    md = node.metadata.fields
    for key, value in _pod_metadata(env).items():
        if key not in md:
            md[key].string_value = str(value)
    for key, var in METADATA_ENV.items():
        if key not in md and env.get(var):
            md[key].string_value = env[var]
    if "NODE_NAME" not in md:
        md["NODE_NAME"].string_value = fields["node"]
    if not node.user_agent_name:
        node.user_agent_name = USER_AGENT
        node.user_agent_version = version or _version()
    return node


def _pod_metadata(env: Mapping[str, str]) -> dict:
    """Istio's metadata from the downward API (agent.k8s.identity, ISTIO_META_* included)
    when the agent runs in a pod; {} elsewhere."""
    try:
        from agent.k8s.identity import IdentityError, node_identity
    except ImportError:
        return {}
    try:
        return dict(node_identity(env).metadata)
    except (IdentityError, ValueError):
        return {}


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("nodemesh")
    except Exception:   # noqa: BLE001 - a checkout that is not installed
        return "0.1.0+checkout"
