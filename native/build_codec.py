"""Build of the C codecs: ``agent.codec._native`` (cffi, API mode, out of
line) and ``agent.codec._frames`` (a CPython extension that turns
nm_decode()'s arrays into Frame objects; it calls the codecs through the cffi
module, so they exist once in the process).

The cdef is the part of ``codec.h`` between its cdef markers: one source of
truth for the C and the Python side. ``NODEMESH_SANITIZE=1`` builds both with
AddressSanitizer and UBSan (the tests' sanitizer run sets it).

    python native/build_codec.py      # both, in place (agent/codec/)
"""

import os
import pathlib
import tempfile

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


FRAMES_SOURCES = ["frames.c", "frames_meta.c", "frames_reader.c", "frames_mux.c",
                  "frames_claim.c", "frames_replies.c", "frames_ids.c", "mux.c"]
ORDERED_SOURCES = ["ordered.c", "ordered_send.c", "ordered_reply.c", "ordered_read.c"]


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


def link_args() -> list:
    return ["-fsanitize=address,undefined"] if os.environ.get("NODEMESH_SANITIZE") == "1" else []


def frames_extension():
    """The setuptools Extension for agent.codec._frames (paths from the repository root)."""
    from setuptools import Extension

    return Extension("agent.codec._frames",
                     sources=[f"native/{s}" for s in FRAMES_SOURCES],
                     depends=["native/frames.h", "native/frames_batch.h", "native/codec.h",
                              "native/mux.h"],
                     include_dirs=["native"],
                     extra_compile_args=compile_args(), extra_link_args=link_args())


def ordered_extension():
    """The setuptools Extension for agent.proxy._ordered, the ordered lean path (a CPython
    extension with no codec inside: it works on the proxy's objects)."""
    from setuptools import Extension

    return Extension("agent.proxy._ordered",
                     sources=[f"native/{s}" for s in ORDERED_SOURCES],
                     depends=["native/ordered.h", "native/ordered_internal.h"],
                     include_dirs=["native"],
                     extra_compile_args=compile_args(), extra_link_args=link_args())


def build_frames_inplace():
    """Build agent/codec/_frames*.so next to the cffi module, and agent/proxy/_ordered*.so
    (cwd: repository root)."""
    from setuptools import Distribution
    from setuptools.command.build_ext import build_ext

    dist = Distribution({"name": "nodemesh-frames",
                         "ext_modules": [frames_extension(), ordered_extension()]})
    cmd = build_ext(dist)
    cmd.inplace = True
    with tempfile.TemporaryDirectory() as tmp:
        cmd.build_temp = cmd.build_lib = tmp     # nothing left in build/
        cmd.ensure_finalized()
        cmd.force = True
        cmd.run()


ffibuilder = FFI()
ffibuilder.cdef(cdef_text())
ffibuilder.set_source(
    "agent.codec._native",
    '#include "codec.h"',
    sources=[str((HERE / s).relative_to(HERE.parent)) for s in SOURCES],
    include_dirs=[str(HERE.relative_to(HERE.parent))],
    extra_compile_args=compile_args(),
    extra_link_args=link_args(),
)

if __name__ == "__main__":
    os.chdir(HERE.parent)
    ffibuilder.compile(verbose=False)
    build_frames_inplace()
