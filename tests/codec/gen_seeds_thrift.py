"""Write the Thrift fuzz seeds to native/fuzz/corpus/thrift/.

Valid messages of every type in every protocol and transport (written by
the `thrift` package through the test builders), a pipelined pair, and a
few malformed inputs from the test's error table. Deterministic: running it
again rewrites the same files.

    PYTHONPATH=. python tests/codec/gen_seeds_thrift.py
"""

import pathlib

from tests.codec.test_thrift import EMPTY, ERRORS, VARIANTS, every_type, exception_body, message

OUT = pathlib.Path(__file__).resolve().parents[2] / "native" / "fuzz" / "corpus" / "thrift"

MALFORMED = ("theader", "frame-1gib", "string-1gib", "field-type-17", "too-deep",
             "frame-shorter-than-message", "compact-long-varint", "compact-map-1g")


def seeds() -> dict:
    out = {}
    for proto, framed in VARIANTS:
        tag = f"{proto}-{'framed' if framed else 'unframed'}"
        out[f"{tag}-call"] = message(proto, framed, "getUser", 1, 7, every_type)
        out[f"{tag}-reply"] = message(proto, framed, "getUser", 2, 7, EMPTY)
        out[f"{tag}-exception"] = message(proto, framed, "getUser", 3, 7, exception_body("boom"))
        out[f"{tag}-oneway"] = message(proto, framed, "log", 4, 300, EMPTY)
    out["binary-unframed-pipelined"] = (message("binary", False, "a", 1, 1, EMPTY)
                                        + message("binary", False, "b", 1, 2, every_type))
    by_name = {name: data for name, data, _opts, _exc in ERRORS}
    for name in MALFORMED:
        out[f"bad-{name}"] = by_name[name]
    return out


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.bin"):
        old.unlink()
    all_seeds = seeds()
    for name, data in sorted(all_seeds.items()):
        (OUT / f"{name}.bin").write_bytes(data)
    print(f"wrote {len(all_seeds)} seeds to {OUT}")


if __name__ == "__main__":
    main()
