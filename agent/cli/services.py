"""`nodemesh service add|del|list`: the services map (mesh VIP:port -> id)."""

from agent.bpf.datapath import PROTOCOL_IDS

from . import access, agent_link, options, output
from .errors import CLIError

EPILOG = """examples:
  nodemesh service add 198.18.0.10:6379 --protocol redis
  nodemesh service add 198.18.0.11:20880 --protocol dubbo --id 7 \\
      --remote-port 20007
  nodemesh service add [fd00::10]:80 --protocol http1 --pair off
  nodemesh service del 198.18.0.10:6379
  nodemesh service list -o json
"""


def register(sub, common):
    svc = sub.add_parser("service", help="mesh services (VIP:PORT) in the datapath",
                         formatter_class=options.formatter, epilog=EPILOG)
    ssub = svc.add_subparsers(dest="service_cmd", metavar="COMMAND", required=True)
    add = ssub.add_parser("add", parents=[common, options.force()], help="add or replace a service",
                          formatter_class=options.formatter, epilog=EPILOG)
    add.add_argument("vip", metavar="VIP:PORT", type=options.hostport)
    add.add_argument("--protocol", required=True, choices=sorted(PROTOCOL_IDS),
                     help="the listener's L7 protocol")
    add.add_argument("--id", type=int, metavar="N", help="service id (default: next free)")
    add.add_argument("--remote-port", type=options.port, default=0, metavar="N",
                     help="the remote proxy pool's port for this service")
    add.add_argument("--pair", type=options.on_off, default=True, metavar="on|off",
                     help="same-node bytes skip TCP/IP through sk_msg (default on; off only "
                          "for clients that connect and close without sending)")
    add.set_defaults(func=cmd_add)
    rm = ssub.add_parser("del", parents=[common, options.force()], help="remove a service",
                         formatter_class=options.formatter, epilog=EPILOG)
    rm.add_argument("vip", metavar="VIP:PORT", type=options.hostport)
    rm.set_defaults(func=cmd_del)
    ls = ssub.add_parser("list", parents=[common], help="list the services map",
                         formatter_class=options.formatter, epilog=EPILOG)
    ls.set_defaults(func=cmd_list)


def next_free_id(services: list) -> int:
    used = {s["id"] for s in services}
    n = 1
    while n in used:
        n += 1
    return n


def cmd_add(args) -> int:
    c = access.control(args)
    try:
        agent_link.guard(c.s.run_dir, args.force, "services map")
        current = c.services()
        same = next((s for s in current if s["vip"] == args.vip), None)
        if args.id is None:
            sid = same["id"] if same else next_free_id(current)
        elif not 0 < args.id < 2 ** 32:
            raise CLIError(f"service id {args.id} out of range",
                           "pass --id between 1 and 2^32-1", 2)
        else:
            sid = args.id
        c.add_service(args.vip, sid, protocol=args.protocol, remote_port=args.remote_port,
                      pair=args.pair)
        row = next(s for s in c.services() if s["vip"] == args.vip)
    finally:
        c.close()
    verb = "replaced" if same else "added"
    output.emit(row, args.output,
                lambda wide: f"{verb} service {row['id']}: {row['vip']} {row['protocol']}")
    return 0


def cmd_del(args) -> int:
    c = access.control(args)
    try:
        agent_link.guard(c.s.run_dir, args.force, "services map")
        if not c.del_service(args.vip):
            raise CLIError(f"no service {args.vip}", "see `nodemesh service list`")
    finally:
        c.close()
    output.emit({"deleted": args.vip}, args.output, lambda wide: f"deleted service {args.vip}")
    return 0


def cmd_list(args) -> int:
    c = access.control(args)
    try:
        rows = c.services()
    finally:
        c.close()
    cols = [("ID", "id"), ("VIP:PORT", "vip"), ("PROTOCOL", "protocol"),
            ("REMOTE PORT", "remote_port"), ("DISABLED", "disabled")]
    wide_cols = cols + [("PAIR", "pair")]
    output.emit({"services": rows}, args.output,
                lambda wide: output.table(rows, wide_cols if wide else cols, wide)
                if rows else "no services")
    return 0
