"""Write the HTTP/1.1 fuzz seeds (native/fuzz/corpus/http1/) from the test vectors.

    python tests/codec/gen_seeds_http1.py

Raw stream bytes, one message stream per file: req-* for the request
direction, resp-* for responses, bad-* for malformed inputs (the fuzz
harness adds its own options prefix and tries both directions).
"""

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.codec.test_http1 import REQUESTS, RESPONSES  # noqa: E402
from tests.codec.test_http1_errors import ERRORS  # noqa: E402

OUT = ROOT / "native" / "fuzz" / "corpus" / "http1"
BAD = {"te-and-cl", "cl-differ", "te-not-final-chunked", "obs-fold", "bare-lf",
       "space-before-colon", "chunk-ext-unbalanced-quote", "chunk-data-no-crlf"}
SIMILAR = {"empty-value", "http10", "cl-zero-leading", "te-split-over-headers",
           "uppercase-hex-chunk", "identical-cl-repeated"}   # covered by other seeds
EXTRA = {
    "req-upgrade-websocket.bin": b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                                 b"Connection: Upgrade\r\n\r\n\x81\x05hello",
    "resp-101-switch.bin": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x00",
    "resp-until-close.bin": b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nbody runs to close",
    "resp-chunked-trailers.bin": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 b"4;x=1\r\nwiki\r\n0\r\nExpires: never\r\n\r\n",
}


def seeds():
    for name, data, options, _ in REQUESTS:
        if name not in SIMILAR:
            yield f"req-{name}.bin", data
    for name, data, options, _ in RESPONSES:
        yield f"resp-{name}.bin", data
    for name, data, options, _ in ERRORS:
        if name in BAD:
            yield f"bad-{name}.bin", data
    yield from EXTRA.items()


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.bin"):
        old.unlink()
    n = 0
    for name, data in seeds():
        (OUT / name).write_bytes(data)
        n += 1
    print(f"{n} seeds in {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
