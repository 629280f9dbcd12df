"""`nodemesh enroll|unenroll|pods`: the enrolled map (pod cgroups in the mesh)."""

import argparse
import os

from . import access, agent_link, options, output, pod_names
from .cgroups import CgroupIndex
from .errors import CLIError

EPILOG = """examples:
  nodemesh enroll --cgroup /sys/fs/cgroup/kubepods.slice/pod1234
  nodemesh enroll --cgroup /sys/fs/cgroup/unified/demo --spill 25
  nodemesh unenroll --cgroup /sys/fs/cgroup/unified/demo
  nodemesh pods -o wide
  nodemesh pods -o json | jq -r '.pods[] | select(.enrolled) | .pod'
"""


def register(sub, common):
    en = sub.add_parser("enroll", parents=[common, options.force()],
                        help="put a pod's cgroup in the mesh",
                        formatter_class=options.formatter, epilog=EPILOG)
    en.add_argument("--cgroup", required=True, metavar="PATH", help="the pod's cgroup v2 dir")
    en.add_argument("--spill", type=options.percent, metavar="PERCENT",
                    help="per-pod spill share (default: the proxy's)")
    en.add_argument("--pod-index", type=int, default=0, metavar="N", help=argparse.SUPPRESS)
    en.set_defaults(func=cmd_enroll)
    un = sub.add_parser("unenroll", parents=[common, options.force()],
                        help="take a pod's cgroup out of the mesh",
                        formatter_class=options.formatter, epilog=EPILOG)
    un.add_argument("--cgroup", required=True, metavar="PATH")
    un.set_defaults(func=cmd_unenroll)
    ls = sub.add_parser("pods", parents=[common], help="list enrolled cgroups",
                        formatter_class=options.formatter, epilog=EPILOG)
    ls.set_defaults(func=cmd_pods)


def _cgroup(path) -> str:
    if not os.path.isdir(path):
        raise CLIError(f"no cgroup {path}", "create it, or pass the pod's cgroup v2 directory")
    if not os.path.isfile(os.path.join(path, "cgroup.procs")):
        raise CLIError(f"{path} is not a cgroup v2 directory",
                       "pass a directory under the cgroup2 mount (see `nodemesh doctor`)")
    return path


def cmd_enroll(args) -> int:
    c = access.control(args)
    try:
        agent_link.guard(c.s.run_dir, args.force, "enrolled pods")
        cid = c.enroll(_cgroup(args.cgroup), pod_index=args.pod_index, spill=args.spill)
    finally:
        c.close()
    data = {"cgroup": args.cgroup, "cgroup_id": cid}
    output.emit(data, args.output, lambda wide: f"enrolled {args.cgroup} (cgroup id {cid})")
    return 0


def cmd_unenroll(args) -> int:
    c = access.control(args)
    try:
        agent_link.guard(c.s.run_dir, args.force, "enrolled pods")
        _cgroup(args.cgroup)
        if not c.unenroll(args.cgroup):
            raise CLIError(f"{args.cgroup} is not enrolled", "see `nodemesh pods`")
    finally:
        c.close()
    output.emit({"cgroup": args.cgroup}, args.output, lambda wide: f"unenrolled {args.cgroup}")
    return 0


def cmd_pods(args) -> int:
    c = access.control(args)
    try:
        rows = c.enrolled()
    finally:
        c.close()
    rows = with_names(rows, c.s.run_dir)
    cols = [("POD", "pod"), ("CGROUP ID", "cgroup_id"), ("SPILL%", "spill"),
            ("CGROUP", "cgroup")]
    wide_cols = cols[:3] + [("INDEX", "pod_index"), ("PROXY NETNS", "proxy_netns"),
                            ("ENROLLED", "enrolled")] + cols[3:]
    output.emit({"pods": rows}, args.output,
                lambda wide: output.table(rows, wide_cols if wide else cols, wide)
                if rows else "no enrolled pods")
    return 0


def with_names(rows: list, run_dir: str) -> list:
    """Enrolled-map rows with their cgroup path and, from pods.json, the pod's
    namespace and name; pods.json entries missing from the map are added with
    enrolled false (the enroller believes they are in the mesh; the kernel does not)."""
    index, named = CgroupIndex(), pod_names.pods(run_dir)
    for r in rows:
        pod = named.get(r["cgroup_id"])
        r.update(enrolled=True, cgroup=index.path(r["cgroup_id"]),
                 namespace=pod["namespace"] if pod else None,
                 name=pod["name"] if pod else None,
                 pod=pod_names.full_name(pod) if pod else None)
    in_map = {r["cgroup_id"] for r in rows}
    for cid, pod in named.items():
        if cid not in in_map:
            rows.append({"cgroup_id": cid, "pod_index": None, "proxy_netns": None,
                         "spill": None, "enrolled": False,
                         "cgroup": pod.get("cgroup") or index.path(cid),
                         "namespace": pod["namespace"], "name": pod["name"],
                         "pod": pod_names.full_name(pod)})
    rows.sort(key=lambda r: (not r["enrolled"], r["pod"] or "~", r["cgroup_id"]))
    return rows
