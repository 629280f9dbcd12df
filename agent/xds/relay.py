"""The relay: the agent serves the proxy workers what it serves itself.

As Istio's agent relays xDS to Envoy, the agent is the node's one xDS client
and its proxy supervisor connects to the agent instead of the control plane,
over a unix socket (mode 0600) at $NODEMESH_RUN_DIR/xds.sock. What is
relayed is exactly what the agent serves: accepted, warmed resources (the
version being replaced keeps being relayed while its update warms), written
dependencies first (RELAY_ORDER): the proxy applies each response as it
comes, without warming of its own.
"""

from __future__ import annotations

import os
from typing import List

from .applier import Applier, ServedChange
from .served import ServedResources
from .server import XdsServer
from .types import RELAY_ORDER

SOCKET_NAME = "xds.sock"


def default_socket(run_dir: str = None) -> str:
    run_dir = run_dir or os.environ.get("NODEMESH_RUN_DIR", "/run/nodemesh")
    return os.path.join(run_dir, SOCKET_NAME)


def served_sink(served: ServedResources):
    """An Applier sink that mirrors every served change into `served`."""
    def sink(applier: Applier, changes: List[ServedChange]):
        for ch in changes:
            served.update(ch.type_url,
                          {n: (r.version, r) for n, r in ch.upserts.items()},
                          ch.removed)
    return sink


class Relay:
    def __init__(self, applier: Applier, path: str, **server_kw):
        self.path = path
        self.served = ServedResources()
        self.server = XdsServer(self.served, **{"order": RELAY_ORDER, **server_kw})
        applier.sinks.append(served_sink(self.served))
        self._seed(applier)

    def _seed(self, applier: Applier):
        """What the applier serves already (static, restored) before the relay existed."""
        for type_url, recs in applier.records.items():
            serving = {n: (r.version, r) for n, r in recs.items()
                       if applier.is_serving(type_url, n)}
            if serving:
                self.served.update(type_url, serving)

    async def start(self) -> str:
        return await self.server.start("unix:" + self.path)

    async def stop(self):
        await self.server.stop()

    def status(self) -> dict:
        return {"socket": self.path, **self.server.status()}
