"""Keyword options of decoder_for() -> the C nm_options struct."""

from ._native import ffi, lib

LIMITS = ("max_frame_size", "max_headers", "max_depth", "max_elements",
          "max_pipelined", "max_header_bytes")

HTTP_LENIENCIES = {
    "obs_fold": lib.NM_HTTP_LENIENT_OBS_FOLD,
    "te_cl": lib.NM_HTTP_LENIENT_TE_CL,
    "lf_only": lib.NM_HTTP_LENIENT_LF_ONLY,
    "chunk_ext": lib.NM_HTTP_LENIENT_CHUNK_EXT,
    "header_space": lib.NM_HTTP_LENIENT_HEADER_SPACE,
}

THRIFT_PROTOCOLS = {None: 0, "binary": lib.NM_THRIFT_BINARY, "compact": lib.NM_THRIFT_COMPACT}
THRIFT_TRANSPORTS = {None: 0, "framed": lib.NM_THRIFT_FRAMED, "unframed": lib.NM_THRIFT_UNFRAMED,
                     "buffered": lib.NM_THRIFT_UNFRAMED}

# Length-field layout keys (Netty's LengthFieldBasedFrameDecoder vocabulary).
LENGTHFIELD_KEYS = ("length_offset", "length_size", "little_endian", "length_adjustment",
                    "length_includes_header", "header_length", "magic", "magic_size",
                    "id_offset", "id_size", "kind_offset", "kind_response_mask",
                    "kind_oneway_mask", "kind_heartbeat_mask", "kv_offset", "kv_length_size")

_WELL_KNOWN = {"interface": lib.NM_KEY_INTERFACE, "method": lib.NM_KEY_METHOD,
               "version": lib.NM_KEY_VERSION}


def _choose(table, value, what):
    try:
        return table[value]
    except KeyError:
        known = ", ".join(str(k) for k in table if k is not None)
        raise ValueError(f"unknown {what} {value!r}; known: {known}") from None


def _lengthfield(cfg, options):
    if "kind_offset" in options or options.get("kind_response_mask"):
        cfg.kind_present = 1
    for key in LENGTHFIELD_KEYS:
        if key in options:
            setattr(cfg, key, int(options.pop(key)))
    for name in ("kv_pair_sep", "kv_sep"):
        if name in options:
            sep = options.pop(name)
            setattr(cfg, name, ord(sep) if isinstance(sep, str) else int(sep))
    fields = options.pop("fields", [])
    if len(fields) > lib.NM_LF_MAX_FIELDS:
        raise ValueError(f"lengthfield: at most {lib.NM_LF_MAX_FIELDS} fields")
    for i, field in enumerate(fields):
        slot = cfg.fields[i]
        name = field["name"]
        slot.offset = int(field["offset"])
        slot.length = int(field.get("length", 0))
        slot.is_integer = 1 if field.get("integer") else 0
        slot.key_id = _WELL_KNOWN.get(name, lib.NM_KEY_CUSTOM)
        raw = name.encode()
        if len(raw) >= 32:
            raise ValueError(f"lengthfield: field name {name!r} longer than 31 bytes")
        ffi.memmove(slot.name, raw, len(raw))
    cfg.nfields = len(fields)


def build_options(protocol: str, options: dict):
    """Translate keyword options; unknown names are an error, not ignored."""
    options = dict(options)
    opt = ffi.new("nm_options *")
    direction = options.pop("direction", "request")
    opt.direction = _choose({"request": lib.NM_DIR_REQUEST, "response": lib.NM_DIR_RESPONSE},
                            direction, "direction")
    opt.redis_resp3 = 1 if options.pop("resp3", True) else 0
    for name in LIMITS:
        if name in options:
            value = int(options.pop(name))
            if not 0 < value < 2**32:
                raise ValueError(f"{name} must be a positive 32-bit integer")
            setattr(opt.limits, name, value)
    opt.thrift = (_choose(THRIFT_PROTOCOLS, options.pop("thrift_protocol", None), "thrift_protocol")
                  | _choose(THRIFT_TRANSPORTS, options.pop("thrift_transport", None),
                            "thrift_transport"))
    for name in options.pop("lenient", ()):
        opt.http_lenient |= _choose(HTTP_LENIENCIES, name, "HTTP leniency")
    if protocol == "lengthfield":
        _lengthfield(opt.lengthfield, options)
    if options:
        raise ValueError(f"{protocol}: unknown options: {', '.join(sorted(options))}")
    return opt
