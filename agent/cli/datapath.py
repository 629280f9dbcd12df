"""`nodemesh datapath up|status|source|set` and `nodemesh uninstall`."""

import os
import textwrap
import time

from agent.bpf.datapath import Control
from agent.bpf.loader import CGROUP_PROGRAMS, Datapath
from agent.bpf.sources import PROGRAMS

from . import access, agent_link, options, output, pins
from .cgroups import CgroupIndex
from .errors import CLIError, not_up

EPILOG_UP = """examples:
  nodemesh datapath up
  nodemesh datapath up --cgroup-root /sys/fs/cgroup/kubepods.slice
  nodemesh datapath up --reload -D NM_MAX_CONNS=65536
  NODEMESH_PIN_DIR=/sys/fs/bpf/nm-test nodemesh datapath up -o json
"""
EPILOG_STATUS = """examples:
  nodemesh datapath status
  nodemesh datapath status -o json | jq .programs
"""
EPILOG_SOURCE = """examples:
  nodemesh datapath source > /tmp/nodemesh.bpf.c
  nodemesh datapath source --cflags-only
  nodemesh datapath source -D NM_MAX_PODS=4096 -o json
"""
EPILOG_SET = """examples:
  nodemesh datapath set --local-proxy 127.0.0.1:15001 --mode local
  nodemesh datapath set --remote-proxy 198.18.0.50 --spill 10
  nodemesh datapath set --local-proxy 127.0.0.1:15001,[fd00::1]:15001
  nodemesh datapath set --mode bypass
  nodemesh datapath set --trace on
"""
EPILOG_UNINSTALL = """examples:
  nodemesh uninstall
  nodemesh uninstall --pin-dir /sys/fs/bpf/nm-test -o json
"""


def register(sub, common):
    dp = sub.add_parser("datapath", help="load, inspect and configure the eBPF datapath",
                        formatter_class=options.formatter,
                        epilog="examples:\n  nodemesh datapath up\n  nodemesh datapath status\n")
    dsub = dp.add_subparsers(dest="datapath_cmd", metavar="COMMAND", required=True)

    up = dsub.add_parser("up", parents=[common], help="load, attach and pin (or adopt)",
                         formatter_class=options.formatter, epilog=EPILOG_UP)
    up.add_argument("--reload", action="store_true",
                    help="recompile and swap the programs under the pinned links")
    up.add_argument("--cgroup-root", metavar="PATH",
                    help="cgroup v2 dir to attach to (env NODEMESH_CGROUP_ROOT; "
                         "default: the v2 mount)")
    _defines(up)
    up.set_defaults(func=cmd_up)

    st = dsub.add_parser("status", parents=[common], help="pins, programs, attach points, proxy",
                         formatter_class=options.formatter, epilog=EPILOG_STATUS)
    st.set_defaults(func=cmd_status)

    src = dsub.add_parser("source", parents=[common],
                          help="the exact source and cflags loaded (or to be)",
                          formatter_class=options.formatter, epilog=EPILOG_SOURCE)
    src.add_argument("--cflags-only", action="store_true", help="print only the flags")
    _defines(src)
    src.set_defaults(func=cmd_source)

    s = dsub.add_parser("set", parents=[common, options.force()],
                        help="proxy addresses, mode, spill share, tracing",
                        formatter_class=options.formatter, epilog=EPILOG_SET)
    s.add_argument("--local-proxy", metavar="HOST:PORT", type=_local_proxy,
                   help="the node proxy's listener: IP:PORT, [IPv6]:PORT or one of each "
                        "with one port, comma-separated ('' clears)")
    s.add_argument("--remote-proxy", metavar="HOST", type=_remote_proxy,
                   help="the remote proxy pool's address: IPv4, IPv6 or both "
                        "comma-separated ('' clears)")
    s.add_argument("--mode", choices=("local", "remote", "bypass"))
    s.add_argument("--spill", metavar="PERCENT", type=options.percent,
                   help="share of new connections sent remote in local mode")
    s.add_argument("--trace", metavar="on|off", type=options.on_off,
                   help="emit every connect decision to the trace ring buffer")
    s.set_defaults(func=cmd_set)

    un = sub.add_parser("uninstall", parents=[common, options.force()],
                        help="detach and unpin everything, then verify",
                        formatter_class=options.formatter, epilog=EPILOG_UNINSTALL)
    un.set_defaults(func=cmd_uninstall)


def _defines(p):
    p.add_argument("-D", dest="defines", metavar="NAME=VALUE", action="append",
                   type=options.define, default=[],
                   help="compile flag, see bpf/lib/config.h (repeatable)")


def _local_proxy(text):
    return "" if text == "" else options.hostports(text)


def _remote_proxy(text):
    return "" if text == "" else options.addresses(text)


# -- up -------------------------------------------------------------------------

def cmd_up(args) -> int:
    dp = access.datapath(args, require_up=False, defines=dict(args.defines))
    root = dp.s.cgroup_root
    if root and not os.path.isfile(os.path.join(root, "cgroup.procs")):
        raise CLIError(f"{root} is not a cgroup v2 directory",
                       "create it (mkdir under the cgroup2 mount) or pass another --cgroup-root")
    try:
        result = dp.up(reload=args.reload)
    except OSError as exc:
        raise _attach_error(exc, dp) from None
    result["pin_dir"] = dp.s.pin_dir
    output.emit(result, args.output, lambda wide: _up_text(result))
    return 0


def _attach_error(exc, dp):
    import errno

    from .errors import from_exception

    if exc.errno == errno.EPERM and os.geteuid() == 0:
        return CLIError(f"attach refused ({exc})",
                        "an exclusive cgroup program is in the way, see `nodemesh doctor`; "
                        "then `nodemesh uninstall` the partial pins", 5)
    err = from_exception(exc)
    if err is None:
        raise exc
    return err


def _up_text(r) -> str:
    verb = {"adopted": "adopted the pinned", "loaded": "loaded", "reloaded": "reloaded"}
    text = [f"{verb.get(r.get('action'), r.get('action'))} datapath",
            f"  pins:     {r.get('pin_dir')}",
            f"  cgroup:   {r.get('cgroup_root', '?')}",
            f"  source:   {r.get('source_digest', '?')}"]
    return "\n".join(text)


# -- status -----------------------------------------------------------------------

def status_data(dp: Datapath) -> dict:
    present = dp.pinned()
    cgroups = CgroupIndex()
    programs, links = [], []
    for name in PROGRAMS:
        programs.append({"name": name, **pins.prog_info(dp.pins / "progs" / name)})
    for name in CGROUP_PROGRAMS:
        info = pins.link_info(dp.pins / "links" / name)
        info["cgroup"] = cgroups.path(info["cgroup_id"]) if info["cgroup_id"] else None
        links.append({"name": name, **info})
    state = dp.state()
    proxy = None
    if present.get("map/proxy"):
        c = Control(dp.s)
        try:
            proxy = c.proxy()
        finally:
            c.close()
    digest = state.get("source_digest")
    sk_msg = next(p for p in programs if p["name"] == "sk_msg")
    return {
        "up": all(present.values()),
        "pin_dir": dp.s.pin_dir,
        "pins": present,
        "programs": programs,
        "links": links,
        "sk_msg_attached": pins.sk_msg_attached(dp.pins, sk_msg["id"]),
        "proxy": proxy,
        "source": {
            "digest": digest,
            "cflags": state.get("cflags"),
            "loaded_at": state.get("loaded_at"),
            "current_digest": dp.source_digest(),
            "stale": bool(digest) and digest != dp.source_digest(),
        },
        "cgroup_root": state.get("cgroup_root"),
    }


def cmd_status(args) -> int:
    dp = access.datapath(args, require_up=False)
    data = status_data(dp)
    if not any(data["pins"].values()):
        raise not_up(dp.s.pin_dir)
    output.emit(data, args.output, lambda wide: _status_text(data, wide))
    return 0 if data["up"] else 3


def _status_text(d, wide) -> str:
    missing = [k for k, v in d["pins"].items() if not v]
    src = d["source"]
    loaded = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(src["loaded_at"]))
              if src["loaded_at"] else None)
    head = [("datapath", "up" if d["up"] else "partial: missing " + ", ".join(missing)),
            ("pin dir", d["pin_dir"]), ("cgroup root", d["cgroup_root"]),
            ("source", f"{src['digest']}" + (" (stale: sources changed, run "
                                              "`datapath up --reload`)" if src["stale"] else "")),
            ("loaded at", loaded)]
    if wide:
        head.append(("cflags", " ".join(src["cflags"] or [])))
    p = d["proxy"] or {}
    head += [("mode", p.get("mode")), ("local proxy", p.get("local_proxy")),
             ("remote proxy", p.get("remote_proxy")), ("spill", f"{p.get('spill_percent', 0):g}%"),
             ("trace", p.get("trace")), ("generation", p.get("generation"))]
    rows = []
    for prog in d["programs"]:
        link = next((x for x in d["links"] if x["name"] == prog["name"]), None)
        where = (f"{link['attach_type']} {link['cgroup'] or link['cgroup_id']}"
                 if link and link["id"]
                 else "sk_msg_verdict sock_pairs" if prog["name"] == "sk_msg"
                 and d["sk_msg_attached"] else "-")
        rows.append({"program": prog["name"], "id": prog["id"], "tag": prog["tag"],
                     "link": link["id"] if link else None, "attached": where})
    cols = [("PROGRAM", "program"), ("ID", "id"), ("LINK", "link"), ("ATTACHED", "attached")]
    if wide:
        cols.insert(2, ("TAG", "tag"))
    return output.pairs(head) + "\n\n" + output.table(rows, cols, wide=wide)


# -- source -------------------------------------------------------------------------

def cmd_source(args) -> int:
    dp = Datapath(options.settings(args, defines=dict(args.defines)))
    data = {"cflags": dp.cflags(), "digest": dp.source_digest(), "source": dp.bundle()}
    loaded = dp.state()
    if loaded and not args.defines:
        data["loaded_digest"] = loaded.get("source_digest")

    def text(wide):
        flags = " ".join(data["cflags"])
        if args.cflags_only:
            return flags
        note = ""
        if data.get("loaded_digest") and data["loaded_digest"] != data["digest"]:
            note = f"\n// note: the loaded datapath was built from {data['loaded_digest']}"
        return f"// cflags: {flags}\n// digest: {data['digest']}{note}\n{data['source']}".rstrip()

    output.emit(data, args.output, text)
    return 0


# -- set ------------------------------------------------------------------------------

def cmd_set(args) -> int:
    values = {k: getattr(args, k)
              for k in ("local_proxy", "remote_proxy", "mode", "spill", "trace")}
    if all(v is None for v in values.values()):
        raise CLIError("datapath set: nothing to change",
                       "pass --local-proxy, --remote-proxy, --mode, --spill or --trace", 2)
    c = access.control(args)
    agent_link.guard(c.s.run_dir, args.force, "proxy settings")
    try:
        c.set_proxy(local=values["local_proxy"], remote=values["remote_proxy"],
                    mode=values["mode"], spill=values["spill"], trace=values["trace"])
        proxy = c.proxy()
    finally:
        c.close()
    output.emit(proxy, args.output, lambda wide: output.pairs(list(proxy.items())))
    return 0


# -- uninstall ----------------------------------------------------------------------------

def cmd_uninstall(args) -> int:
    dp = access.datapath(args, require_up=False)
    agent_link.guard(dp.s.run_dir, args.force, "datapath")
    ids = pins.our_prog_ids(dp.pins)
    removed = dp.uninstall()
    left_pins = sorted(str(p) for p in dp.pins.rglob("*")) if dp.pins.exists() else []
    still = _attached_anywhere(ids)
    data = {"removed": removed, "pins_left": left_pins,
            "still_attached": still, "clean": not left_pins and not still}

    def text(wide):
        if not removed:
            lines = [f"nothing pinned under {dp.s.pin_dir}"]
        else:
            lines = [f"removed {len(removed)} pins from {dp.s.pin_dir}:"]
            for kind in ("link/", "prog/", "map/"):
                names = " ".join(r for r in removed if r.startswith(kind))
                lines += textwrap.wrap(names, output.WIDTH, initial_indent="  ",
                                       subsequent_indent="  ")
        lines += [f"left pinned: {p}" for p in left_pins]
        lines += [f"still attached: prog {s['prog_id']} ({s['attach_type']} {s['cgroup']})"
                  for s in still]
        lines.append("verified: no pins left, none of our programs attached" if data["clean"]
                     else "NOT clean: see above")
        return "\n".join(lines)

    output.emit(data, args.output, text)
    return 0 if data["clean"] else 1


def _attached_anywhere(ids: set) -> list:
    """Our program ids still attached to any cgroup (bpftool's view, if it exists)."""
    if not ids:
        return []
    from .cgroups import attached_programs

    return [a for a in attached_programs() if a["prog_id"] in ids]
