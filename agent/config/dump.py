"""The store as Envoy's /config_dump prints it (envoy.admin.v3.*ConfigDump JSON).

Tools that read Envoy's dump (istioctl proxy-config, our own CLI) find the
same keys: per type a `version_info`, static and dynamic resources with
their `version_info` and `last_updated`, and `error_state` (the NACK
reason) on resources whose last update was refused. nodemesh adds `notes`
(what was skipped or approximated) next to them.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Dict, Optional

from . import resources

_ADMIN = "type.googleapis.com/envoy.admin.v3."
_SECTIONS = [
    # (type name, dump message, dynamic key, static key, resource key)
    ("listener", "ListenersConfigDump", "dynamic_listeners", "static_listeners", "listener"),
    ("cluster", "ClustersConfigDump", "dynamic_active_clusters", "static_clusters", "cluster"),
    ("route", "RoutesConfigDump", "dynamic_route_configs", "static_route_configs", "route_config"),
    ("endpoint", "EndpointsConfigDump", "dynamic_endpoint_configs", "static_endpoint_configs",
     "endpoint_config"),
]


def timestamp(seconds: Optional[float]) -> Optional[str]:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def config_dump(status, entries, versions, attempts) -> dict:
    configs = []
    for type_name, dump_type, dynamic_key, static_key, key in _SECTIONS:
        per = dict(status[type_name])
        if type_name == "route":
            per.update(status["meta_route"])
        type_urls = [resources.TYPE_URLS[type_name]]
        if type_name == "route":
            type_urls.append(resources.META_ROUTE)
        section = {"@type": _ADMIN + dump_type, static_key: [], dynamic_key: []}
        if versions.get(type_name):
            section["version_info"] = versions[type_name]
        for name, st in sorted(per.items()):
            entry = entries[st.type_url].get(name)
            item = _item(st, entry, key, static=bool(st.static))
            section[static_key if st.static else dynamic_key].append(item)
        configs.append(section)
    return {"configs": configs}


def _item(st, entry, key: str, *, static: bool) -> Dict:
    item: Dict = {}
    if entry is not None:
        body = resources.to_dict(entry.message(st.type_url))
        body["@type"] = st.type_url
        if static:
            item[key] = body
            item["last_updated"] = timestamp(st.last_updated)
        elif key == "listener":
            item["name"] = st.name
            item["active_state"] = {"version_info": st.version, key: body,
                                    "last_updated": timestamp(st.last_updated)}
        else:
            item.update({"version_info": st.version, key: body,
                         "last_updated": timestamp(st.last_updated)})
    else:
        item["name"] = st.name
    if st.error is not None:
        item["error_state"] = {"details": str(st.error),
                               "last_update_attempt": timestamp(st.error_time),
                               "version_info": st.error_version}
        item["client_status"] = "NACKED"
    elif entry is not None:
        item["client_status"] = "ACKED"
    if st.notes:
        item["notes"] = list(st.notes)
    return item
