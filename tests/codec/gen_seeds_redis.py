"""Write the Redis fuzz seeds (native/fuzz/corpus/redis/) from the test vectors.

Each seed is the generic libFuzzer target's input (native/fuzz/fuzz_codec.c):
a 32-byte options prefix (byte 0 flags: 1 reply direction, 2 RESP3 off;
bytes 3-4 a big-endian split point; the rest zero) and the stream bytes.
Valid frames of every kind and variant, plus a few malformed ones. Run from
the repo root:
    python tests/codec/gen_seeds_redis.py
"""

import hashlib
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.codec.test_redis import BAD_REPLIES, BAD_REQUESTS, REPLIES, REQUESTS  # noqa: E402

OUT = ROOT / "native" / "fuzz" / "corpus" / "redis"


REQUEST, REPLY, NO_RESP3 = 0, 1, 2


def seeds():
    for _, data, _ in REQUESTS[::2]:
        yield REQUEST, data
    for _, data, _ in REPLIES[1::2]:
        yield REPLY, data
    yield REPLY | NO_RESP3, b"*2\r\n$3\r\nfoo\r\n*1\r\n:1\r\n-ERR x\r\n"
    for data, _ in BAD_REPLIES[::10]:
        yield REPLY, data
    for data, _ in BAD_REQUESTS[::5]:
        yield REQUEST, data


def prefix(flags, data):
    head = bytearray(32)
    head[0] = flags
    head[3:5] = (len(data) // 2).to_bytes(2, "big")
    return bytes(head)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("seed-*"):
        old.unlink()
    written = 0
    for flags, data in seeds():
        blob = prefix(flags, data) + data
        (OUT / f"seed-{hashlib.sha1(blob).hexdigest()[:12]}").write_bytes(blob)
        written += 1
    print(f"{written} seeds in {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
