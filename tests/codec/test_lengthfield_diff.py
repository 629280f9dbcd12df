"""Differential tests of native/lengthfield.c against the independent Python
implementation in test_lengthfield_layouts: hypothesis-generated messages
and layouts, arbitrary bytes, and real-world Dubbo / Thrift framed streams."""

import glob

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from agent.codec import CodecError, FrameTooLarge, ProtocolError, TooManyHeaders, decoder_for
from tests import realworld
from tests.codec.test_lengthfield_layouts import LAYOUTS, RefError, decode, encode, named

ERRORS = {"protocol": ProtocolError, "too_large": FrameTooLarge, "too_many_headers": TooManyHeaders}
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


def c_decode(cfg, chunks, **limits):
    """(frames, error class or None) from the C codec, fed chunk by chunk."""
    dec = decoder_for("lengthfield", **cfg, **limits)
    out = []
    try:
        for chunk in chunks:
            out.extend(dec.feed(chunk))
        dec.feed(b"")   # errors found after good frames surface on the next call
    except CodecError as e:
        return [summ(f, cfg) for f in out], type(e)
    return [summ(f, cfg) for f in out], None


def summ(frame, cfg):
    return {"kind": frame.kind, "request_id": frame.request_id, "status": frame.status,
            "metadata": named(frame.metadata, cfg), "offset": frame.offset, "length": frame.length}


def ref_decode(cfg, data, **limits):
    out = []
    try:
        decode(cfg, data, out=out, **limits)
    except RefError as e:
        return out, ERRORS[e.kind]
    return out, None


def pieces(data, cuts):
    cuts = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for c in cuts:
        out.append(data[last:c])
        last = c
    return out + [data[last:]]


token = st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=8)
message = st.fixed_dictionaries({
    "request_id": st.integers(0, 2**32 - 1),
    "kind": st.sampled_from([0, 1, 2, 4, 5, 0x10, 0x20, 0x40, 0x80]),
    "fields": st.fixed_dictionaries({
        "interface": st.binary(max_size=16).map(lambda b: b.replace(b"\0", b"")),
        "method": st.text(st.characters(min_codepoint=65, max_codepoint=90), max_size=11)
        .map(str.encode),
        "timeout": st.integers(0, 2**32 - 1), "cmdcode": st.integers(0, 65535),
        "status": st.integers(0, 255), "pb_header_len": st.integers(0, 65535)}),
    "kv": st.lists(st.tuples(token.map(lambda t: "x" + t), token), max_size=5),
    "body": st.binary(max_size=64),
})


@SETTINGS
@given(layout=st.sampled_from(sorted(LAYOUTS)), msgs=st.lists(message, min_size=1, max_size=6),
       cuts=st.lists(st.integers(0, 10**6), max_size=6))
def test_generated_streams_match_reference(layout, msgs, cuts):
    cfg = LAYOUTS[layout]
    encoded = []
    for m in msgs:
        m = dict(m, request_id=m["request_id"] % (1 << 8 * cfg.get("id_size", 0)))
        if cfg["length_size"] == 1:
            m["body"] = m["body"][:40]
        encoded.append(encode(cfg, **m))
    data = b"".join(encoded)
    want, err = ref_decode(cfg, data)
    assert err is None and len(want) == len(msgs)
    got, cerr = c_decode(cfg, pieces(data, cuts))
    assert (got, cerr) == (want, None)


@st.composite
def layouts(draw):
    """Random valid layouts: any length field position/size/order, adjustment,
    magic, id, kind byte."""
    ls = draw(st.sampled_from([1, 2, 3, 4, 8]))
    lo = draw(st.integers(0, 6))
    cfg = {"length_size": ls, "length_offset": lo, "little_endian": draw(st.integers(0, 1)),
           "length_includes_header": draw(st.integers(0, 1)),
           "length_adjustment": draw(st.integers(-8, 8))}
    hl = draw(st.integers(lo + ls, lo + ls + 12))
    cfg["header_length"] = hl
    if draw(st.booleans()):
        ms = draw(st.integers(1, min(4, hl)))
        cfg.update(magic_size=ms, magic=draw(st.integers(0, 2**(8 * ms) - 1)))
    if draw(st.booleans()):
        size = draw(st.integers(1, min(8, hl)))
        cfg.update(id_size=size, id_offset=draw(st.integers(0, hl - size)))
    if draw(st.booleans()):
        cfg.update(kind_offset=draw(st.integers(0, hl - 1)), kind_response_mask=0x80,
                   kind_oneway_mask=0x40, kind_heartbeat_mask=draw(st.sampled_from([0, 0x20])))
    return cfg


@SETTINGS
@given(cfg=layouts(), data=st.binary(max_size=200), cuts=st.lists(st.integers(0, 999), max_size=4),
       max_frame=st.sampled_from([None, 16, 64]))
def test_arbitrary_bytes_match_reference(cfg, data, cuts, max_frame):
    limits = {"max_frame_size": max_frame} if max_frame else {}
    try:
        decoder_for("lengthfield", **cfg)
    except ValueError:   # overlapping fields: refused by the init hook (tested elsewhere)
        assume(False)
    want = ref_decode(cfg, data, **limits)
    assert c_decode(cfg, pieces(data, cuts), **limits) == want


@SETTINGS
@given(data=st.binary(max_size=120), cuts=st.lists(st.integers(0, 999), max_size=3),
       layout=st.sampled_from(["kv", "bolt", "trpc"]))
def test_arbitrary_bytes_after_a_valid_prefix(data, cuts, layout):
    cfg = LAYOUTS[layout]
    stream = encode(cfg, request_id=1, kv=[("a", "b")]) + data
    assert c_decode(cfg, pieces(stream, cuts)) == ref_decode(cfg, stream)


# -- real-world streams (skip when ../shared/realworld is absent) -----------

DUBBO_LIKE = dict(magic=0xDABB, magic_size=2, length_offset=12, length_size=4, header_length=16,
                  id_offset=4, id_size=8,
                  fields=[{"name": "status", "offset": 3, "length": 1, "integer": True}])
THRIFT_FRAMED = dict(length_size=4, header_length=8, kind_offset=7, kind_response_mask=0x02,
                     kind_oneway_mask=0x04, fields=[{"name": "version", "offset": 4, "length": 2,
                                                     "integer": True}])


def dubbo_frames(data):
    """Independent Dubbo framing by struct: (request id, total length) pairs."""
    import struct
    out, pos = [], 0
    while pos + 16 <= len(data):
        _magic, _flag, _status, rid, blen = struct.unpack_from(">HBBQI", data, pos)
        if pos + 16 + blen > len(data):
            break
        out.append((rid, 16 + blen))
        pos += 16 + blen
    return out


def test_realworld_dubbo_captures_split_like_dubbo():
    root = realworld.path("wire", "deepflow")
    seen = 0
    for pcap in sorted(glob.glob(str(root / "dubbo_*.pcap"))):
        for stream in realworld.tcp_streams(pcap):
            for data in (stream.c2s, stream.s2c):
                if not data:
                    continue
                got, err = c_decode(DUBBO_LIKE, [data[:len(data) // 3], data[len(data) // 3:]])
                assert (got, err) == ref_decode(DUBBO_LIKE, data), pcap
                if err is None:
                    assert [(f["request_id"], f["length"]) for f in got] == dubbo_frames(data)
                seen += len(got)
    assert seen > 5


@pytest.mark.parametrize("prefix,cfg", [("dubbo_proxy_", DUBBO_LIKE), ("thrift_proxy_", THRIFT_FRAMED)])
def test_realworld_envoy_corpus_payloads(prefix, cfg):
    root = realworld.path("wire", "envoy_fuzz_corpus")
    decoded = 0
    for case in sorted(root.glob(prefix + "*")):
        data = b"".join(realworld.envoy_corpus_data(case))
        got, err = c_decode(cfg, [data])
        assert (got, err) == ref_decode(cfg, data), case.name
        decoded += len(got)
    assert decoded >= 2
