"""cffi build of the C codecs into ``agent.codec._native`` (API mode, out of line).

The cdef is the part of ``codec.h`` between its cdef markers: one source of
truth for the C and the Python side. ``NODEMESH_SANITIZE=1`` builds with
AddressSanitizer and UBSan (the tests' sanitizer run sets it).
"""

import os
import pathlib

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
SOURCES = [
    "codec.c",
    "dubbo.c", "hessian2.c",
    "thrift.c", "thrift_protocol.c", "thrift_reply.c",
    "redis.c", "redis_reply.c", "redis_request.c",
    "http1.c", "http1_lines.c", "http1_chunked.c", "http1_reply.c",
    "lengthfield.c", "lengthfield_reply.c",
]


def cdef_text() -> str:
    header = (HERE / "codec.h").read_text()
    start = header.index("/* cdef-begin */") + len("/* cdef-begin */")
    return header[start : header.index("/* cdef-end */")]


def compile_args() -> list:
    args = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fvisibility=hidden"]
    if os.environ.get("NODEMESH_SANITIZE") == "1":
        args = ["-O1", "-g", "-std=c11", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                "-fno-sanitize-recover=undefined"]
    return args


ffibuilder = FFI()
ffibuilder.cdef(cdef_text())
ffibuilder.set_source(
    "agent.codec._native",
    '#include "codec.h"',
    sources=[str((HERE / s).relative_to(HERE.parent)) for s in SOURCES],
    include_dirs=[str(HERE.relative_to(HERE.parent))],
    extra_compile_args=compile_args(),
    extra_link_args=["-fsanitize=address,undefined"] if os.environ.get("NODEMESH_SANITIZE") == "1" else [],
)

if __name__ == "__main__":
    os.chdir(HERE.parent)
    ffibuilder.compile(verbose=False)
