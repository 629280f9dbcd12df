"""`nodemesh status`: the node at a glance, and the probes Kubernetes runs.

Each part (datapath, agent, local proxy, remote proxy) is read on its own;
a part that is down is shown as such, never fails the whole command.
`--probe ready|live` is for kubelet exec probes: silent, exit code only.
"""

from agent.bpf.datapath import Control
from agent.bpf.loader import Datapath

from . import admin_link, options, output, privileges
from .errors import CLIError

EPILOG = """examples:
  nodemesh status
  nodemesh status -o json
  nodemesh status --probe ready --of proxy     # kubelet readinessProbe (exec)
  nodemesh status --probe live --of agent      # kubelet livenessProbe (exec)
  nodemesh status --probe ready --socket /run/nodemesh/proxy-remote.sock

exit codes: 0 ok; with --probe: 0 ready/live, 1 not
"""


def register(sub, common):
    st = sub.add_parser("status", parents=[common], help="the node at a glance; probes",
                        formatter_class=options.formatter, epilog=EPILOG)
    st.add_argument("--probe", choices=("ready", "live"),
                    help="check one component's /ready or /healthz; exit code only")
    st.add_argument("--of", choices=tuple(admin_link.COMPONENTS), default="agent",
                    help="component for --probe (default agent)")
    st.add_argument("--socket", metavar="PATH",
                    help="admin socket for --probe (default: the --of component's)")
    st.set_defaults(func=cmd_status)


def cmd_status(args) -> int:
    s = options.settings(args)
    if args.probe:
        return probe(s.run_dir, args.of, args.probe, args.socket)
    data = gather(s)
    output.emit(data, args.output, lambda wide: render(data))
    return 0


def probe(run_dir: str, component: str, kind: str, socket_path=None) -> int:
    endpoint = "/ready" if kind == "ready" else "/healthz"
    status, _ = _status(run_dir, component, endpoint, socket_path)
    return 0 if status == 200 else 1


def _status(run_dir, component, endpoint, socket_path=None):
    from agent.admin import AdminClient, AdminError

    client = (AdminClient(socket_path) if socket_path
              else admin_link.client(run_dir, component))
    try:
        return client.request("GET", endpoint, ok=(200, 503))
    except AdminError as e:
        return None, str(e)


def gather(s) -> dict:
    unavailable = {}
    data = {"datapath": _datapath(s, unavailable)}
    for component in admin_link.COMPONENTS:
        code, body = _status(s.run_dir, component, "/ready")
        part = {"socket": admin_link.socket_path(s.run_dir, component),
                "running": code is not None, "ready": code == 200}
        if code is None:
            unavailable[component] = body
        elif component == "agent":
            part["failover"] = admin_link.read(s.run_dir, "agent", "/failover", unavailable)
            part["config"] = admin_link.read(s.run_dir, "agent", "/config_dump?summary=1",
                                             unavailable)
        data[component] = part
    data["unavailable"] = unavailable
    return data


def _datapath(s, unavailable) -> dict:
    try:
        privileges.require()
    except CLIError as e:
        unavailable["datapath"] = str(e)
        return {"up": None}
    dp = Datapath(s)
    if not dp.is_up():
        unavailable["datapath"] = f"not loaded (no pins in {s.pin_dir}); run `nodemesh datapath up`"
        return {"up": False, "pin_dir": s.pin_dir}
    c = Control(s)
    try:
        return {"up": True, "pin_dir": s.pin_dir, "proxy": c.proxy(),
                "services": len(c.services()), "pods": len(c.enrolled()),
                "counters": {k: v for k, v in c.counters().items() if v}}
    finally:
        c.close()


def render(data) -> str:
    dp = data["datapath"]
    items = [("datapath", "up" if dp.get("up") else "down" if dp.get("up") is False else "unknown")]
    if dp.get("up"):
        p = dp["proxy"]
        items += [("  mode", p.get("mode")), ("  local proxy", p.get("local_proxy")),
                  ("  remote proxy", p.get("remote_proxy")), ("  spill %", p.get("spill_percent")),
                  ("  services", dp["services"]), ("  enrolled pods", dp["pods"])]
    for component in admin_link.COMPONENTS:
        part = data[component]
        state = "ready" if part["ready"] else "running, not ready" if part["running"] else "down"
        items.append((component, state))
        failover = part.get("failover")
        if isinstance(failover, dict) and failover.get("state"):
            items.append(("  failover", failover["state"]))
    text = output.pairs(items)
    if data["unavailable"]:
        text += "\n\n" + output.unavailable_text(data["unavailable"])
    return text
