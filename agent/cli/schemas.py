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

SERVICE = _obj({"vip": {"type": "string", "pattern": r"^\d+\.\d+\.\d+\.\d+:\d+$"},
                "id": {"type": "integer"}, "protocol": {"type": "string"},
                "remote_port": {"type": "integer"}, "disabled": {"type": "boolean"}})
SERVICES = _obj({"services": {"type": "array", "items": SERVICE}})

PODS = _obj({"pods": {"type": "array", "items": _obj({
    "cgroup_id": {"type": "integer"}, "cgroup": _STR_OR_NULL, "pod_index": {"type": "integer"},
    "proxy_netns": {"type": "integer"}, "spill": {"type": ["number", "null"]}})}})

STATS = _obj({"counters": {"type": "object",
                           "additionalProperties": {"type": "integer", "minimum": 0}}})

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
})
CONNS = _obj({"connections": {"type": "array", "items": CONN}})

_COMPONENT = _obj({"socket": {"type": "string"}, "running": {"type": "boolean"},
                   "ready": {"type": "boolean"}})
NODE_STATUS = _obj({
    "datapath": _obj({"up": {"type": ["boolean", "null"]}}),
    "agent": _COMPONENT, "proxy": _COMPONENT, "remote": _COMPONENT,
    "unavailable": {"type": "object", "additionalProperties": {"type": "string"}},
})
