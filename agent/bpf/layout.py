"""The C layouts of bpf/lib/layout.h, parsed with cffi: one source of truth.

Keys and values are built and read through this FFI, so a field added to the
header is a field Python sees; tests check sizes and offsets against clang.
"""

import ipaddress
import socket

from cffi import FFI

from .sources import source_dir

_TYPES = """
typedef uint8_t __u8; typedef uint16_t __u16; typedef uint32_t __u32;
typedef uint64_t __u64; typedef int32_t __s32;
"""


def _cdef() -> str:
    text = (source_dir() / "lib" / "layout.h").read_text()
    start = text.index("/* cdef-begin */") + len("/* cdef-begin */")
    return text[start:text.index("/* cdef-end */")]


ffi = FFI()
ffi.cdef(_TYPES + _cdef())
C = ffi.dlopen(None)   # constants and enums only

MODES = {"local": C.NM_MODE_LOCAL, "remote": C.NM_MODE_REMOTE, "bypass": C.NM_MODE_BYPASS}
MODE_NAMES = {v: k for k, v in MODES.items()}
TARGETS = {C.NM_TARGET_ORIGINAL: "original", C.NM_TARGET_LOCAL: "local",
           C.NM_TARGET_REMOTE: "remote"}


def reasons() -> dict:
    """{code: name} of enum nm_reason, names without the NM_R_ prefix, lower case."""
    out = {}
    for name in dir(C):
        if name.startswith("NM_R_") and name != "NM_R_MAX":
            out[getattr(C, name)] = name[len("NM_R_"):].lower()
    return dict(sorted(out.items()))


def ip_to_be32(ip: str) -> int:
    """'198.18.0.1' -> the u32 whose memory is the address in network order."""
    packed = socket.inet_aton(str(ipaddress.IPv4Address(ip)))
    return int.from_bytes(packed, "little")


def be32_to_ip(value: int) -> str:
    return socket.inet_ntoa(int(value).to_bytes(4, "little"))


def ip6_to_words(ip: str) -> list:
    """'fd00::1' -> the four u32 whose memory is the address in network order."""
    packed = ipaddress.IPv6Address(ip).packed
    return [int.from_bytes(packed[i:i + 4], "little") for i in range(0, 16, 4)]


def words_to_ip6(words) -> str:
    """The inverse of ip6_to_words; IPv4-mapped addresses print as ::ffff:a.b.c.d."""
    addr = ipaddress.IPv6Address(b"".join(int(w).to_bytes(4, "little") for w in words))
    return f"::ffff:{addr.ipv4_mapped}" if addr.ipv4_mapped else str(addr)


def words_are_zero(words) -> bool:
    return not any(int(w) for w in words)


def port_to_be16(port: int) -> int:
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"port {port} out of range")
    return socket.htons(int(port))


def be16_to_port(value: int) -> int:
    return socket.ntohs(int(value))


def new(ctype: str, **fields):
    obj = ffi.new(ctype + " *")
    for k, v in fields.items():
        setattr(obj, k, v)
    return obj


def as_dict(cdata) -> dict:
    return {name: getattr(cdata, name) for name, _ in ffi.typeof(cdata[0]).fields}
