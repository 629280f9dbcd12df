"""One source of truth: Python's view of bpf/lib/layout.h equals the C compiler's."""

import re
import shutil
import subprocess

import pytest

from agent.bpf import layout
from agent.bpf.sources import source_dir

STRUCTS = [name for name in re.findall(r"^struct (nm_\w+) \{",
                                       (source_dir() / "lib/layout.h").read_text(), re.M)]


def test_every_struct_is_known():
    assert {"nm_service_key", "nm_service", "nm_proxy_config", "nm_pod", "nm_orig_dst",
            "nm_addr_key", "nm_sock_key", "nm_trace_event", "nm_service6_key",
            "nm_addr6_key", "nm_sock6_key"} <= set(STRUCTS)


def test_values_only_grow_at_their_end():
    # maps pinned by an older version are upgraded by copying each value as a
    # prefix (agent/bpf/upgrade.py): the fields of the first IPv4-only layout
    # must keep their offsets
    first = {"nm_proxy_config": {"local_ip": 0, "remote_ip": 4, "local_port": 8, "spill": 10,
                                 "mode": 12, "flags": 13, "generation": 16},
             "nm_orig_dst": {"cgroup_id": 0, "ip": 8, "service_id": 12, "port": 16,
                             "target": 18}}
    for struct, fields in first.items():
        for field, offset in fields.items():
            assert layout.ffi.offsetof(f"struct {struct}", field) == offset, (struct, field)
    # the accept records' server sequence number came after the IPv6 layout (40 bytes)
    assert layout.ffi.offsetof("struct nm_orig_dst", "ip6") == 24
    assert layout.ffi.offsetof("struct nm_orig_dst", "server_seq") == 40
    assert layout.ffi.sizeof("struct nm_orig_dst") == 48


@pytest.mark.skipif(not shutil.which("cc"), reason="no C compiler")
def test_sizes_and_offsets_match_the_compiler(tmp_path):
    lines = []
    for s in STRUCTS:
        ctype = layout.ffi.typeof(f"struct {s}")
        lines.append(f'printf("{s} %zu\\n", sizeof(struct {s}));')
        for field, _ in ctype.fields:
            lines.append(f'printf("{s}.{field} %zu\\n", offsetof(struct {s}, {field}));')
    src = tmp_path / "layout.c"
    src.write_text(
        "#include <stdio.h>\n#include <stddef.h>\n#include <stdint.h>\n"
        "typedef uint8_t __u8; typedef uint16_t __u16; typedef uint32_t __u32;\n"
        "typedef uint64_t __u64; typedef int32_t __s32;\n"
        f'#include "{source_dir() / "lib/layout.h"}"\n'
        "int main(void) {\n" + "\n".join(lines) + "\nreturn 0; }\n")
    subprocess.run(["cc", "-o", str(tmp_path / "layout"), str(src)], check=True)
    out = subprocess.run([str(tmp_path / "layout")], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        name, value = line.split()
        if "." in name:
            s, field = name.split(".")
            assert layout.ffi.offsetof(f"struct {s}", field) == int(value), name
        else:
            assert layout.ffi.sizeof(f"struct {name}") == int(value), name


def test_reason_codes_are_stable():
    # append-only: dashboards and the CLI key on these numbers
    r = layout.reasons()
    assert r[0] == "not_service" and r[2] == "local" and r[9] == "failopen_map_full"
    assert r[15] == "msg_redirected" and r[20] == "closed" and r[21] == "record_stale"
    assert layout.C.NM_R_MAX >= len(r)


def test_address_helpers_round_trip():
    assert layout.be32_to_ip(layout.ip_to_be32("198.18.0.1")) == "198.18.0.1"
    assert layout.words_to_ip6(layout.ip6_to_words("fd00:6e6d::1")) == "fd00:6e6d::1"
    assert layout.words_to_ip6(layout.ip6_to_words("::ffff:198.18.0.1")) == "::ffff:198.18.0.1"
    # network order in memory, as the kernel hands addresses over
    words = layout.ip6_to_words("fd00::ffff:1")
    assert bytes(layout.ffi.buffer(layout.ffi.new("__u32[4]", words))) == \
        bytes.fromhex("fd00 0000 0000 0000 0000 0000 ffff 0001")
    assert layout.be16_to_port(layout.port_to_be16(15001)) == 15001
    with pytest.raises(ValueError):
        layout.port_to_be16(70000)
