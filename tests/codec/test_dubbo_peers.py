"""Dubbo against independent implementations: bodies written by hessian.js
(node), and real captures and Envoy seeds from ../shared/realworld."""

import glob
import json
import pathlib
import random
import re
import shutil
import subprocess

import pytest

from agent.codec import decoder_for
from tests import realworld
from tests.codec.dubbo_wire import request

HESSIANJS = pathlib.Path(__file__).resolve().parent / "hessianjs"
DESCRIPTORS = ["I", "J", "Z", "D", "[B", "Ljava/lang/String;", "Ljava/util/Map;",
               "[Ljava/lang/Object;", "Lcom/example/Order;", "[[I"]


def _hessianjs_encode(messages):
    """Each message (a list of tagged values) encoded by hessian.js."""
    if not (HESSIANJS / "node_modules" / "hessian.js").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=HESSIANJS,
                       check=True, timeout=300)
    out = subprocess.run([shutil.which("node") or "node", "encode.js"], cwd=HESSIANJS,
                         input=json.dumps(messages).encode(), capture_output=True,
                         check=True, timeout=120)
    return [bytes.fromhex(line) for line in out.stdout.decode().split()]


def _text(rng):
    alphabet = "abcXYZ09.-_/ \u00e9\u00df\u4e16\u754c\U0001F600\U0001F680"
    n = rng.choice([0, 1, 5, 31, 32, 200, 1023, 1024, 3000])
    return "".join(rng.choice(alphabet) for _ in range(n))


def _value(rng, depth, kept):
    scalars = [
        lambda: ["null"], lambda: ["bool", rng.random() < 0.5],
        lambda: ["int", rng.choice([0, -16, 47, 48, -2048, 2047, -262144, 262143,
                                    2**31 - 1, -(2**31)])],
        lambda: ["long", rng.choice([0, -8, 15, 16, 2047, 262143, 2**31, -(2**40), 2**53 - 1])],
        lambda: ["double", rng.choice([0.0, 1.0, 2.0, -128.0, 300.0, 1.5, 1e300, -0.25])],
        lambda: ["date", rng.choice([0, 60000, 1700000000000, 1700000000123])],
        lambda: ["str", _text(rng)],
        lambda: ["bin", bytes(rng.randrange(256) for _ in range(
            rng.choice([0, 15, 16, 1023, 1024, 5000]))).hex()],
    ]
    if depth >= 4 or rng.random() < 0.5:
        return rng.choice(scalars)()
    kind = rng.choice(["list", "tlist", "map", "obj", "keep", "ref"])
    items = [_value(rng, depth + 1, kept) for _ in range(rng.choice([0, 1, 3, 8, 9]))]
    if kind == "list":
        return ["list", items]
    if kind == "tlist":
        return ["tlist", rng.choice(["[int", "[string", "java.util.List"]), items]
    if kind == "map":
        return ["map", [[["str", f"k{i}"], v] for i, v in enumerate(items)]]
    if kind == "obj":
        cls = rng.choice(["com.example.Order", "com.example.Item", "com.example.Empty"])
        fields = {"com.example.Order": ["id", "items", "note"], "com.example.Item": ["sku"],
                  "com.example.Empty": []}[cls]
        return ["obj", cls, [[f, _value(rng, depth + 1, kept)] for f in fields]]
    if kind == "keep":
        name = f"k{len(kept)}"
        kept.append(name)
        return ["keep", name, ["list", items]]
    return ["ref", rng.choice(kept)] if kept else ["null"]


def _message(rng):
    kept = []
    nargs = rng.choice([0, 1, 2, 5])
    desc = "".join(rng.choice(DESCRIPTORS) for _ in range(nargs))
    head = {"dubbo_version": "2.0.2", "interface": f"com.example.Svc{rng.randrange(10)}",
            "version": rng.choice(["1.0.0", "", "2.1"]), "method": rng.choice(["get", "sayHello"]),
            "param_types": desc}
    attach = {"path": head["interface"], "interface": head["interface"],
              "group": rng.choice(["a", "b", _text(rng)]), "timeout": "3000"}
    extra = [[["str", "retries"], ["int", 2]], [["str", "obj"], _value(rng, 1, kept)]]
    if rng.random() < 0.5:
        attach["generic"] = "true"
    values = [["str", head[k]] for k in ("dubbo_version", "interface", "version", "method",
                                          "param_types")]
    values += [_value(rng, 0, kept) for _ in range(nargs)]
    pairs = [[["str", k], ["str", v]] for k, v in attach.items()] + extra
    rng.shuffle(pairs)
    values.append(["map", pairs])
    expected = dict(head, **{k: v for k, v in attach.items() if k != "interface"})
    if extra[1][1][0] == "str":     # a random value that came out a string
        expected["obj"] = extra[1][1][1]
    return values, expected


def test_hessianjs_bodies_decode_to_the_metadata_encoded():
    rng = random.Random(20240607)
    cases = [_message(rng) for _ in range(300)]
    bodies = _hessianjs_encode([values for values, _ in cases])
    assert len(bodies) == len(cases)
    stream = b"".join(request(b, rid=i) for i, b in enumerate(bodies))
    frames = _feed_all(decoder_for("dubbo"), stream)
    assert len(frames) == len(cases)
    for i, (frame, (_, expected)) in enumerate(zip(frames, cases)):
        assert (frame.kind, frame.request_id) == ("request", i)
        got = frame.metadata
        assert got == {k: _as_decoded(v) for k, v in expected.items()}, i
    # the same stream, cut at random places, decodes the same
    for seed in range(3):
        cut = random.Random(seed)
        dec, out, pos = decoder_for("dubbo"), [], 0
        while pos < len(stream):
            step = cut.randrange(1, 3000)
            out += _feed_all(dec, stream[pos:pos + step])
            pos += step
        assert [(f.request_id, f.metadata) for f in out] == \
            [(f.request_id, f.metadata) for f in frames]


def _feed_all(dec, data):
    """Decoder.feed stops when one call fills the metadata array (it reads a
    short batch as the end of the data); feed nothing until it is drained."""
    frames = dec.feed(data)
    while dec.buffered:
        more = dec.feed(b"")
        if not more:
            break
        frames += more
    return frames


def _as_decoded(s):
    """What Frame.metadata shows for s written as hessian.js (and Java) write
    it: a char beyond U+FFFF as two 3-byte surrogates, read back as UTF-8."""
    units = s.encode("utf-16-be", "surrogatepass")
    lone = "".join(chr(int.from_bytes(units[i:i + 2], "big")) for i in range(0, len(units), 2))
    return lone.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


# -- real captures and seeds ----------------------------------------------------

def _expectations(result_file):
    rows = []
    for line in pathlib.Path(result_file).read_text().splitlines():
        if "DubboInfo" not in line:
            continue
        row = {k: v for k, v in re.findall(r'(\w+): "([^"]*)"', line)}
        row.update({k: v for k, v in re.findall(r"(\w+): (\d+|Request|Response)", line)})
        status = re.search(r"status_code: Some\((\d+)\)", line)
        row["status"] = int(status.group(1)) if status else None
        rows.append(row)
    return rows


@pytest.mark.parametrize("name", ["dubbo-eys", "dubbo-kryo", "dubbo-sw8", "dubbo_hessian2"])
def test_deepflow_captures(name):
    pcap = realworld.path("wire", "deepflow", f"dubbo_{name}.pcap")
    result = pcap.with_name(f"dubbo_{name.replace('hessian2', 'hessian')}.result")
    expected = _expectations(result)
    got = []
    for stream in realworld.tcp_streams(pcap):
        for data, direction in ((stream.c2s, "request"), (stream.s2c, "response")):
            if data:
                got += decoder_for("dubbo", direction=direction).feed(data)
    requests = [f for f in got if f.kind == "request"]
    responses = [f for f in got if f.kind in ("response", "error")]
    want_req = [r for r in expected if r["msg_type"] == "Request"]
    want_resp = [r for r in expected if r["msg_type"] == "Response"]
    assert len(requests) == len(want_req) and len(responses) == len(want_resp)
    for f, want in zip(requests, want_req):
        assert f.request_id == int(want["request_id"])
        assert f.variant == int(want["serial_id"])
        assert f.length == int(want["captured_request_byte"])
        if f.variant == 2:
            md = f.metadata
            assert md["interface"] == want["service_name"]
            assert md["version"] == want["service_version"]
            assert md["method"] == want["method_name"]
            assert md["dubbo_version"] == want["dubbo_version"]
        else:
            assert f.flags & 2 and f.metadata == {}
    for f, want in zip(responses, want_resp):
        assert (f.request_id, f.status) == (int(want["request_id"]), want["status"])
        assert f.length == int(want["captured_response_byte"])


def test_deepflow_trace_attachments():
    pcap = realworld.path("wire", "deepflow", "dubbo_dubbo-eys.pcap")
    f = decoder_for("dubbo").feed(realworld.tcp_streams(pcap)[0].c2s)[0]
    assert f.metadata["EagleEye-TraceID"] == "90606765166547547262111562aQk8pD"
    assert f.metadata["EagleEye-SpanID"] == "-6455382699367774771"
    pcap = realworld.path("wire", "deepflow", "dubbo_dubbo-sw8.pcap")
    f = decoder_for("dubbo").feed(realworld.tcp_streams(pcap)[0].c2s)[0]
    assert f.metadata["sw8"].startswith("1-YzgxNjRjYWU5MGU5NGZlNjg0OTNjMTA2ZWE5NWYxZWUuNjYu")


@pytest.mark.parametrize("seed", ["dubbo_proxy_ondata_twoway", "dubbo_proxy_ondata_msg_split",
                                  "dubbo_proxy_protocol_routing"])
def test_envoy_seeds(seed):
    chunks = realworld.envoy_corpus_data(realworld.path("wire", "envoy_fuzz_corpus", seed))
    dec, frames = decoder_for("dubbo"), []
    for chunk in chunks:
        frames += dec.feed(chunk)
    assert len(frames) == 1 and frames[0].kind == "request"
    assert frames[0].request_id == (100 if seed.endswith("routing") else 15)
    assert frames[0].metadata == {"dubbo_version": "2.0.2", "interface": "test",
                                  "version": "0.0.0", "method": "test"}


def test_realworld_corpus_glob_is_covered():
    found = sorted(p.split("/")[-1] for p in glob.glob(str(realworld.ROOT / "wire" / "*" / "dubbo_*")))
    if not found:
        pytest.skip("shared/realworld not present")
    assert len(found) >= 10
