"""Which pods belong in the mesh: label rules and their precedence.

A rule is a label key with an opt-in value and an opt-out value. The
defaults are nodemesh's own label, then Istio ambient's, so namespaces
already labelled for ambient are enrolled as they are:

  nodemesh.io/enabled       true -> in      false -> out
  istio.io/dataplane-mode   ambient -> in   none -> out

Precedence (first decisive answer wins):
  1. never: host-network pods (they share the node's sockets), pods with an
     Istio sidecar (it already proxies them), terminal pods, and pods in an
     excluded namespace (kube-system, nodemesh's own: the remote proxy pool
     must never be steered to itself);
  2. the pod's labels, rule by rule in order;
  3. the namespace's labels, rule by rule in order;
  4. otherwise not enrolled.
So a pod label opts a pod out of (or into) a labelled namespace, and
nodemesh's label wins over Istio's at the same level. A label with any
other value is malformed: it is reported and that rule is skipped (the
next rule or level decides), never read as an opt-out.
"""

import dataclasses
import enum

from .objects import NamespaceInfo, PodInfo


class Verdict(enum.Enum):
    ENROLL = "enroll"
    EXCLUDE = "exclude"
    UNDECIDED = "undecided"   # not enough known yet (namespace not seen): change nothing


@dataclasses.dataclass(frozen=True)
class LabelRule:
    key: str
    on: str
    off: str = ""

    def read(self, labels: dict):
        """True (in), False (out), None (absent); ValueError when malformed."""
        if self.key not in labels:
            return None
        value = labels[self.key]
        if value == self.on:
            return True
        if self.off and value == self.off:
            return False
        allowed = f"{self.on!r}" + (f" or {self.off!r}" if self.off else "")
        raise ValueError(f"label {self.key}={value!r}: expected {allowed}")


DEFAULT_RULES = (
    LabelRule("nodemesh.io/enabled", on="true", off="false"),
    LabelRule("istio.io/dataplane-mode", on="ambient", off="none"),
)
DEFAULT_EXCLUDED_NAMESPACES = ("kube-system", "nodemesh-system")


def parse_rules(value, field="nodemesh.enrollment.labels") -> tuple:
    """Rules from configuration, in order: a list of "key=on", "key=on/off",
    {key, on, off} or LabelRule; or a mapping {key: "on" or "on/off"}."""
    if value is None:
        return DEFAULT_RULES
    if isinstance(value, dict):
        value = [f"{k}={v}" if isinstance(v, str) else {"key": k, "on": v}
                 for k, v in value.items()]
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{field}: expected a list of rules like 'nodemesh.io/enabled=true/false'")
    rules = tuple(_rule(item, f"{field}[{i}]") for i, item in enumerate(value))
    if not rules:
        raise ValueError(f"{field}: empty: no pod could ever be enrolled")
    return rules


def _rule(item, where) -> LabelRule:
    if isinstance(item, LabelRule):
        return item
    if isinstance(item, str):
        key, sep, values = item.partition("=")
        on, _, off = values.partition("/")
        if not sep or not key.strip() or not on.strip():
            raise ValueError(f"{where}: {item!r}: expected 'key=on' or 'key=on/off'")
        return LabelRule(key.strip(), on.strip(), off.strip())
    if isinstance(item, dict):
        unknown = set(item) - {"key", "on", "off"}
        if unknown or not item.get("key") or not isinstance(item.get("on"), str) or not item["on"]:
            raise ValueError(f"{where}: expected {{key, on, off}} with string values, "
                             f"got {item!r}")
        return LabelRule(str(item["key"]), item["on"], str(item.get("off", "")))
    raise ValueError(f"{where}: expected a string or a mapping, got {type(item).__name__}")


@dataclasses.dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str
    problems: tuple = ()   # malformed labels seen on the way, for the log

    @property
    def enroll(self) -> bool:
        return self.verdict is Verdict.ENROLL


def _by_labels(labels: dict, rules, level: str, problems: list):
    for rule in rules:
        try:
            answer = rule.read(labels)
        except ValueError as exc:
            problems.append(f"{level} {exc}")
            continue
        if answer is not None:
            value = labels[rule.key]
            return Decision(Verdict.ENROLL if answer else Verdict.EXCLUDE,
                            f"{level} label {rule.key}={value}")
    return None


def decide(pod: PodInfo, namespace: NamespaceInfo, rules=DEFAULT_RULES,
           excluded_namespaces=DEFAULT_EXCLUDED_NAMESPACES) -> Decision:
    """The verdict for one pod; namespace None means not seen yet."""
    if pod.host_network:
        return Decision(Verdict.EXCLUDE, "host network")
    if pod.terminal:
        return Decision(Verdict.EXCLUDE, f"phase {pod.phase}")
    if pod.namespace in excluded_namespaces:
        return Decision(Verdict.EXCLUDE, f"namespace {pod.namespace} is excluded")
    if pod.has_sidecar:
        return Decision(Verdict.EXCLUDE, "has an Istio sidecar")
    problems = []
    found = _by_labels(pod.labels, rules, "pod", problems)
    if found is None and namespace is None:
        return Decision(Verdict.UNDECIDED, f"namespace {pod.namespace} not seen yet",
                        tuple(problems))
    if found is None:
        found = _by_labels(namespace.labels, rules, "namespace", problems)
    if found is None:
        found = Decision(Verdict.EXCLUDE, "no enrollment label")
    return dataclasses.replace(found, problems=tuple(problems))
