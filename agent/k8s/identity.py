"""The node's identity for the control plane, from the downward API.

Istio keys its configuration on the xDS node id `TYPE~IP~POD.NS~NS.svc.DOMAIN`
and reads workload facts from the node metadata (NAMESPACE, INSTANCE_IPS,
SERVICE_ACCOUNT, NODE_NAME, CLUSTER_ID...). The DaemonSet passes the facts
as environment variables (fieldRef), and, as Istio's own agent does, every
`ISTIO_META_<KEY>` variable becomes metadata `<KEY>`.
"""

import dataclasses
import os

DEFAULT_TEMPLATE = "{type}~{ip}~{pod}.{namespace}~{namespace}.svc.{domain}"
REQUIRED_ENV = {
    # variable: the downward API field the manifest maps onto it
    "NODE_NAME": "spec.nodeName",
    "POD_NAME": "metadata.name",
    "POD_NAMESPACE": "metadata.namespace",
    "POD_IP": "status.podIP",
    "SERVICE_ACCOUNT": "spec.serviceAccountName",
}
META_PREFIX = "ISTIO_META_"
ROLES = {"agent": "sidecar", "local": "sidecar", "remote": "router"}


class IdentityError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class NodeIdentity:
    id: str
    cluster: str
    metadata: dict
    node_name: str

    def as_node(self) -> dict:
        """envoy.config.core.v3.Node in its JSON shape (json_format.ParseDict-able)."""
        return {"id": self.id, "cluster": self.cluster, "metadata": dict(self.metadata),
                "user_agent_name": "nodemesh"}


def _require(env, name) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise IdentityError(f"environment variable {name} is not set: map it from the downward "
                            f"API (env[].valueFrom.fieldRef.fieldPath: {REQUIRED_ENV[name]})")
    return value


def node_identity(env=None, role: str = "agent", template: str = DEFAULT_TEMPLATE,
                  domain: str = None, cluster_id: str = None) -> NodeIdentity:
    """The xDS node id and metadata of this process.

    role: 'agent'/'local' present as an Istio sidecar (istiod then sends the
    mesh-wide outbound configuration a sidecar gets); 'remote' as a router.
    template: the id's shape, with {type} {ip} {pod} {namespace} {domain} {node}.
    """
    env = os.environ if env is None else env
    if role not in ROLES:
        raise IdentityError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    facts = {name: _require(env, name) for name in REQUIRED_ENV}
    domain = domain or env.get("DOMAIN_SUFFIX") or "cluster.local"
    fields = {"type": ROLES[role], "ip": facts["POD_IP"], "pod": facts["POD_NAME"],
              "namespace": facts["POD_NAMESPACE"], "domain": domain, "node": facts["NODE_NAME"]}
    try:
        node_id = template.format(**fields)
    except (KeyError, IndexError, ValueError) as exc:
        raise IdentityError(f"node id template {template!r}: {exc!s} "
                            f"(fields: {', '.join(sorted(fields))})") from None
    metadata = {
        "NAMESPACE": facts["POD_NAMESPACE"],
        "NAME": facts["POD_NAME"],
        "INSTANCE_IPS": facts["POD_IP"],
        "SERVICE_ACCOUNT": facts["SERVICE_ACCOUNT"],
        "NODE_NAME": facts["NODE_NAME"],
        "CLUSTER_ID": cluster_id or env.get("CLUSTER_ID") or "Kubernetes",
        "NODEMESH_ROLE": role,
    }
    for key, value in env.items():
        if key.startswith(META_PREFIX) and len(key) > len(META_PREFIX):
            metadata[key[len(META_PREFIX):]] = value
    return NodeIdentity(id=node_id, cluster=f"nodemesh.{facts['POD_NAMESPACE']}",
                        metadata=metadata, node_name=facts["NODE_NAME"])
