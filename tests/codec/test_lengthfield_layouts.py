"""(Not a test module: named test_* to sit with the tests it serves.)

Length-field layouts of realistic private RPC protocols, and an independent
pure-Python encoder/decoder for any layout (the differential peer of
native/lengthfield.c). Shared by the tests, the seed generator and the bench.
"""

import struct

# tRPC-like: magic 0x0930, frame type bytes, 4-byte total length (includes the
# header), 2-byte protobuf-header length, 4-byte stream id, reserved.
TRPC = dict(magic=0x0930, magic_size=2, kind_offset=2, kind_response_mask=0x01,
            kind_oneway_mask=0x02, kind_heartbeat_mask=0x04,
            length_offset=4, length_size=4, length_includes_header=1, header_length=16,
            id_offset=10, id_size=4,
            fields=[{"name": "pb_header_len", "offset": 8, "length": 2, "integer": True}])

# SOFA-Bolt-like: proto byte 0x01, type byte, 2-byte command code, version,
# 4-byte request id, codec, 4-byte timeout, 4-byte content length (excludes
# the header, which ends after a 16-byte service name).
BOLT = dict(magic=0x01, magic_size=1, kind_offset=1, kind_response_mask=0x10,
            kind_oneway_mask=0x20, kind_heartbeat_mask=0x40,
            id_offset=5, id_size=4, length_offset=14, length_size=4, header_length=34,
            length_adjustment=16,
            fields=[{"name": "cmdcode", "offset": 2, "length": 2, "integer": True},
                    {"name": "status", "offset": 9, "length": 1, "integer": True},
                    {"name": "timeout", "offset": 10, "length": 4, "integer": True},
                    {"name": "interface", "offset": 18, "length": 16}])

# Little-endian game-server style: 2-byte length of the body, 4-byte id.
LE16 = dict(length_offset=0, length_size=2, little_endian=1, header_length=6,
            id_offset=2, id_size=4)

# Key/value headers: magic "NM", 4-byte body length, 8-byte id, a 2-byte
# kv-section length at 14, method in a NUL-padded 12-byte field.
KV = dict(magic=0x4E4D, magic_size=2, length_offset=2, length_size=4, header_length=26,
          id_offset=6, id_size=8, kv_offset=26, kv_length_size=2, kv_pair_sep="&", kv_sep="=",
          length_adjustment=0, kind_offset=14, kind_response_mask=0x80,
          fields=[{"name": "method", "offset": 15, "length": 11}])

# Netty's javadoc examples: HDR1 | LEN(2) | HDR2 | body, adjustment +1.
NETTY_HDR = dict(length_offset=1, length_size=2, length_adjustment=1, header_length=4)

# Odd sizes: 3-byte length, 1-byte length, 8-byte length and id.
LEN3 = dict(length_offset=0, length_size=3, header_length=3)
LEN1 = dict(length_offset=0, length_size=1, header_length=2, kind_offset=1,
            kind_response_mask=0x80)
LEN8 = dict(length_offset=0, length_size=8, length_includes_header=1, length_adjustment=0,
            header_length=16, id_offset=8, id_size=8)

LAYOUTS = {"trpc": TRPC, "bolt": BOLT, "le16": LE16, "kv": KV, "netty_hdr": NETTY_HDR,
           "len3": LEN3, "len1": LEN1, "len8": LEN8}


def _int(data, n, little):
    return int.from_bytes(data[:n], "little" if little else "big")


def _put(n, value, little):
    return value.to_bytes(n, "little" if little else "big")


def header_length(cfg):
    return cfg.get("header_length") or cfg.get("length_offset", 0) + cfg["length_size"]


def encode(cfg, request_id=0, kind=0, fields=None, kv=None, body=b""):
    """One frame of layout cfg. fields: {name: int or bytes}; kv: [(k, v)]."""
    hl = header_length(cfg)
    little = cfg.get("little_endian", 0)
    frame = bytearray(hl)
    if cfg.get("magic_size"):
        frame[0:cfg["magic_size"]] = _put(cfg["magic_size"], cfg["magic"], False)
    if "kind_offset" in cfg:
        frame[cfg["kind_offset"]] = kind
    if cfg.get("id_size"):
        o = cfg["id_offset"]
        frame[o:o + cfg["id_size"]] = _put(cfg["id_size"], request_id, little)
    for f in cfg.get("fields", []):
        v = (fields or {}).get(f["name"])
        if v is None:
            continue
        n = f.get("length") or hl - f["offset"]
        raw = _put(n, v, little) if f.get("integer") else v[:n].ljust(n, b"\0")
        frame[f["offset"]:f["offset"] + n] = raw
    if cfg.get("kv_offset"):
        section = "&".join(f"{k}={v}" for k, v in (kv or [])).encode()
        section = section.replace(b"&", cfg["kv_pair_sep"].encode()).replace(b"=", cfg["kv_sep"].encode())
        ko, ks = cfg["kv_offset"], cfg["kv_length_size"]
        frame = frame.ljust(ko, b"\0")
        frame[ko:ko + ks] = _put(ks, len(section), little)
        frame += section
    frame += body
    lo, ls = cfg.get("length_offset", 0), cfg["length_size"]
    value = len(frame) - cfg.get("length_adjustment", 0)
    if not cfg.get("length_includes_header"):
        value -= lo + ls
    frame[lo:lo + ls] = _put(ls, value, little)
    return bytes(frame)


class RefError(Exception):
    def __init__(self, kind):
        super().__init__(kind)
        self.kind = kind   # "protocol", "too_large", "too_many_headers"


def decode(cfg, data, max_frame_size=8388608, max_headers=128, out=None):
    """Frames of data as harness.summarize() would report them; raises RefError
    (frames decoded before the error are in `out` when given)."""
    hl, little = header_length(cfg), cfg.get("little_endian", 0)
    lo, ls = cfg.get("length_offset", 0), cfg["length_size"]
    out, pos = [] if out is None else out, 0
    while pos < len(data):
        fp = data[pos:]
        ms = cfg.get("magic_size", 0)
        magic = _put(ms, cfg.get("magic", 0), False)
        if fp[:ms] != magic[:len(fp[:ms])]:
            raise RefError("protocol")
        if len(fp) < lo + ls:
            break
        total = _int(fp[lo:], ls, little) + cfg.get("length_adjustment", 0)
        if not cfg.get("length_includes_header"):
            total += lo + ls
        if total > max_frame_size:
            raise RefError("too_large")
        if total < hl or total <= 0:
            raise RefError("protocol")
        if len(fp) < total:
            break
        frame = fp[:total]
        out.append(_frame(cfg, frame, pos, hl, little, max_headers))
        pos += total
    return out


def _frame(cfg, frame, pos, hl, little, max_headers):
    kind, status, meta = "request", 0, {}
    if "kind_offset" in cfg:
        b = frame[cfg["kind_offset"]]
        for name, mask in (("heartbeat", "kind_heartbeat_mask"), ("response", "kind_response_mask"),
                           ("oneway", "kind_oneway_mask")):
            if b & cfg.get(mask, 0):
                kind = name
                break
    rid = _int(frame[cfg["id_offset"]:], cfg["id_size"], little) if cfg.get("id_size") else 0
    for f in cfg.get("fields", []):
        n = f.get("length") or hl - f["offset"]
        raw = frame[f["offset"]:f["offset"] + n]
        if f.get("integer"):
            value = _int(raw, n, little)
            if f["name"] == "status":
                v32 = value & 0xFFFFFFFF
                status = v32 - 2**32 if v32 >= 2**31 else v32
            meta[f["name"]] = str(value)
        else:
            meta[f["name"]] = raw.split(b"\0")[0].decode("utf-8", "replace")
    if cfg.get("kv_offset"):
        ko, ks = cfg["kv_offset"], cfg["kv_length_size"]
        if ko + ks > len(frame):
            raise RefError("protocol")
        n = _int(frame[ko:], ks, little)
        if ko + ks + n > len(frame):
            raise RefError("protocol")
        section = frame[ko + ks:ko + ks + n]
        pairs = [p for p in section.split(cfg["kv_pair_sep"].encode()) if p]
        if any(cfg["kv_sep"].encode() not in p or p.startswith(cfg["kv_sep"].encode()) for p in pairs):
            raise RefError("protocol")
        if len(pairs) > max_headers:
            raise RefError("too_many_headers")
        for p in pairs:
            k, v = p.split(cfg["kv_sep"].encode(), 1)
            k, v = k.decode("latin-1"), v.decode("utf-8", "replace")
            meta[k] = meta[k] + "," + v if k in meta else v
    return {"kind": kind, "request_id": rid, "status": status, "metadata": meta,
            "offset": pos, "length": len(frame)}


def named(frame_meta, cfg):
    """Metadata with custom field names resolved: until agent/codec/decoder.py
    maps NM_KEY_LF_FIELD0 + i to fields[i].name, those keys read "64", "65"..."""
    fields = cfg.get("fields", [])
    out = {}
    for k, v in frame_meta.items():
        if k.isdigit() and 64 <= int(k) < 64 + len(fields):
            k = fields[int(k) - 64]["name"]
        out[k] = v
    return out


__all__ = ["LAYOUTS", "encode", "decode", "RefError", "named", "header_length", "struct"]
