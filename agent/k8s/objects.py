"""The few fields of Pods and Namespaces that enrollment reads, from raw API JSON.

We read the API's JSON (not the client's generated models) so that an
unexpected object is one clear error naming the pod and the field, never
an exception from deep inside a deserializer that stops a watch.
"""

import dataclasses

from .cgroups import CgroupLayoutError, normalize_qos

TERMINAL_PHASES = ("Succeeded", "Failed")
SIDECAR_CONTAINER = "istio-proxy"
SIDECAR_STATUS_ANNOTATION = "sidecar.istio.io/status"


class ObjectError(ValueError):
    """A watched object lacks a field we need, or has it in the wrong type."""


@dataclasses.dataclass(frozen=True)
class PodInfo:
    uid: str
    namespace: str
    name: str
    labels: dict
    node: str
    phase: str
    qos: str            # normalized, None when the API has not set it yet
    host_network: bool
    has_sidecar: bool   # an Istio sidecar already proxies this pod
    resource_version: str = ""

    @property
    def ref(self) -> str:
        """How logs name the pod."""
        return f"{self.namespace}/{self.name} (uid {self.uid})"

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES


@dataclasses.dataclass(frozen=True)
class NamespaceInfo:
    name: str
    labels: dict


def _field(obj: dict, path: str, kind, default=None, required=False):
    cur = obj
    for key in path.split("."):
        if not isinstance(cur, dict):
            raise ObjectError(f"{path}: expected an object")
        cur = cur.get(key)
        if cur is None:
            if required:
                raise ObjectError(f"{path}: missing")
            return default
    if not isinstance(cur, kind):
        raise ObjectError(f"{path}: expected {kind.__name__}, got {type(cur).__name__}")
    return cur


def _labels(obj: dict, where: str) -> dict:
    labels = _field(obj, f"{where}.labels", dict, {})
    return {str(k): v if isinstance(v, str) else str(v) for k, v in labels.items()}


def describe(obj) -> str:
    """Best-effort 'namespace/name' of a raw object, for error messages."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(meta, dict):
        return "<object without metadata>"
    ns, name = meta.get("namespace"), meta.get("name", "<no name>")
    return f"{ns}/{name}" if ns else str(name)


def parse_pod(obj: dict) -> PodInfo:
    if not isinstance(obj, dict):
        raise ObjectError("pod: expected a JSON object")
    try:
        qos = normalize_qos(_field(obj, "status.qosClass", str))
    except CgroupLayoutError as exc:
        raise ObjectError(str(exc)) from None
    containers = _field(obj, "spec.containers", list, [])
    annotations = _field(obj, "metadata.annotations", dict, {})
    return PodInfo(
        uid=_field(obj, "metadata.uid", str, required=True),
        namespace=_field(obj, "metadata.namespace", str, required=True),
        name=_field(obj, "metadata.name", str, required=True),
        labels=_labels(obj, "metadata"),
        node=_field(obj, "spec.nodeName", str, ""),
        phase=_field(obj, "status.phase", str, "Pending"),
        qos=qos,
        host_network=_field(obj, "spec.hostNetwork", bool, False),
        has_sidecar=(SIDECAR_STATUS_ANNOTATION in annotations
                     or any(isinstance(c, dict) and c.get("name") == SIDECAR_CONTAINER
                            for c in containers)),
        resource_version=_field(obj, "metadata.resourceVersion", str, ""),
    )


def parse_namespace(obj: dict) -> NamespaceInfo:
    if not isinstance(obj, dict):
        raise ObjectError("namespace: expected a JSON object")
    return NamespaceInfo(name=_field(obj, "metadata.name", str, required=True),
                         labels=_labels(obj, "metadata"))
