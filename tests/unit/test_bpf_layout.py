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
            "nm_addr_key", "nm_sock_key", "nm_trace_event"} <= set(STRUCTS)


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
    assert r[15] == "msg_redirected" and r[20] == "closed"


def test_address_helpers_round_trip():
    assert layout.be32_to_ip(layout.ip_to_be32("198.18.0.1")) == "198.18.0.1"
    assert layout.be16_to_port(layout.port_to_be16(15001)) == 15001
    with pytest.raises(ValueError):
        layout.port_to_be16(70000)
