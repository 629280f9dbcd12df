"""Write the length-field fuzz seeds: native/fuzz/corpus/lengthfield/LAYOUT-NAME.bin.

Raw stream bytes; native/fuzz/seeds.py prefixes each with the options of
LAYOUT (tests/codec/test_lengthfield_layouts.LAYOUTS). Run from the repo root:
    python tests/codec/gen_seeds_lengthfield.py
"""

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.codec.test_lengthfield_layouts import LAYOUTS, encode  # noqa: E402

OUT = ROOT / "native" / "fuzz" / "corpus" / "lengthfield"


def seeds():
    kinds = {"trpc": [0, 1, 2, 4], "bolt": [0, 0x10, 0x20, 0x40], "kv": [0, 0x80], "len1": [0, 0x80]}
    for name, cfg in LAYOUTS.items():
        msgs = [encode(cfg, request_id=i + 1, kind=k, body=b"body%d" % i,
                       fields={"interface": b"com.acme.Svc", "method": b"Get", "status": 0,
                               "timeout": 1000, "cmdcode": 1, "pb_header_len": 2},
                       kv=[("trace", "t1"), ("env", "prod")])
                for i, k in enumerate(kinds.get(name, [0]))]
        yield name, "frames", b"".join(msgs)
        yield name, "split", msgs[0][: len(msgs[0]) // 2]
        yield name, "malformed", msgs[0][:2] + b"\xff" * 10
    yield "kv", "kv-bad-pair", encode(LAYOUTS["kv"], kv=[("a", "b")]).replace(b"a=b", b"a-b")
    yield "trpc", "huge-length", bytes.fromhex("0930000040000000") + bytes(8)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.bin"):
        old.unlink()
    n = 0
    for layout, what, data in seeds():
        (OUT / f"{layout}-{what}.bin").write_bytes(data)
        n += 1
    print(f"{n} seeds in {OUT}")


if __name__ == "__main__":
    main()
