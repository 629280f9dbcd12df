"""The components the agent runs by default, when their packages are present.

Failover (agent.failover) and Kubernetes enrollment (agent.k8s) are written
separately; each is plugged in here if importable and applicable, so the
agent runs with whatever parts this installation has.
"""

from __future__ import annotations

import logging
import os

from .components import ThreadComponent

log = logging.getLogger("nodemesh.agent")


def default_components(agent) -> list:
    out = []
    failover = _failover(agent)
    if failover is not None:
        out.append(failover)
    enroller = _enroller(agent)
    if enroller is not None:
        out.append(enroller)
    return out


def _failover(agent):
    if agent.options.datapath is False:
        return None
    try:
        from agent.failover.controller import FailoverController
    except ImportError:
        return None
    try:
        return FailoverController()
    except TypeError as exc:
        log.warning("failover controller not started: %s", exc)
        return None


def _enroller(agent):
    """Pod enrollment needs the Kubernetes API (in a cluster) and the datapath."""
    if agent.options.datapath is False or not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    try:
        from agent.k8s.enroller import Enroller
    except ImportError:
        return None

    def factory(a):
        from kubernetes import client, config

        config.load_incluster_config()
        node = os.environ.get("NODE_NAME") or os.uname().nodename
        enrollment = a.settings.enrollment
        return Enroller(client.ApiClient(), node, a.control, enrollment.cgroup_root,
                        labels=enrollment.labels)

    return ThreadComponent("enroller", factory)
