"""A bootstrap's static resources through the same ConfigStore as xDS.

    store, snapshot = snapshot_from_bootstrap(load_bootstrap(path))

Clusters first (their inline load assignments as endpoint resources), then
listeners, all marked static (state-of-the-world LDS/CDS updates never remove
them, as in Envoy). Any invalid resource refuses the whole file, with every
reason: a static configuration is either right or not started.
"""

from __future__ import annotations

from typing import List, Tuple

from . import resources
from .bootstrap import Bootstrap
from .errors import ConfigErrors
from .model import Snapshot
from .source import ResourceUpdate
from .store import ConfigStore

ORDER = (resources.CLUSTER, resources.ENDPOINT, resources.LISTENER)


def resource_updates(b: Bootstrap) -> List[ResourceUpdate]:
    """The bootstrap as the updates a ConfigSource yields (clusters, endpoints, listeners)."""
    out = []
    for type_url in ORDER:
        items = b.static_resources.get(type_url, [])
        out.append(ResourceUpdate(type_url, {resources.resource_name(m): m for m in items},
                                  b.version))
    return out


def snapshot_from_bootstrap(b: Bootstrap, store: ConfigStore = None
                            ) -> Tuple[ConfigStore, Snapshot]:
    store = store or ConfigStore(remote_ports=b.settings.remote_ports)
    errors = []
    for type_url in ORDER:
        result = store.update(type_url, list(b.static_resources.get(type_url, [])), b.version,
                              static=True)
        errors.extend(result.errors)
    if errors:
        raise ConfigErrors(errors)
    return store, store.snapshot()
