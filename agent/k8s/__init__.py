"""Kubernetes: pod enrollment (watch this node's pods, resolve their cgroups,
keep the datapath's enrolled map in step) and the node's xDS identity."""

from .enroller import Enroller
from .identity import NodeIdentity, node_identity
from .policy import DEFAULT_RULES, LabelRule
from .settings import EnrollerSettings

__all__ = ["Enroller", "EnrollerSettings", "LabelRule", "DEFAULT_RULES", "NodeIdentity",
           "node_identity"]
