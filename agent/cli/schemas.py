"""JSON schemas of `-o json` output: the stable contract for scripts.

Fields may be added; none is renamed or removed without a new major version.
"""

_STR_OR_NULL = {"type": ["string", "null"]}
_INT_OR_NULL = {"type": ["integer", "null"]}


def _obj(props: dict, required=None) -> dict:
    return {"type": "object", "properties": props,
            "required": list(required if required is not None else props)}


PROXY = _obj({
    "local_proxy": _STR_OR_NULL, "remote_proxy": _STR_OR_NULL,
    "mode": {"type": "string"}, "spill_percent": {"type": "number"},
    "trace": {"type": "boolean"}, "generation": {"type": "integer"},
})

UP = _obj({"action": {"enum": ["loaded", "reloaded", "adopted"]},
           "pin_dir": {"type": "string"}, "cgroup_root": {"type": "string"},
           "source_digest": {"type": "string"}, "cflags": {"type": "array"}})

STATUS = _obj({
    "up": {"type": "boolean"},
    "pin_dir": {"type": "string"},
    "cgroup_root": _STR_OR_NULL,
    "pins": {"type": "object", "additionalProperties": {"type": "boolean"}},
    "programs": {"type": "array", "items": _obj({
        "name": {"type": "string"}, "pinned": {"type": "boolean"},
        "id": _INT_OR_NULL, "tag": _STR_OR_NULL})},
    "links": {"type": "array", "items": _obj({
        "name": {"type": "string"}, "pinned": {"type": "boolean"}, "id": _INT_OR_NULL,
        "prog_id": _INT_OR_NULL, "attach_type": _STR_OR_NULL, "cgroup_id": _INT_OR_NULL,
        "cgroup": _STR_OR_NULL})},
    "sk_msg_attached": {"type": "boolean"},
    "proxy": {"oneOf": [PROXY, {"type": "null"}]},
    "source": _obj({"digest": _STR_OR_NULL, "cflags": {"type": ["array", "null"]},
                    "loaded_at": {"type": ["number", "null"]},
                    "current_digest": {"type": "string"}, "stale": {"type": "boolean"}}),
})

SOURCE = _obj({"cflags": {"type": "array", "items": {"type": "string"}},
               "digest": {"type": "string"}, "source": {"type": "string"}},
              ["cflags", "digest", "source"])

SERVICE = _obj({"vip": {"type": "string",
                        "pattern": r"^(\d+\.\d+\.\d+\.\d+|\[[0-9a-fA-F:.]+\]):\d+$"},
                "id": {"type": "integer"}, "protocol": {"type": "string"},
                "remote_port": {"type": "integer"}, "disabled": {"type": "boolean"}})
SERVICES = _obj({"services": {"type": "array", "items": SERVICE}})

PODS = _obj({"pods": {"type": "array", "items": _obj({
    "cgroup_id": {"type": "integer"}, "cgroup": _STR_OR_NULL, "pod_index": _INT_OR_NULL,
    "proxy_netns": _INT_OR_NULL, "spill": {"type": ["number", "null"]},
    "enrolled": {"type": "boolean"}, "pod": _STR_OR_NULL, "namespace": _STR_OR_NULL,
    "name": _STR_OR_NULL})}})

_UNAVAILABLE = {"type": "object", "additionalProperties": {"type": "string"}}
_NUM = {"type": "number"}
_PROXY_STATS = _obj({
    "role": _STR_OR_NULL, "ready": {"type": ["boolean", "null"]},
    "ready_reason": _STR_OR_NULL, "draining": {"type": ["boolean", "null"]},
    "uptime_s": {"type": ["number", "null"]},
    "event_loop_lag_ms": {"type": ["object", "null"]},
    "connections_active": _INT_OR_NULL, "requests_active": _INT_OR_NULL,
    "requests": {"type": ["object", "null"]}, "services": {"type": ["object", "null"]},
    "pods": {"type": ["object", "null"]}, "config": {"type": ["object", "null"]},
    "pod_names": {"type": "object", "additionalProperties": {"type": "string"}}})

STATS = _obj({"counters": {"type": "object",
                           "additionalProperties": {"type": "integer", "minimum": 0}},
              "proxies": {"type": "object", "additionalProperties": _PROXY_STATS},
              "unavailable": _UNAVAILABLE})

UNINSTALL = _obj({"removed": {"type": "array", "items": {"type": "string"}},
                  "pins_left": {"type": "array"}, "still_attached": {"type": "array"},
                  "clean": {"type": "boolean"}})

VERSION = _obj({"version": {"type": "string"}, "python": {"type": "string"},
                "bpf_source_digest": {"type": "string"}})

DOCTOR = {
    "type": "object",
    "properties": {
        "ok": {"type": "boolean"},
        "checks": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "properties": {"name": {"type": "string"},
                           "status": {"enum": ["ok", "warn", "fail"]},
                           "detail": {"type": "string"},
                           "fallback": {"type": "string"}},
            "required": ["name", "status", "detail", "fallback"],
            "additionalProperties": False}},
    },
    "required": ["ok", "checks"],
    "additionalProperties": False,
}

CONN = _obj({
    "cookie": {"type": "integer"}, "source": _STR_OR_NULL, "original_dst": {"type": "string"},
    "peer": _STR_OR_NULL, "target": {"type": "string"}, "service_id": {"type": "integer"},
    "state": {"type": "string"}, "pid": _INT_OR_NULL, "process": _STR_OR_NULL,
    "cgroup_id": {"type": "integer"}, "cgroup": _STR_OR_NULL, "pod": _STR_OR_NULL,
    "paired": {"type": ["boolean", "null"]},
})
CONNS = _obj({"connections": {"type": "array", "items": CONN}})

_COMPONENT = _obj({"socket": {"type": "string"}, "running": {"type": "boolean"},
                   "ready": {"type": "boolean"}})
NODE_STATUS = _obj({
    "datapath": _obj({"up": {"type": ["boolean", "null"]}}),
    "agent": _COMPONENT, "proxy": _COMPONENT, "remote": _COMPONENT,
    "unavailable": {"type": "object", "additionalProperties": {"type": "string"}},
})

# -- views of the proxy's configuration ------------------------------------------------

_SOURCE = {"enum": ["proxy", "agent", "remote", None]}
_WEIGHTED = {"type": "array", "items": _obj({"name": {"type": "string"},
                                             "weight": {"type": "integer"}})}
ROUTE = _obj({
    "index": {"type": "integer"}, "name": {"type": "string"},
    "match": {"type": "array", "items": {"type": "string"}}, "clusters": _WEIGHTED,
    "timeout": {"type": ["number", "null"]}, "retries": {"type": "integer"},
    "hash_keys": {"type": "array", "items": {"type": "string"}},
    "mirrors": {"type": "array", "items": {"type": "string"}},
    "fault": {"type": "boolean"}, "rate_limit": {"type": "boolean"}})
LISTENER = _obj({
    "name": {"type": "string"}, "address": {"type": "string"}, "version": {"type": "string"},
    "protocol": {"type": "string"}, "remote_port": _INT_OR_NULL,
    "chains": {"type": "array", "items": _obj({
        "name": {"type": "string"}, "codec": _STR_OR_NULL,
        "destinations": {"type": "array", "items": {"type": "string"}},
        "tcp_cluster": _STR_OR_NULL, "table": _STR_OR_NULL, "table_version": _STR_OR_NULL,
        "routes": {"type": "array", "items": ROUTE}})}})
_DATAPATH_SERVICES = {"type": ["array", "null"], "items": SERVICE}
ROUTES = _obj({"source": _SOURCE, "listeners": {"type": "array", "items": LISTENER},
               "unavailable": _UNAVAILABLE, "datapath_services": _DATAPATH_SERVICES},
              ["source", "listeners", "unavailable"])

HOST = _obj({
    "address": {"type": "string"}, "weight": _INT_OR_NULL, "priority": _INT_OR_NULL,
    "locality": {"type": "string"}, "eds_healthy": {"type": "boolean"},
    "health_ok": {"type": ["boolean", "null"]}, "available": {"type": ["boolean", "null"]},
    "ejected": {"type": ["boolean", "null"]}, "ejections": _INT_OR_NULL,
    "consecutive_errors": _INT_OR_NULL, "active_requests": _INT_OR_NULL,
    "connections": _INT_OR_NULL, "workers_disagree": {"type": "boolean"}})
_BREAKER = _obj({"current": {"type": "integer"}, "max": {"type": "integer"},
                 "overflow": {"type": "integer"}, "open": {"type": "boolean"}})
CLUSTER = _obj({
    "name": {"type": "string"}, "version": {"type": "string"},
    "lb_policy": {"type": "string"}, "endpoints_version": _STR_OR_NULL,
    "eds_service_name": _STR_OR_NULL, "connect_timeout": _NUM,
    "thresholds": _obj({k: {"type": "integer"} for k in (
        "max_connections", "max_pending_requests", "max_requests", "max_retries")}),
    "outlier_detection": {"type": ["object", "null"]}, "health_check": {"type": "boolean"},
    "hosts": {"type": "array", "items": HOST},
    "breakers": {"type": ["object", "null"], "additionalProperties": _BREAKER},
    "requests": {"type": ["object", "null"]}, "workers": _INT_OR_NULL,
    "nack": _STR_OR_NULL})
CLUSTERS = _obj({"source": _SOURCE, "runtime": _SOURCE,
                 "clusters": {"type": "array", "items": CLUSTER},
                 "unavailable": _UNAVAILABLE, "datapath_services": _DATAPATH_SERVICES},
                ["source", "clusters", "unavailable"])

JOINED_SERVICE = _obj({
    "vip": {"type": "string"}, "id": _INT_OR_NULL, "protocol": _STR_OR_NULL,
    "remote_port": _INT_OR_NULL, "disabled": {"type": ["boolean", "null"]},
    "listener": _STR_OR_NULL, "listener_version": _STR_OR_NULL, "codec": _STR_OR_NULL,
    "table": _STR_OR_NULL, "table_version": _STR_OR_NULL,
    "clusters": {"type": "array", "items": {"type": "string"}},
    "problems": {"type": "array", "items": {"enum": [
        "not served", "not steered", "disabled", "protocol", "no routes", "no cluster"]}}})
MESH_SERVICES = _obj({"source": _SOURCE, "datapath": {"type": "boolean"},
                      "services": {"type": "array", "items": JOINED_SERVICE},
                      "unavailable": _UNAVAILABLE})

# -- explain ----------------------------------------------------------------------------

_TARGET = _obj({"target": {"enum": ["local", "remote", "original"]},
                "address": {"type": "string"}, "reason": {"type": "string"},
                "probability": {"type": "number", "minimum": 0, "maximum": 1}})
_STEP = _obj({"name": {"type": "string"}, "result": {"type": "string"},
              "detail": {"type": "string"}})
_LB = _obj({"policy": {"type": "string"}, "hash_keys": {"type": "array"},
            "hash_key": _STR_OR_NULL, "candidates": {"type": "array",
                                                     "items": {"type": "string"}},
            "pick": _STR_OR_NULL, "deterministic": {"type": "boolean"},
            "runtime_state": {"type": "boolean"}, "how": {"type": "string"},
            "priorities": {"type": "array"}})
EXPLAIN = _obj({
    "client": _obj({"cgroup": {"type": "string"}, "cgroup_id": {"type": "integer"},
                    "pod": _STR_OR_NULL, "pid": _INT_OR_NULL, "netns": _STR_OR_NULL}),
    "destination": {"type": "string"},
    "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
    "datapath": _obj({"steps": {"type": "array", "items": _STEP},
                      "targets": {"type": "array", "items": _TARGET, "minItems": 1},
                      "service": {"oneOf": [SERVICE, {"type": "null"}]},
                      "pod": {"type": ["object", "null"]}, "generation": _INT_OR_NULL}),
    "verdict": _TARGET,
    "proxy": {"oneOf": [{"type": "null"}, _obj({
        "component": {"enum": ["proxy", "remote"]}, "config_from": _SOURCE,
        "listener": {"oneOf": [{"type": "null"}, _obj({
            "name": {"type": "string"}, "version": {"type": "string"}, "nack": _STR_OR_NULL})]},
        "route": {"type": ["object", "null"]},
        "clusters": {"type": "array", "items": _obj({
            "name": {"type": "string"}, "percent": _NUM, "version": _STR_OR_NULL,
            "endpoints_version": _STR_OR_NULL, "nack": _STR_OR_NULL,
            "lb": {"oneOf": [{"type": "null"}, _LB]}})},
        "summary": _STR_OR_NULL})]},
    "unavailable": _UNAVAILABLE})

# -- trace: one object per line ----------------------------------------------------------

_KERNEL_EVENT = _obj({
    "source": {"const": "kernel"}, "ts_ns": {"type": "integer"}, "time": _NUM,
    "cookie": {"type": "integer"}, "cgroup_id": {"type": "integer"}, "cgroup": _STR_OR_NULL,
    "pod": _STR_OR_NULL, "pid": {"type": "integer"}, "tid": {"type": "integer"},
    "comm": {"type": "string"}, "original_dst": {"type": "string"},
    "target_dst": {"type": "string"}, "target": {"enum": ["local", "remote", "original"]},
    "reason": {"type": "string"}, "service_id": {"type": "integer"}})
_PROXY_EVENT = _obj({
    "source": {"const": "proxy"}, "time": _NUM, "start_time": _STR_OR_NULL,
    "cgroup_id": _INT_OR_NULL, "cgroup": _STR_OR_NULL, "pod": _STR_OR_NULL,
    "listener": _STR_OR_NULL, "service": _STR_OR_NULL, "protocol": _STR_OR_NULL,
    "route": _STR_OR_NULL, "cluster": _STR_OR_NULL,
    "response_code": {"type": ["string", "integer", "null"]},
    "response_flags": _STR_OR_NULL, "duration_ms": {"type": ["number", "null"]}})
TRACE_EVENT = {"oneOf": [_KERNEL_EVENT, _PROXY_EVENT]}

# -- top: one object per interval -------------------------------------------------------

_RATES = {"type": "object", "additionalProperties": {"type": "number", "minimum": 0}}
TOP = _obj({"interval_s": _NUM, "kernel_per_s": _RATES, "services_per_s": _RATES,
            "pods_per_s": _RATES, "unavailable": _UNAVAILABLE})
