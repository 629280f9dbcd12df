"""Kubernetes: pod enrollment (watch this node's pods, resolve their cgroups,
keep the datapath's enrolled map in step) and the node's xDS identity.

Names are imported on first use: the enroller pulls in the `kubernetes`
client (~20 MB, ~0.5 s), which configuration parsing (label rules) and the
CLI must not pay for.
"""

import importlib

_WHERE = {"Enroller": "enroller", "EnrollerSettings": "settings", "LabelRule": "policy",
          "DEFAULT_RULES": "policy", "NodeIdentity": "identity", "node_identity": "identity"}

__all__ = sorted(_WHERE)


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
