"""Redis codec on real captures and seeds from other projects (../shared/realworld):
DeepFlow's and Zeek's Redis pcaps with their parsers' results, nDPI's resp.pcap,
Envoy's redis_proxy fuzz seeds. Skipped when the folder is absent."""

import collections
import re

import pytest

from agent.codec import ProtocolError, decoder_for
from tests.codec.harness import check_vector
from tests.realworld import envoy_corpus_data, path, tcp_streams


def decode(data, direction):
    """Frames until the end or the first error; (frames, buffered, error)."""
    dec = decoder_for("redis", direction=direction)
    frames = dec.feed(data)
    try:
        dec.feed(b"")
        err = None
    except ProtocolError as e:
        err = e
    return frames, dec.buffered, err


# -- DeepFlow: request text, request type, response type, error ---------------------

RESULT = re.compile(r'request: "(.*?)", request_type: "(.*?)", status: "", '
                    r'response_result: (\w+), error: "(.*?)" \} is_redis: (\w+)')
RESP_TYPE = {"BulkString": "$", "Integer": ":", "Array": "*", "Error": "-", "Status": "+"}


@pytest.mark.parametrize("name", ["redis_redis", "redis_redis-debug", "redis_redis-error"])
def test_deepflow_captures(name):
    pcap = path("wire", "deepflow", f"{name}.pcap")
    results = [RESULT.search(line).groups()
               for line in path("wire", "deepflow", f"{name}.result").read_text().splitlines()]
    want_reqs = [(rtype.lower(), text) for text, rtype, *_ in results if text]
    want_rsps = collections.Counter(RESP_TYPE[r] for text, _, r, _, ok in results
                                    if not text and ok == "true" and r != "Unknown")
    want_errs = [err[1:] for *_, err, _ in results if err]
    reqs, rsps = [], collections.Counter()
    errs = []
    for s in tcp_streams(pcap, port=6379):
        frames, left, err = decode(s.c2s, "request")
        assert left == 0 and err is None
        reqs += frames
        frames, left, err = decode(s.s2c, "response")
        assert err is None
        rsps.update(chr(f.variant) for f in frames)
        errs += [f.metadata["message"] for f in frames if f.kind == "error"]
        if left:   # the capture ends inside a reply: DeepFlow typed its start
            rsps.update(chr(s.s2c[len(s.s2c) - left]))
    # streams come in capture order, DeepFlow's lines in its own: compare sorted
    assert sorted((f.metadata["command"], f.metadata.get("key")) for f in reqs) == \
        sorted((cmd, text.split(" ", 1)[1] if cmd != "lrange" else text.split(" ")[1])
               for cmd, text in want_reqs)
    assert rsps == want_rsps
    assert errs == want_errs


# -- Zeek: cmd.name / cmd.key per request, one log line per reply --------------------

ZEEK = [  # (pcap, log, requests we decode before the capture's own error)
    ("pipelining-example", "pipelined", None),
    ("pipeline-quotes", "pipeline-with-quotes", 6),
    ("stream", "stream", None),
    ("excessive-pipelining", "excessive-pipelining", None),
    ("almost-resp", "almost-redis", None),
    ("reply-off-on", "client-reply-off", None),
    ("attr", "attributes", None),
]


def zeek_log(name):
    rows = []
    for line in path("wire", "zeek_redis", f"baseline_{name}_redis.log").read_text().splitlines():
        if line and not line.startswith("#"):
            f = line.split("\t")
            rows.append({"cmd": f[6], "key": f[7], "success": f[9], "reply": f[10]})
    return rows


@pytest.mark.parametrize("pcap,log,stop", ZEEK, ids=[z[0] for z in ZEEK])
def test_zeek_captures(pcap, log, stop):
    rows = zeek_log(log)
    reqs, rsps, req_err = [], [], None
    for s in tcp_streams(path("wire", "zeek_redis", f"{pcap}.pcap"), 6379):
        frames, left, err = decode(s.c2s, "request")
        reqs += frames
        req_err = req_err or err
        frames, _, _ = decode(s.s2c, "response")
        rsps += frames
    if stop is None:
        assert req_err is None and len(reqs) == len(rows)
    else:   # unbalanced quotes: redis-server refuses them, so do we
        assert isinstance(req_err, ProtocolError) and len(reqs) == stop
    for frame, row in zip(reqs, rows):
        if row["cmd"] == "-":   # Zeek stops naming commands past its pipelining limit
            continue
        assert frame.metadata["command"] == row["cmd"].lower()
        if row["key"] != "-":
            assert frame.metadata["key"] == row["key"]
    replied = [r for r in rows if r["success"] in ("T", "F")]
    assert len(rsps) >= len(replied)
    for frame, row in zip(rsps, replied):
        assert (frame.kind == "error") == (row["success"] == "F")


def test_zeek_pubsub_resp3_pushes():
    pushes = []
    for s in tcp_streams(path("wire", "zeek_redis", "pubsub-resp3.pcap"), 6379):
        frames, left, err = decode(s.s2c, "response")
        assert left == 0 and err is None
        pushes += [f.metadata["command"] for f in frames if f.kind == "event"]
    want = [m.group(1) for m in re.finditer(r"Got published data!, \[(\w+),",
                                            path("wire", "zeek_redis",
                                                 "baseline_pubsub-resp3_output").read_text())]
    assert pushes == want


def test_zeek_auth_and_set():
    for pcap, cmd in (("auth", "auth"), ("set", "set")):
        for s in tcp_streams(path("wire", "zeek_redis", f"{pcap}.pcap"), 6379):
            reqs, left, err = decode(s.c2s, "request")
            rsps, rleft, rerr = decode(s.s2c, "response")
            assert {f.metadata["command"] for f in reqs} == {cmd}
            assert len(reqs) == len(rsps) == 3 and not (left or rleft or err or rerr)
    text = path("wire", "zeek_redis", "baseline_set_output").read_text()
    keys = re.findall(r"Key: (\S+) Value", text)
    s = tcp_streams(path("wire", "zeek_redis", "set.pcap"), 6379)[0]
    assert [f.metadata["key"] for f in decode(s.c2s, "request")[0]] == keys


def test_zeek_array_exhaustion_is_bounded():
    for s in tcp_streams(path("wire", "zeek_redis", "array-element-object-exhaustion.pcap"), 6379):
        frames, left, err = decode(s.s2c, "response")
        assert len(frames) == 1 and left == 0 and err is None
        with pytest.raises(Exception) as info:
            decoder_for("redis", direction="response", max_elements=100).feed(s.s2c)
        assert type(info.value).__name__ in ("TooManyElements", "FrameTooLarge")


# -- nDPI and Envoy ----------------------------------------------------------------------

def test_ndpi_resp_capture_split_everywhere():
    (s,) = tcp_streams(path("wire", "ndpi", "resp.pcap"), 6379)
    reqs = check_vector("redis", s.c2s)
    assert [f["metadata"]["command"] for f in reqs] == ["command", "ping", "set", "get"]
    rsps = decode(s.s2c, "response")[0]
    assert len(rsps) == len(reqs)


@pytest.mark.parametrize("name,frames", [("redis_proxy_1_bulk_string", 1),
                                         ("redis_proxy_1_nested_array", 1)])
def test_envoy_redis_proxy_seeds(name, frames):
    data = b"".join(envoy_corpus_data(path("wire", "envoy_fuzz_corpus", name)))
    dec = decoder_for("redis", direction="response")
    got = dec.feed(data)
    assert len(got) == frames and dec.buffered == 1
    with pytest.raises(ProtocolError):     # the trailing "0" is no reply type
        dec.feed(b"")
    check_vector("redis", data[:-1], direction="response")
