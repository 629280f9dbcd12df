"""`nodemesh conns`: live redirected connections, end to end.

Joins three views of the same socket: the original-destination record our
connect program wrote (by socket cookie), the kernel's socket table
(sock_diag: where it really goes, its state), and its owner (process, pod).
"""


from agent.bpf.datapath import orig_dst_dict

from . import access, options, output, pod_names, sockets, workload
from .cgroups import CgroupIndex

EPILOG = """examples:
  nodemesh conns
  nodemesh conns --pod default/client-7f9c -o wide
  nodemesh conns --service 198.18.0.10:6379 -o json

columns: POD (or cgroup), PROCESS, ORIGINAL DST (what the app asked for),
TARGET (local proxy, remote proxy, or the original: fail open), STATE.
"""


def register(sub, common):
    c = sub.add_parser("conns", parents=[common], help="live redirected connections",
                       formatter_class=options.formatter, epilog=EPILOG)
    c.add_argument("--pod", metavar="NS/NAME|CGROUP", help="only this pod (name or cgroup path)")
    c.add_argument("--service", type=options.hostport, metavar="VIP:PORT",
                   help="only connections to this service")
    c.set_defaults(func=cmd_conns)


def cmd_conns(args) -> int:
    s = options.settings(args)
    if args.pod:      # resolved first: an unknown pod is an error, not an empty list
        args.pod_cgroup = workload.by_pod(args.pod, s.run_dir).cgroup
    rows = collect(s, args)
    cols = [("POD", "pod"), ("PROCESS", "process"), ("ORIGINAL DST", "original_dst"),
            ("TARGET", "target"), ("STATE", "state")]
    wide = [("COOKIE", "cookie"), ("POD", "pod"), ("PID", "pid"), ("PROCESS", "process"),
            ("SOURCE", "source"), ("ORIGINAL DST", "original_dst"), ("PEER", "peer"),
            ("TARGET", "target"), ("STATE", "state"), ("PAIRED", "paired"),
            ("CGROUP", "cgroup")]
    output.emit({"connections": rows}, args.output,
                lambda w: output.table(rows, wide if w else cols, w) if rows
                else "no redirected connections")
    return 0


def collect(s, args) -> list:
    c = access.control(args)
    try:
        records = {int(k[0]): orig_dst_dict(v) for k, v in c.map("orig_dst").items()}
        paired = _paired(c)
    finally:
        c.close()
    socks = sockets.tcp_sockets()
    own = sockets.owners(socks[k].inode for k in records if k in socks)
    index, names = CgroupIndex(), pod_names.load(s.run_dir)
    rows = []
    for cookie, rec in sorted(records.items()):
        sock = socks.get(cookie)
        pid, proc = own.get(sock.inode, (None, None)) if sock else (None, None)
        cgroup = index.path(rec["cgroup_id"])
        rows.append({
            "cookie": cookie, "source": sock.src if sock else None,
            "original_dst": rec["original_dst"], "peer": sock.dst if sock else None,
            "target": rec["target"], "service_id": rec["service_id"],
            "state": sock.state if sock else "gone", "pid": pid, "process": proc,
            "cgroup_id": rec["cgroup_id"], "cgroup": cgroup,
            "paired": None if paired is None or not sock else (sock.src, sock.dst) in paired,
            "pod": names.get(rec["cgroup_id"]) or pod_names.owner(names, cgroup) or _short(cgroup),
        })
    return [r for r in rows if _wanted(r, args)]


def _paired(c):
    """(local, remote) address pairs of the sockets in the sockhashes: their bytes
    to the peer go through sk_msg. Keys only: the map's values are not readable."""
    from agent.bpf import layout
    from agent.bpf.datapath import format_hostport

    out = set()
    for name, ip in (("sock_pairs", layout.be32_to_ip), ("sock_pairs6", layout.words_to_ip6)):
        try:
            keys = list(c.map(name).keys())
        except (OSError, RuntimeError):
            if name == "sock_pairs":
                return None          # a datapath without pairing: cannot tell
            continue
        attr = "_ip6" if name.endswith("6") else "_ip"
        for k in keys:
            out.add((format_hostport(ip(getattr(k, "local" + attr)), k.local_port),
                     format_hostport(ip(getattr(k, "remote" + attr)), k.remote_port)))
    return out


def _wanted(row, args) -> bool:
    if getattr(args, "service", None) and row["original_dst"] != args.service:
        return False
    pod = getattr(args, "pod_cgroup", None)
    if not pod:
        return True
    return bool(row["cgroup"]) and (row["cgroup"] == pod or
                                    row["cgroup"].startswith(pod.rstrip("/") + "/"))


def _short(path):
    return path.rsplit("/", 1)[-1] if path else None



