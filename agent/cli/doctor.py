"""`nodemesh doctor`: can this node run the datapath, and what falls back if not.

Each check is {"name", "status": ok|warn|fail, "detail", "fallback"}; a fail
means the datapath cannot run (exit 5), a warn that it runs with a fallback.
"""

import os
import platform
import re

from agent.bpf import host, libbpf

from . import agent_link, cgroups, options, output, pins, privileges
from .doctor_programs import FALLBACK, REQUIRED, check_programs

EPILOG = """examples:
  nodemesh doctor
  nodemesh doctor -o json | jq '.checks[] | select(.status != "ok")'
  nodemesh doctor --cgroup-root /sys/fs/cgroup/kubepods.slice
  BCC_KERNEL_SOURCE=/usr/src/linux-headers-6.1.0-56-amd64 nodemesh doctor
"""
OUR_ATTACH = ("sock_ops", "connect4", "getpeername4")
OWNERS = [  # program name pattern -> who loaded it
    (re.compile(r"^cil_|^cilium"), "Cilium"),
    (re.compile(r"^mb_"), "Merbridge"),
    (re.compile(r"^sd_"), "systemd"),
    (re.compile(r"kmesh", re.I), "Kmesh"),
    (re.compile(r"^calico", re.I), "Calico"),
    (re.compile(r"istio|ztunnel", re.I), "Istio"),
    (re.compile(r"^(connect4|sockops|getpeername4|sk_msg)$"), "nodemesh"),
]
MIN_KERNEL = (5, 7)      # bpf links for cgroup programs
GOOD_KERNEL = (5, 8)     # cgroup/getpeername4


def check(name, status, detail, fallback=""):
    return {"name": name, "status": status, "detail": detail, "fallback": fallback}


def register(sub, common):
    d = sub.add_parser("doctor", parents=[common], help="check that this node can run the datapath",
                       formatter_class=options.formatter, epilog=EPILOG)
    d.add_argument("--cgroup-root", metavar="PATH",
                   help="the cgroup the datapath attaches to (default: the v2 mount)")
    d.set_defaults(func=cmd_doctor)


# -- the checks ---------------------------------------------------------------------

def kernel_check():
    release = platform.release()
    nums = tuple(int(x) for x in re.findall(r"\d+", release)[:2])
    if nums < MIN_KERNEL:
        return check("kernel", "fail", f"{release}: bpf links for cgroups need >= 5.7",
                     "datapath down, traffic untouched (fail open)")
    if nums < GOOD_KERNEL:
        return check("kernel", "warn", f"{release}: no cgroup/getpeername4 before 5.8",
                     FALLBACK["getpeername4"])
    return check("kernel", "ok", release)


def btf_check():
    if os.path.exists("/sys/kernel/btf/vmlinux"):
        return check("btf", "ok", "/sys/kernel/btf/vmlinux")
    return check("btf", "warn", "no /sys/kernel/btf/vmlinux",
                 "bcc compiles against kernel headers only; bpftool shows less")


def cgroup2_check(root):
    mnt = host.cgroup2_mount()
    if not mnt:
        return check("cgroup2", "warn", "cgroup v2 not mounted",
                     "`datapath up` mounts it at /run/nodemesh/cgroup2")
    hybrid = any(m[2] == "cgroup" for m in host.mounts())
    detail = f"mounted at {mnt}" + (" (hybrid host)" if hybrid else "")
    if root and not os.path.isfile(os.path.join(root, "cgroup.procs")):
        return check("cgroup2", "fail", f"{detail}; managed root {root} is not a cgroup v2 dir",
                     "create it or pass another --cgroup-root")
    return check("cgroup2", "ok", detail + (f"; managed root {root}" if root else ""))


def bpffs_check():
    if host.bpffs_mounted(host.BPFFS):
        return check("bpffs", "ok", f"mounted at {host.BPFFS}")
    return check("bpffs", "warn", f"not mounted at {host.BPFFS}",
                 f"`datapath up` mounts it at {host.BPFFS}")


def capabilities_check():
    caps = privileges.capabilities()
    held = [c for c in privileges.CAPS if caps[c]]
    detail = f"root: {'yes' if caps['root'] else 'no'}; effective: {' '.join(held) or 'none'}"
    gone = [c for c in privileges.NEEDED if not caps[c]]
    if gone:
        return check("capabilities", "fail", f"{detail}; missing {' '.join(gone)}",
                     "cannot load: run as root")
    if not caps["CAP_PERFMON"]:
        return check("capabilities", "warn", detail + "; no CAP_PERFMON",
                     "tracing may be refused by the verifier")
    return check("capabilities", "ok", detail)


def headers_check():
    h = host.find_kernel_headers()
    down = "cannot load: datapath down, traffic untouched (fail open)"
    if h.how == "missing":
        return check("kernel-headers", "fail", h.note, down)
    if h.how == "BCC_KERNEL_SOURCE" and not os.path.isdir(os.path.join(h.path, "include")):
        return check("kernel-headers", "fail",
                     f"BCC_KERNEL_SOURCE={h.path} has no include/ (not kernel headers)",
                     down + "; unset BCC_KERNEL_SOURCE or point it at headers")
    detail = f"{h.path} ({h.how})" + (f": {h.note}" if h.note else "")
    built_for = re.search(r"linux-headers-(\d+\.\d+)", os.path.realpath(h.path))
    running = ".".join(platform.release().split(".")[:2])
    if built_for and built_for.group(1) != running:
        detail += (f"; headers of {built_for.group(1)} for kernel {running}: the programs use "
                   "stable uapi only, the load below proves it")
    return check("kernel-headers", "ok", detail)


def bcc_check():
    try:
        from agent.bpf.bcc_import import import_bcc

        bcc = import_bcc()
    except ImportError as exc:
        return check("bcc", "fail", str(exc), "cannot load: datapath down (fail open)")
    version = getattr(bcc, "__version__", "unknown version")
    return check("bcc", "ok", f"{version} ({os.path.dirname(bcc.__file__)})")


def libbpf_check():
    try:
        libbpf.lib()
    except OSError as exc:
        return check("libbpf", "fail", str(exc),
                     "cannot pin, adopt or read maps: datapath down (fail open)")
    return check("libbpf", "ok", "libbpf.so.1 loaded")


def program_checks(blocked: str):
    """One check per program, from a real load (skipped when blocked)."""
    from agent.bpf.sources import PROGRAMS

    names = tuple(PROGRAMS)
    if blocked:
        return [check(f"program/{n}", "fail", f"not tried: {blocked}",
                      FALLBACK.get(n, "")) for n in names]
    results = check_programs()
    out = []
    for name, reason in results.items():
        if reason is None:
            out.append(check(f"program/{name}", "ok", "loaded and verified"))
        else:
            out.append(check(f"program/{name}", "fail" if name in REQUIRED else "warn",
                             reason, FALLBACK.get(name, "")))
    return out


def owner(name) -> str:
    for pattern, who in OWNERS:
        if name and pattern.search(name):
            return who
    return "unknown"


def neighbours_check(root, our_ids):
    """Other cgroup programs on the managed root and its ancestors."""
    chain = cgroups.ancestors(root)
    others, blocking, overridden = [], [], []
    for depth, cg in enumerate(chain):
        for a in cgroups.attached_to(cg):
            if a["prog_id"] in our_ids:
                continue
            who = owner(a["name"])
            others.append(f"{who} {a['name']} ({a['attach_type']}, {a['attach_flags']}) on {cg}")
            if a["attach_type"] not in OUR_ATTACH or a["attach_flags"] == "multi":
                continue
            if depth == 0 or a["attach_flags"] == "exclusive":
                blocking.append(f"{who} {a['name']} ({a['attach_type']}, {a['attach_flags']})"
                                f" on {cg}")
            else:
                overridden.append(f"{who} {a['name']} on {cg}")
    below = cgroups.bpftool_tree(root)
    below_n = len([b for b in below or [] if b["cgroup"] != root and b["prog_id"] not in our_ids])
    tail = f"; {below_n} programs below the root (bpftool)" if below is not None else ""
    if blocking:
        return check("cgroup-programs", "fail",
                     "exclusive program will make our attach fail with EPERM: "
                     + "; ".join(blocking),
                     "datapath cannot attach: traffic untouched (fail open); detach it or "
                     "pick a --cgroup-root outside its subtree")
    if overridden:
        return check("cgroup-programs", "warn",
                     "override programs, ours will replace them below the root: "
                     + "; ".join(overridden) + tail)
    if others:
        return check("cgroup-programs", "ok",
                     f"{len(others)} others, all multi: " + "; ".join(others) + tail)
    return check("cgroup-programs", "ok", f"none on {root} or its ancestors{tail}")


def agent_check(run_dir):
    sock = agent_link.admin_socket(run_dir)
    if agent_link.agent_running(run_dir):
        return check("agent", "ok", f"running ({sock}): its configuration wins")
    return check("agent", "ok", f"not running (no live {sock}): CLI writes the maps")


def run_checks(args) -> list:
    s = options.settings(args)
    root = s.cgroup_root or host.cgroup2_mount()
    checks = [kernel_check(), btf_check(), cgroup2_check(s.cgroup_root), bpffs_check(),
              capabilities_check(), headers_check(), bcc_check(), libbpf_check()]
    by = {c["name"]: c for c in checks}
    blocked = next((f"{n} failed" for n in ("capabilities", "kernel-headers", "bcc", "libbpf")
                    if by[n]["status"] == "fail"), "")
    checks += program_checks(blocked)
    if root and by["libbpf"]["status"] == "ok" and by["capabilities"]["status"] == "ok":
        checks.append(neighbours_check(root, pins.our_prog_ids(s.pin_dir)))
    checks.append(agent_check(s.run_dir))
    return checks


def cmd_doctor(args) -> int:
    checks = run_checks(args)
    data = {"ok": all(c["status"] != "fail" for c in checks), "checks": checks}
    output.emit(data, args.output, lambda wide: render(data, wide))
    return 0 if data["ok"] else 5


def render(data, wide=False, limit=output.WIDTH) -> str:
    lines = []
    for c in data["checks"]:
        mark = output.paint(f"{c['status']:<4}", c["status"])
        lines += _wrap(f"{mark} {c['name']:<20} ", c["detail"], wide, limit)
        if c["fallback"]:
            lines += _wrap(" " * 26, "-> " + c["fallback"], wide, limit)
    verdict = ("this node can run the datapath" if data["ok"] else
               "this node cannot run the datapath (traffic stays untouched)")
    lines.append(verdict)
    return "\n".join(lines)


def _wrap(prefix, text, wide, limit):
    """prefix + text, continued under the text so every line fits."""
    import textwrap

    visible = len(re.sub(r"\033\[[0-9;]*m", "", prefix))
    if wide:
        return [prefix + text]
    body = textwrap.wrap(text, limit - visible) or [""]
    return [prefix + body[0]] + [" " * visible + b for b in body[1:]]
