"""agent.codec._frames.claim and replies (native/frames_claim.c, frames_replies.c), the
one C call per batch on each side of multiplexed batches, against their Python
references, and the metadata dict shared by request frames of one feed with byte-equal
spans."""

import random

import pytest
from hypothesis import given, settings, strategies as st

from agent.codec import decoder_for
from agent.codec.decoder import ACCELERATED
from agent.demo import dubbo_wire
from agent.proxy.protocols import (ID_CODES, THRIFT_COMPACT, code_key, code_names, count_codes,
                                   rewrite_frames_py, traits_for)
from agent.proxy.request import Request

from .test_mux import dubbo_frames, thrift_frames

pytestmark = pytest.mark.skipif(not ACCELERATED, reason="agent.codec._frames not built")

from agent.codec import _frames  # noqa: E402  (after the skip: the C module)
from agent.proxy.upstream import _take_ids_py  # noqa: E402

DUBBO = traits_for("dubbo", {})


def batch_of(frames, session=None):
    """A batch of these request frames, of its own client unless `session` is given."""
    req = Request(session or object(), None, frames[0], b"", "request", 0, None, "", 0.0, 1.0)
    req.count, req.frames = len(frames), list(frames)
    return req


def dubbo_reply(up_id: int, status: int = 20) -> bytes:
    if status == 20:
        return dubbo_wire.response(up_id, "ok")
    body = b"\x05oops!"
    return dubbo_wire.HEADER.pack(dubbo_wire.MAGIC, dubbo_wire.HESSIAN2, status, up_id,
                                  len(body)) + body


def claim_py(frames, inflight, req, first, encoding):
    """The reference: rewrite the run, then take its ids (None: one is taken)."""
    data = rewrite_frames_py(frames, first, encoding)
    ids = _take_ids_py(inflight, req, first, len(frames))
    return None if ids is None else (data, ids)


# -- claim -------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 2**31 - 1), min_size=1, max_size=20),
       st.integers(1, 2**40), st.sets(st.integers(0, 30), max_size=4))
def test_claim_matches_rewrite_then_take_ids(client_ids, first, busy):
    frames, _ = dubbo_frames(client_ids)
    other = batch_of(frames[:1])
    inflight_c = {first + b: other for b in busy}
    inflight_py = dict(inflight_c)
    req = batch_of(frames)
    got = _frames.claim(frames, inflight_c, req, first, ID_CODES["be"], 0)
    want = claim_py(frames, inflight_py, req, first, "be")
    assert got == want
    assert inflight_c == inflight_py              # nothing taken when one id is busy


def test_claim_writes_thrift_ids_per_frame_encoding():
    binary, _ = thrift_frames([1, 2, 3])
    req = batch_of(binary)
    data, ids = _frames.claim(binary, {}, req, 40, ID_CODES["be"], THRIFT_COMPACT)
    assert data == rewrite_frames_py(binary, 40, "be") and ids == {40: 0, 41: 1, 42: 2}
    compact, _ = thrift_frames([5, 6], "compact")
    req = batch_of(compact)
    inflight = {}
    data, ids = _frames.claim(compact, inflight, req, 9, ID_CODES["be"], THRIFT_COMPACT)
    assert data == rewrite_frames_py(compact, 9, "varint")
    assert inflight == {9: req, 10: req}


def test_claim_takes_nothing_when_an_id_does_not_fit():
    compact, _ = thrift_frames([5, 6], "compact")         # 1-byte varint fields
    inflight = {}
    with pytest.raises(ValueError, match="varint"):
        _frames.claim(compact, inflight, batch_of(compact), 200, 0, THRIFT_COMPACT)
    assert inflight == {}


def test_claim_refuses_bad_input():
    frames, _ = dubbo_frames([1, 2])
    req = batch_of(frames)
    with pytest.raises(TypeError):
        _frames.claim([frames[0], b"x"], {}, req, 1, 0, 0)
    with pytest.raises(ValueError):
        _frames.claim([], {}, req, 1, 0, 0)
    with pytest.raises(ValueError):
        _frames.claim(frames, {}, req, 2**64 - 1, 0, 0)   # ids past 2**64
    with pytest.raises(TypeError):
        _frames.claim(frames, [], req, 1, 0, 0)


# -- replies -----------------------------------------------------------------------------

def replies_py(frames, inflight, start, traits):
    """The reference: UpstreamConn's per-frame loop (python_demux's filing rule), then
    per batch the ids restored with the Python rewrite and the codes counted."""
    groups, i = {}, start
    while i < len(frames):
        f = frames[i]
        req = inflight.get(f.request_id) if f.kind in ("response", "error") else None
        if req is None or req.count <= 1 or req.done or f.request_id not in (req.ids or {}):
            break
        if req not in groups and any(r.session is req.session for r in groups):
            break                   # a second batch of one client: its order on that client
        inflight.pop(f.request_id)
        got = groups.setdefault(req, ([], []))
        got[0].append(f)
        got[1].append(req.frames[req.ids.pop(f.request_id)].request_id)
        i += 1
    out = []
    for req, (fs, rids) in groups.items():
        if req.codes is None:
            req.codes = {}
        count_codes(traits, fs, req.codes)
        out.append((req, rewrite_frames_py(fs, rids, "be"), fs))
    return out, i


def c_replies(frames, inflight, start, traits=DUBBO, encoding=0):
    code = traits.response_code
    return _frames.replies(frames, inflight, "response", "error", start, encoding,
                           THRIFT_COMPACT if traits.name == "thrift" else 0, code_key(code),
                           code_names(code))


def run_both(frames, make_inflight, traits=DUBBO):
    """Both implementations over one read, each caller handling the frame it stops at."""
    results = []
    for impl in ("c", "py"):
        inflight = make_inflight()
        seen, i = [], 0
        while i < len(frames):
            if impl == "c":
                groups, i = c_replies(frames, inflight, i, traits)
                groups = [(r, d, fs) for r, d, fs, rids in groups]
            else:
                groups, i = replies_py(frames, inflight, i, traits)
            seen.append(([(r.frames[0].request_id, d, [f.request_id for f in fs])
                          for r, d, fs in groups], i))
            i += 1
        results.append((seen, sorted(inflight), [(sorted(r.ids.items()), r.codes)
                                                 for r in make_inflight.reqs]))
    return results


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=6), st.randoms(use_true_random=False),
       st.integers(0, 3), st.sampled_from([20, 20, 31, 80, 90]), st.integers(1, 3))
def test_replies_match_the_python_loop(sizes, rnd, strays, bad_status, clients):
    """Batches of random sizes from 1-3 clients, their replies shuffled with unknown ids
    and a done batch's replies among them, some replies errors: the same groups, bytes,
    codes and stops."""
    owners = [object() for _ in range(clients)]
    batches, up, at = [], [], 100
    for k, n in enumerate(sizes):
        frames, _ = dubbo_frames([1000 * (k + 1) + j for j in range(n)])
        batches.append((frames, at))
        up += [at + j for j in range(n)]
        at += n + 3
    done_at = len(batches) - 1 if len(batches) > 1 and rnd.random() < 0.3 else None
    order = up + [90_000 + s for s in range(strays)]
    rnd.shuffle(order)
    data = b"".join(dubbo_reply(u, bad_status if rnd.random() < 0.3 else 20) for u in order)
    frames = decoder_for("dubbo", direction="response").feed(data)

    def make_inflight():
        inflight, reqs = {}, []
        for k, (fs, first) in enumerate(batches):
            req = batch_of(fs, owners[k % clients])
            req.ids = _take_ids_py(inflight, req, first, len(fs))
            req.done = k == done_at
            reqs.append(req)
        make_inflight.reqs = reqs
        return inflight

    c, py = run_both(frames, make_inflight)
    assert c == py


def test_replies_leave_heartbeats_singles_and_non_frames_to_python():
    hb = decoder_for("dubbo", direction="response").feed(dubbo_wire.heartbeat_reply(5))
    assert [f.kind for f in hb] == ["heartbeat"]
    sent, _ = dubbo_frames([1, 2])
    req, single = batch_of(sent), batch_of(sent[:1])
    req.ids = {5: 0, 1: 1}
    inflight = {5: req, 3: single}                  # the heartbeat's id maps to a batch too
    frames = hb + decoder_for("dubbo", direction="response").feed(
        dubbo_reply(1) + dubbo_reply(3)) + ["x"]
    for start in range(len(frames)):               # 1: not in flight, 2: a single request
        assert c_replies(frames, inflight, start) == ([], start)
    assert inflight == {5: req, 3: single} and req.ids == {5: 0, 1: 1}
    assert req.codes is None
    with pytest.raises(TypeError):
        c_replies(frames, [], 0)


def test_replies_keep_a_request_alive_that_only_inflight_held():
    sent, _ = dubbo_frames([7, 8])
    req = batch_of(sent)
    req.ids = {1: 0, 2: 1}
    inflight = {1: req, 2: req}
    del req
    frames = decoder_for("dubbo", direction="response").feed(dubbo_reply(2) + dubbo_reply(1))
    (got, data, _, _), = c_replies(frames, inflight, 0)[0]
    assert got.ids == {} and inflight == {} and got.codes == {"20": 2}
    assert data == rewrite_frames_py(frames, [8, 7], "be")


def test_replies_stop_at_a_second_batch_of_one_client():
    """Replies A0 B0 A1 of two batches of one client: filing B0 under its own group would
    write A1 before B0 on that client's connection; the call stops there instead."""
    client = object()
    a, b = batch_of(dubbo_frames([1, 2])[0], client), batch_of(dubbo_frames([3])[0], client)
    b.count = 2                                    # (a batch waiting for 2 replies)
    inflight = {}
    a.ids, b.ids = _take_ids_py(inflight, a, 10, 2), _take_ids_py(inflight, b, 20, 1)
    frames = decoder_for("dubbo", direction="response").feed(
        dubbo_reply(10) + dubbo_reply(20) + dubbo_reply(11))
    got, stop = c_replies(frames, inflight, 0)
    assert [g[0] for g in got] == [a] and stop == 1 and b.ids == {20: 0}
    other = batch_of(dubbo_frames([4])[0])         # another client: filed in the same call
    other.count = 2
    inflight[30] = other
    other.ids = {30: 0}
    frames = decoder_for("dubbo", direction="response").feed(dubbo_reply(11) + dubbo_reply(30))
    got, stop = c_replies(frames, inflight, 0)
    assert [g[0] for g in got] == [a, other] and stop == 2


def test_replies_restore_ids_and_count_by_kind_for_thrift():
    thrift = traits_for("thrift", {})
    sent, _ = thrift_frames([7, 8, 9])
    req = batch_of(sent)
    inflight = {}
    req.ids = _take_ids_py(inflight, req, 50, 3)
    # the server answers the proxy's ids: the same frames with ids 50..52, as replies
    replies = decoder_for("thrift", direction="response").feed(
        rewrite_frames_py(sent, 50, "be").replace(b"\x80\x01\x00\x01", b"\x80\x01\x00\x02"))
    assert [f.kind for f in replies] == ["response"] * 3
    req.codes = {"ok": 1}                                     # counts add up
    got, stop = c_replies(replies, inflight, 0, thrift)
    (r, data, _, rids), = got
    assert r is req and stop == 3 and rids is None and req.codes == {"ok": 4}
    assert data == rewrite_frames_py(replies, [7, 8, 9], "be")
    assert inflight == {} and req.ids == {}


def test_replies_leave_ids_that_do_not_fit_to_the_caller():
    """A compact reply whose 1-byte seqid field cannot hold the client's 2-byte id: no
    bytes, the client ids instead (the caller writes them one by one)."""
    sent, _ = thrift_frames([300, 301], "compact")          # 2-byte varints
    req = batch_of(sent)
    req.ids = {5: 0, 6: 1}
    inflight = {5: req, 6: req}
    short, _ = thrift_frames([5, 6], "compact")              # 1-byte varints
    replies = decoder_for("thrift", direction="response", thrift_protocol="compact",
                          thrift_transport="framed").feed(b"".join(
                              _as_reply(f.data) for f in short))
    got, stop = c_replies(replies, inflight, 0, traits_for("thrift", {}))
    (_, data, _, rids), = got
    assert data is None and rids == [300, 301] and stop == 2 and req.codes == {"ok": 2}


def _as_reply(frame: bytes) -> bytes:
    """A compact CALL frame as a REPLY (message type in the top 3 bits of byte 5)."""
    b = bytearray(frame)
    b[5] = (b[5] & 0x1F) | (2 << 5)
    return bytes(b)


def test_replies_file_at_most_64_batches_per_call():
    inflight, reqs, order = {}, [], []
    for k in range(70):
        fs, _ = dubbo_frames([k + 1, k + 2])
        req = batch_of(fs)
        req.ids = _take_ids_py(inflight, req, 10 * k + 1, 2)
        reqs.append(req)
        order.append(10 * k + 1)
    frames = decoder_for("dubbo", direction="response").feed(
        b"".join(dubbo_reply(u) for u in order))
    got, stop = c_replies(frames, inflight, 0)
    assert stop == 64 and [g[0] for g in got] == reqs[:64]
    got, stop = c_replies(frames, inflight, 64)
    assert stop == 70 and [g[0] for g in got] == reqs[64:]
    assert all(len(r.ids) == 1 for r in reqs)


def test_replies_refuse_bad_arguments():
    frames = decoder_for("dubbo", direction="response").feed(dubbo_reply(1))
    with pytest.raises(ValueError):
        _frames.replies(frames, {}, "response", "error", 0, 7, 0, 0, {})
    with pytest.raises(ValueError):
        _frames.replies(frames, {}, "response", "error", 0, 0, 0, 2, {})
    with pytest.raises(TypeError):
        _frames.replies(frames, [], "response", "error", 0, 0, 0, 0, {})
    assert _frames.replies(["x"], {}, "response", "error", 0, 0, 0, 0, {}) == ([], 0)


def test_replies_count_statuses_by_name_and_bound_the_memo():
    fs, _ = dubbo_frames([1, 2, 3])
    req = batch_of(fs)
    inflight = {}
    req.ids = _take_ids_py(inflight, req, 10, 3)
    frames = decoder_for("dubbo", direction="response").feed(
        dubbo_reply(10) + dubbo_reply(11, 80) + dubbo_reply(12))
    names = {k: str(k) for k in range(5000, 5000 + 4096)}   # full: cleared, then refilled
    _frames.replies(frames, inflight, "response", "error", 0, 0, 0, 1, names)
    assert req.codes == {"20": 2, "80": 1} and names == {20: "20", 80: "80"}
    assert all(type(v) is str for v in req.codes)
    req.codes, req.ids = [], {10: 0}                     # not a dict: refused
    with pytest.raises(TypeError):
        _frames.replies(frames, {10: req}, "response", "error", 0, 0, 0, 1, {})


# -- one dict for a run of equal metadata ------------------------------------------------

def test_request_frames_of_a_feed_with_equal_spans_share_one_dict():
    data = b"".join(dubbo_wire.request(i, "org.demo.Greeter", m, "x")
                    for i, m in enumerate(["a", "a", "b", "b", "a"], 1))
    dec = decoder_for("dubbo", direction="request")
    frames = dec.feed(data)
    metas = [f.metadata for f in frames]
    assert metas[0] is metas[1] and metas[2] is metas[3]
    assert metas[1] is not metas[2] and metas[3] is not metas[4]
    fresh = [decoder_for("dubbo", direction="request").feed(f.data)[0].metadata for f in frames]
    assert metas == fresh
    # frames of the next feed get their own dict: a change made to one (user code may
    # write into it) is not seen by the frames of another read
    metas[0]["x"] = "y"
    again = dec.feed(dubbo_wire.request(9, "org.demo.Greeter", "a", "x"))
    assert "x" not in again[0].metadata


def test_shared_dicts_go_back_to_the_pool_once_all_their_frames_are_gone():
    data = dubbo_wire.request(1, "org.demo.Greeter", "a", "x") * 8
    dec = decoder_for("dubbo", direction="request")
    for _ in range(50):                     # under ASan (test_sanitizers) a double free shows
        frames = dec.feed(data)
        assert len({id(f.metadata) for f in frames}) == 1
        random.shuffle(frames)
        del frames


def test_replies_return_no_group_for_a_batch_whose_reply_stopped_the_run():
    """A batch reply whose id is in flight but not in the batch's ids (a state the proxy
    never makes): nothing filed, nothing returned, the entry back in place."""
    sent, _ = dubbo_frames([1, 2])
    req = batch_of(sent)
    req.ids = {8: 0}
    inflight = {7: req, 8: req}
    frames = decoder_for("dubbo", direction="response").feed(dubbo_reply(7) + dubbo_reply(8))
    assert c_replies(frames, inflight, 0) == ([], 0)
    assert inflight == {7: req, 8: req} and req.ids == {8: 0} and req.codes is None
    req.ids = {8: 5}                                   # an index past the batch's frames
    assert c_replies(frames, inflight, 1) == ([], 1)
    assert req.ids == {8: 5} and inflight == {7: req, 8: req}


# -- IdRun: req.ids of a claimed batch -----------------------------------------------------

@pytest.mark.parametrize("n", [1, 3, 64, 65, 130])
def test_claimed_ids_read_like_the_dict_they_replace(n):
    frames, _ = dubbo_frames(range(1, n + 1))
    ids = _frames.claim(frames, {}, batch_of(frames), 1000, 0, 0)[1]
    ref = {1000 + i: i for i in range(n)}
    rnd = random.Random(n)
    for up in rnd.sample(sorted(ref), k=n // 2) + [5, 1000 + n, -1, 2**70, "x"]:  # (ids are ints)
        if up in ref:
            assert ids.pop(up) == ref.pop(up)
        else:
            assert up not in ids and ids.get(up) is None and ids.pop(up, "d") == "d"
            with pytest.raises(KeyError):
                ids.pop(up)
            with pytest.raises(KeyError):
                ids[up]
        assert ids == ref and len(ids) == len(ref) and bool(ids) == bool(ref)
        assert list(ids) == sorted(ref) == ids.keys()
        assert ids.values() == [ref[k] for k in sorted(ref)] and ids.items() == sorted(ref.items())
        assert all(ids[k] == v and ids.get(k) == v and k in ids for k, v in ref.items())
    assert ids != {1: 2} and repr(ids).startswith("IdRun({")
    with pytest.raises(TypeError):
        hash(ids)


def test_a_claimed_batch_answered_one_by_one_empties_its_ids():
    """The Python reference path (one reply at a time) pops from an IdRun as from a dict;
    replies clears it in C; both leave it empty and falsy."""
    frames, _ = dubbo_frames([1, 2, 3])
    req = batch_of(frames)
    inflight = {}
    data, req.ids = _frames.claim(frames, inflight, req, 40, 0, 0)
    assert type(req.ids).__name__ == "IdRun"
    assert req.ids.pop(41) == 1                         # (what _response_by_id does)
    inflight.pop(41)
    replies = decoder_for("dubbo", direction="response").feed(dubbo_reply(42) + dubbo_reply(40))
    (r, data, _, _), = c_replies(replies, inflight, 0)[0]
    assert r is req and not req.ids and len(req.ids) == 0 and inflight == {}
    assert data == rewrite_frames_py(replies, [3, 1], "be")
