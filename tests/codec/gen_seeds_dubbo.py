"""Write native/fuzz/corpus/dubbo/: small frames of every kind and variant,
and a few malformed ones, from the test vectors. Run from the repo root:
python -m tests.codec.gen_seeds_dubbo"""

import pathlib

from tests.codec.dubbo_wire import (EVENT, HESSIAN2, REQ, TWOWAY, body, header, int_, request,
                                    str_attachments, string)
from tests.codec.test_dubbo import ARGS, ATTACH, MALFORMED

OUT = pathlib.Path(__file__).resolve().parents[2] / "native" / "fuzz" / "corpus" / "dubbo"


def seeds():
    yield "request", request(body(desc="Ljava/lang/String;I", args=[string("w"), int_(7)],
                                  attach=str_attachments(ATTACH)))
    yield "oneway", request(body(), twoway=False)
    yield "response_ok", header(HESSIAN2, 20, 1, b"\x91" + string("hi"))
    yield "response_error", header(HESSIAN2, 70, 1, string("boom"))
    yield "heartbeat_request", header(REQ | TWOWAY | EVENT | HESSIAN2, 0, 2, b"N")
    yield "heartbeat_response", header(EVENT | HESSIAN2, 20, 2, b"N")
    yield "readonly_event", header(REQ | EVENT | HESSIAN2, 0, 3, string("R"))
    yield "kryo_request", request(b"\x01\x05hello", ser=8)
    yield "envoy_style_short_body", request(string("2.0.2") + string("t") + string("0")
                                            + string("t"))
    yield "pipelined", request(body()) + header(HESSIAN2, 20, 1, b"N") + request(body(), rid=2)
    for name in sorted(ARGS):
        if len(ARGS[name]) > 4096:      # seeds stay small
            continue
        yield f"args_{name}", request(body(desc="[Ljava/lang/Object;",
                                           args=[b"\x57" + ARGS[name] + b"Z"]))
    for name in ("unknown tag", "undefined ref", "split surrogate pair", "bad descriptor",
                 "list longer than body", "undefined class"):
        yield "bad_" + name.replace(" ", "_"), MALFORMED[name]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for name, data in seeds():
        (OUT / name).write_bytes(data)


if __name__ == "__main__":
    main()
