"""StaticSource: a bootstrap file as a ConfigSource (what `--config FILE` runs on).

It yields the bootstrap's static resources as ResourceUpdates, clusters and
endpoints before listeners (agent.config.static.resource_updates), and then
nothing more: a static proxy keeps its configuration until it is restarted.
The bootstrap is parsed when the source is made, so a bad file fails the
command at start with every reason.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator


class StaticSource:
    def __init__(self, bootstrap_path: str):
        from agent.config.bootstrap import load_bootstrap
        from agent.config.static import resource_updates, snapshot_from_bootstrap

        self.path = bootstrap_path
        self.bootstrap = load_bootstrap(bootstrap_path)
        snapshot_from_bootstrap(self.bootstrap)         # validate it all now
        self._updates = resource_updates(self.bootstrap)

    @property
    def settings(self):
        """The bootstrap's nodemesh section (local_proxy, remote_ports, proxy_admin...)."""
        return self.bootstrap.settings

    async def updates(self) -> AsyncIterator:
        for update in self._updates:
            yield update
        await asyncio.Event().wait()      # static: nothing more until the process ends
