"""Redis codec against a real redis-server on loopback: real bytes both ways,
RESP2 and RESP3 (HELLO 3), pipelines, big values, pub/sub pushes, and the
server's own COMMAND GETKEYS as the oracle for key extraction."""

import os
import shutil
import socket
import subprocess
import time

import hiredis
import pytest
import redis

from agent.codec import ProtocolError, decoder_for

SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
PACK = redis.Connection()
NOT_ENOUGH = object()   # hiredis returns False for "#f" too


def cmd(*args) -> bytes:
    return b"".join(PACK.pack_command(*args))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not os.path.exists(SERVER):
        pytest.fail(f"{SERVER} is required for this test")
    tmp = tmp_path_factory.mktemp("redis")
    port = free_port()
    proc = subprocess.Popen([SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp), "--daemonize", "no",
                             "--enable-debug-command", "yes"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("redis-server did not start")
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


class Conn:
    """A raw connection that records every byte both ways."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sent = bytearray()
        self.received = bytearray()
        self.replies = decoder_for("redis", direction="response")
        self.frames = []

    def send(self, data: bytes):
        self.sock.sendall(data)
        self.sent += data

    def wait_frames(self, n, timeout=5.0):
        deadline = time.monotonic() + timeout
        while len(self.frames) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out with {len(self.frames)}/{n} replies")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError("server closed the connection")
            self.received += chunk
            self.frames += self.replies.feed(chunk)
        return self.frames

    def close(self):
        self.sock.close()


def assert_hiredis_agrees(data, frames):
    """Each of our frames is exactly one hiredis reply (attributes aside)."""
    assert sum(f.length for f in frames) == len(data)
    for f in frames:
        reader = hiredis.Reader(notEnoughData=NOT_ENOUGH)
        reader.feed(bytes(data[f.offset:f.offset + f.length]))
        reply = reader.gets()
        assert reply is not NOT_ENOUGH and reader.gets() is NOT_ENOUGH and not reader.has_data()
        assert (f.kind == "error") == isinstance(reply, hiredis.ReplyError)


def test_resp2_pipeline_both_directions(server):
    big = os.urandom(1 << 20)
    commands = [
        ("FLUSHALL",), ("SET", "k1", "v1"), ("GET", "k1"), ("GET", "missing"), ("INCR", "n"),
        ("SET", "big", big), ("GET", "big"), ("RPUSH", "l", "a", "b", "c"), ("LRANGE", "l", 0, -1),
        ("HSET", "h", "f1", "1", "f2", "2"), ("HGETALL", "h"), ("MGET", "k1", "missing", "n"),
        ("LPUSH", "k1", "x"), ("NOSUCHCOMMAND",), ("EVAL", "return {1,{2,'x'},redis.error_reply('E')}", 0),
        ("EXISTS", "k1", "n"), ("DEL", "k1"), ("PING",), ("PING", "hi"), ("ECHO", "a\r\nb"),
    ]
    conn = Conn(server)
    try:
        for c in commands:
            conn.send(cmd(*c))
        frames = conn.wait_frames(len(commands))
    finally:
        conn.close()
    assert len(frames) == len(commands)
    reqs = decoder_for("redis").feed(bytes(conn.sent))
    assert [f.metadata["command"] for f in reqs] == [c[0].lower() for c in commands]
    assert reqs[5].metadata["key"] == "big" and reqs[5].length > 1 << 20
    kinds = [f.kind for f in frames]
    assert kinds[12] == "error" and frames[12].metadata["message"].startswith("WRONGTYPE")
    assert kinds[13] == "error" and frames[13].metadata["message"].startswith("ERR unknown command")
    assert kinds.count("error") == 2
    assert frames[6].length == len(big) + len(b"$1048576\r\n\r\n")
    assert_hiredis_agrees(conn.received, frames)


def test_resp3_types_from_server(server):
    commands = [
        ("HELLO", "3"), ("DEL", "h", "s", "z"), ("HSET", "h", "a", "1"), ("HGETALL", "h"),
        ("SADD", "s", "x", "y"), ("SMEMBERS", "s"), ("ZADD", "z", "1.5", "m"), ("ZSCORE", "z", "m"),
        ("GET", "nothing"), ("INFO", "server"), ("EVAL", "redis.setresp(3); return {double=3.25}", 0),
        ("EVAL", "redis.setresp(3); return true", 0), ("EVAL", "redis.setresp(3); return {big_number='12345678901234567890123'}", 0),
        ("DEBUG", "PROTOCOL", "attrib"), ("DEBUG", "PROTOCOL", "push"), ("PING",),
    ]
    conn = Conn(server)
    try:
        for c in commands:
            conn.send(cmd(*c))
        frames = conn.wait_frames(len(commands) + 1)   # DEBUG PROTOCOL push: push + reply
    finally:
        conn.close()
    variants = "".join(chr(f.variant) for f in frames)
    assert variants == "%::%:~:,_=,#($>$+"
    attrib, push = frames[13], frames[14]
    data = bytes(conn.received)
    assert data[attrib.offset:attrib.offset + 1] == b"|"            # folded attribute
    assert data[attrib.offset + attrib.body_offset:].startswith(b"Some real reply following the attribute")
    assert push.kind == "event" and push.metadata["command"] == "server-cpu-usage"
    assert [f.kind for f in frames].count("event") == 1
    assert_hiredis_agrees(conn.received[:attrib.offset], frames[:13])
    with pytest.raises(ProtocolError):      # HELLO 3's map is not RESP2
        decoder_for("redis", direction="response", resp3=False).feed(data)


def test_resp3_pubsub_pushes(server):
    sub, pub = Conn(server), Conn(server)
    try:
        sub.send(cmd("HELLO", "3"))
        sub.wait_frames(1)
        sub.send(cmd("SUBSCRIBE", "news") + cmd("PSUBSCRIBE", "n*"))
        sub.wait_frames(3)
        pub.send(cmd("PUBLISH", "news", "x" * 5000))
        pub.wait_frames(1)
        frames = sub.wait_frames(5)
        sub.send(cmd("PING"))
        frames = sub.wait_frames(6)
    finally:
        sub.close()
        pub.close()
    events = [f for f in frames if f.kind == "event"]
    assert [e.metadata["command"] for e in events] == ["subscribe", "psubscribe", "message", "pmessage"]
    assert frames[-1].kind == "response" and chr(frames[-1].variant) == "+"
    reqs = decoder_for("redis").feed(bytes(sub.sent))
    assert [f.metadata["command"] for f in reqs] == ["hello", "subscribe", "psubscribe", "ping"]


def test_heartbeat_against_server(server):
    dec = decoder_for("redis")
    conn = Conn(server)
    try:
        hb = dec.heartbeat()
        conn.send(hb + cmd("PING", "echo me"))
        frames = conn.wait_frames(2)
    finally:
        conn.close()
    reqs = dec.feed(bytes(conn.sent))
    got = [bytes(conn.received[f.offset:f.offset + f.length]) for f in frames]
    assert got == [dec.heartbeat_reply(reqs[0]), dec.heartbeat_reply(reqs[1])]


KEY_CASES = [
    ("GET", "a"), ("SET", "a", "1"), ("MGET", "m1", "m2"), ("DEL", "d1", "d2"),
    ("EXISTS", "e1"), ("EVAL", "return 1", "2", "ek1", "ek2"), ("EVALSHA", "ab", "1", "es"),
    ("EVAL", "return 1", "0"), ("XREAD", "COUNT", "1", "STREAMS", "xs", "0"),
    ("XREADGROUP", "GROUP", "g", "c", "STREAMS", "xg", ">"), ("ZUNIONSTORE", "dst", "2", "z1", "z2"),
    ("ZUNION", "2", "zu1", "zu2"), ("LMPOP", "2", "lm1", "lm2", "LEFT"),
    ("BLMPOP", "0", "1", "bl", "LEFT"), ("BITOP", "AND", "bd", "b1"), ("OBJECT", "ENCODING", "oe"),
    ("MEMORY", "USAGE", "mu"), ("SORT", "srt"), ("RENAME", "r1", "r2"), ("HSET", "hh", "f", "v"),
    ("SINTERCARD", "2", "sc1", "sc2"), ("ZADD", "za", "1", "m"), ("GETEX", "gx"),
    ("XADD", "xa", "*", "f", "v"), ("GEOADD", "ga", "1", "2", "m"), ("PFADD", "pf", "x"),
    ("SUBSCRIBE", "ch"), ("PUBLISH", "ch", "m"), ("PING",), ("INFO",), ("SELECT", "0"),
    ("CLIENT", "LIST"), ("CONFIG", "GET", "port"), ("FLUSHALL",), ("DBSIZE",), ("TIME",),
    ("KEYS", "*"), ("SCAN", "0"), ("RANDOMKEY",), ("WAIT", "0", "0"),
]


def test_first_key_matches_command_getkeys(server):
    """redis-server knows every command's key positions: ask it."""
    conn = Conn(server)
    try:
        for case in KEY_CASES:
            conn.send(cmd("COMMAND", "GETKEYS", *case))
        frames = conn.wait_frames(len(KEY_CASES))
    finally:
        conn.close()
    reqs = decoder_for("redis").feed(b"".join(cmd(*case) for case in KEY_CASES))
    for case, frame, req in zip(KEY_CASES, frames, reqs):
        reader = hiredis.Reader()
        reader.feed(bytes(conn.received[frame.offset:frame.offset + frame.length]))
        keys = reader.gets()
        want = keys[0].decode() if isinstance(keys, list) and keys else None
        assert req.metadata.get("key") == want, (case, keys)


INLINE = [
    (b"SET plain 1\r\n", "plain"), (b'SET "with space" 1\r\n', "with space"),
    (b"SET 'single q' 1\r\n", "single q"), (b'SET "" 1\r\n', ""),
    (b"  SET\tspaced   2  \r\n", "spaced"),
]


def test_inline_keys_are_what_the_server_stored(server):
    conn = Conn(server)
    try:
        conn.send(cmd("FLUSHALL"))
        conn.wait_frames(1)
        for line, _ in INLINE:
            conn.send(line)
        conn.wait_frames(1 + len(INLINE))
        conn.send(cmd("KEYS", "*"))
        frames = conn.wait_frames(2 + len(INLINE))
    finally:
        conn.close()
    assert all(f.kind == "response" for f in frames)
    reader = hiredis.Reader()
    reader.feed(bytes(conn.received[frames[-1].offset:]))
    stored = sorted(k.decode() for k in reader.gets())
    ours = decoder_for("redis").feed(b"".join(line for line, _ in INLINE))
    assert [f.metadata["key"] for f in ours] == [k for _, k in INLINE]
    assert sorted(f.metadata["key"] for f in ours) == stored
