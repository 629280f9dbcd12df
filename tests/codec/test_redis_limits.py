"""Redis codec limits: frame size, depth, elements, inline line length,
no rescanning of a partial frame, and a batch larger than one C call."""

import pytest

from agent.codec import FrameTooLarge, TooDeep, TooManyElements, decoder_for
from tests.codec.harness import check_vector
from tests.codec.test_redis import resp_cmd


def test_huge_bulk_fails_fast():
    for direction, data in (("response", b"$1073741824\r\n"), ("request", b"*1\r\n$1073741824\r\n"),
                            ("response", b"*2\r\n$1\r\na\r\n!1073741824\r\n"),
                            ("response", b"$?\r\n;1073741824\r\n")):
        with pytest.raises(FrameTooLarge):
            decoder_for("redis", direction=direction).feed(data)


def test_max_frame_size():
    assert check_vector("redis", b"$10\r\n0123456789\r\n", direction="response", max_frame_size=17)
    for data in (b"$10\r\n0123456789\r\n", b"+" + b"x" * 20, b"*9\r\n", b"*2\r\n$5\r\nabcde\r\n$3\r\n"):
        with pytest.raises(FrameTooLarge):
            decoder_for("redis", direction="response", max_frame_size=16).feed(data)
    with pytest.raises(FrameTooLarge):
        decoder_for("redis", max_frame_size=20).feed(resp_cmd("SET", "k", "v" * 10))
    with pytest.raises(FrameTooLarge):
        decoder_for("redis", max_frame_size=20).feed(b"*100\r\n")


def test_max_depth():
    ok = b"*1\r\n" * 3 + b":1\r\n"
    assert len(decoder_for("redis", direction="response", max_depth=3).feed(ok)) == 1
    with pytest.raises(TooDeep):
        decoder_for("redis", direction="response", max_depth=2).feed(ok)
    with pytest.raises(TooDeep):   # far deeper than any stack: no recursion to blow
        decoder_for("redis", direction="response").feed(b"*1\r\n" * 100000)
    with pytest.raises(TooDeep):
        decoder_for("redis", direction="response", max_depth=1).feed(b"|1\r\n*1\r\n")
    deep = b"*1\r\n" * 32 + b":1\r\n"
    assert len(decoder_for("redis", direction="response").feed(deep)) == 1


def test_max_elements():
    assert decoder_for("redis", direction="response", max_elements=2).feed(b"%2\r\n:1\r\n:2\r\n:3\r\n:4\r\n")
    for data in (b"*3\r\n", b"%3\r\n", b"~3\r\n", b">3\r\n", b"|3\r\n", b"*?\r\n:1\r\n:2\r\n:3\r\n",
                 b"%?\r\n:1\r\n:2\r\n:3\r\n:4\r\n:5\r\n"):
        with pytest.raises(TooManyElements):
            decoder_for("redis", direction="response", max_elements=2).feed(data)
    with pytest.raises(TooManyElements):
        decoder_for("redis", max_elements=2).feed(b"*3\r\n")


def test_inline_limited_by_max_header_bytes():
    line = b"GET " + b"k" * 60 + b"\r\n"
    assert decoder_for("redis", max_header_bytes=64).feed(line)
    with pytest.raises(FrameTooLarge):
        decoder_for("redis", max_header_bytes=63).feed(line)
    with pytest.raises(FrameTooLarge):
        decoder_for("redis", max_header_bytes=63).feed(line[:-2])


def test_partial_big_frame_is_not_rescanned():
    dec = decoder_for("redis", direction="response")
    data = b"$100000\r\n" + b"x" * 100000 + b"\r\n"
    assert dec.feed(data[:20]) == []
    assert dec._d.need == len(data)
    assert [f.length for f in dec.feed(data[20:])] == [len(data)]


def test_batch_larger_than_the_metadata_array_is_delivered_at_once():
    """Each GET carries two metadata entries; 500 of them overflow one
    nm_decode() call's metadata array: all must still come out of one feed()."""
    data = resp_cmd("GET", "k") * 500
    frames = decoder_for("redis").feed(data)
    assert len(frames) == 500 and frames[-1].metadata == {"command": "get", "key": "k"}
    assert frames[-1].offset == len(data) - frames[-1].length
