"""The kernel half of `explain`: connect4's decision for one client and VIP:PORT.

Replays bpf/connect4.c and bpf/lib/{pods,steer}.h step by step over the
pinned maps, in the kernel's order: is connect4 attached above the client's
cgroup; services map; enrolled map (the cgroup, else its ancestors from
level 1 down, at most NM_MAX_CGROUP_DEPTH); proxy settings written at all;
mode; a socket listening at the local proxy address in the proxy's network
namespace (sock_diag where the kernel uses bpf_sk_lookup_tcp); the spill
share, drawn per connection (so a probability, not a verdict); the remote
pool and the service's remote port. The result is every possible target
with its probability and the counter reason the kernel would bump.
"""

import os
import re

from agent.bpf import host
from agent.bpf.sources import source_dir

from . import netns, pins
from .cgroups import CgroupIndex

DEFAULT_DEPTH_RE = re.compile(r"#define\s+NM_MAX_CGROUP_DEPTH\s+(\d+)")
FLAG_DEPTH_RE = re.compile(r"^-DNM_MAX_CGROUP_DEPTH=(\d+)$")


def step(name: str, result: str, detail: str = "") -> dict:
    return {"name": name, "result": result, "detail": detail}


def target(kind: str, address: str, reason: str, probability: float) -> dict:
    return {"target": kind, "address": address, "reason": reason,
            "probability": round(probability, 6)}


def max_cgroup_depth(cflags) -> int:
    """NM_MAX_CGROUP_DEPTH the loaded programs were built with."""
    for flag in cflags or ():
        m = FLAG_DEPTH_RE.match(flag)
        if m:
            return int(m.group(1))
    m = DEFAULT_DEPTH_RE.search((source_dir() / "lib" / "config.h").read_text())
    return int(m.group(1)) if m else 12


def explain(control, dp, client, vip: str) -> dict:
    """{"steps": [...], "targets": [...], "generation": N, "service": row|None,
    "pod": enrolled entry|None}; `client` is a workload.Workload."""
    r = _Replay(control, dp, client, vip)
    for check in (r.attached, r.service, r.enrolled, r.settings):
        reason = check()
        if reason:                    # the kernel lets the connection go untouched
            r.out["targets"] = [target("original", vip, reason, 1.0)]
            return r.out
    r.out["targets"] = _steer(r.proxy, r.out["service"], r.out["pod"], client, r.ip,
                              r.out["steps"], vip)
    return r.out


class _Replay:
    """connect4's checks in its order; each returns the reason it stops with, or None."""

    def __init__(self, control, dp, client, vip):
        self.control, self.dp, self.client, self.vip = control, dp, client, vip
        self.ip = _split(vip)[0]
        self.proxy = None
        self.out = {"steps": [], "targets": None, "service": None, "pod": None,
                    "generation": None}

    def _step(self, *args):
        self.out["steps"].append(step(*args))

    def attached(self):
        root = _attach_root(self.dp, self.ip)
        if root is not None and not _below(self.client.cgroup, root):
            self._step("attached", "no", f"the connect hooks are at {root}; "
                                         f"{self.client.cgroup} is not below it")
            return "not_attached"        # the one reason that is not a kernel counter
        self._step("attached", "yes", f"below {root}" if root else "at an unknown cgroup")
        return None

    def service(self):
        svc = next((s for s in self.control.services() if s["vip"] == self.vip), None)
        self.out["service"] = svc
        if svc is None or svc["disabled"]:
            why = "not in the services map" if svc is None else \
                f"service {svc['id']} is disabled"
            self._step("service", "miss", why)
            return "not_service"
        self._step("service", "hit", f"id {svc['id']}, {svc['protocol']}, remote port "
                                     f"{svc['remote_port'] or 'none'}")
        return None

    def enrolled(self):
        depth = max_cgroup_depth(self.dp.state().get("cflags"))
        pod, how = enrolled_pod(self.control, self.client.cgroup, depth)
        self.out["pod"] = pod
        self._step("enrolled", "yes" if pod else "no", how)
        return None if pod else "not_enrolled"

    def settings(self):
        self.proxy = self.control.proxy()
        self.out["generation"] = self.proxy["generation"]
        if not self.proxy["generation"]:
            self._step("proxy settings", "never written", "generation 0: fail open")
            return "failopen_no_config"
        self._step("mode", self.proxy["mode"])
        return None


def _split(vip: str):
    h, _, p = vip.rpartition(":")
    return h.strip("[]"), int(p)


def _attach_root(dp, ip: str):
    """The cgroup the connect program of this family is attached to (None: unknown)."""
    links = [("connect6" if ":" in ip else "connect4"), "connect4"]
    for name in links:
        info = pins.link_info(dp.pins / "links" / name)
        if info["cgroup_id"]:
            return CgroupIndex().path(info["cgroup_id"])
    return None


def _below(path: str, root: str) -> bool:
    path, root = os.path.realpath(path), os.path.realpath(root)
    return path == root or path.startswith(root.rstrip("/") + "/")


def enrolled_pod(control, cgroup: str, max_depth: int):
    """pods.h's enrolled_pod(): the cgroup's own entry, else the first enrolled
    ancestor from level 1 (the hierarchy root's child) down to the parent, at
    most max_depth levels. Returns (entry or None, how it was found)."""
    entries = {e["cgroup_id"]: e for e in control.enrolled()}
    own = host.cgroup_id(cgroup)
    if own in entries:
        return entries[own], f"its own cgroup (id {own}) is in the enrolled map"
    mount = os.path.realpath(host.cgroup2_mount() or "/")
    rel = os.path.relpath(os.path.realpath(cgroup), mount)
    parts = [] if rel == "." else rel.split("/")
    for level in range(1, len(parts)):
        path = os.path.join(mount, *parts[:level])
        cid = host.cgroup_id(path)
        if cid not in entries:
            continue
        if level > max_depth:
            return None, (f"ancestor {path} is enrolled, but at level {level}, deeper than "
                          f"NM_MAX_CGROUP_DEPTH={max_depth}: the kernel stops before it")
        return entries[cid], f"via ancestor {path} (id {cid}, level {level})"
    return None, f"neither {cgroup} nor its ancestors are in the enrolled map"


def _steer(proxy: dict, svc: dict, pod: dict, client, ip: str, steps: list, vip: str) -> list:
    """steer.h: the targets of one connect and their probabilities."""
    mode = proxy["mode"]
    if mode == "remote":
        return [_to_remote(proxy, svc, "remote_mode", 1.0, steps, ip, vip)]
    if mode == "bypass":
        return [target("original", vip, "bypass_mode", 1.0)]
    if mode != "local":
        return [target("original", vip, "failopen_bad_config", 1.0)]
    local = _family_address(proxy["local_proxy"], ip)
    if not local:
        steps.append(step("local listener", "none configured", "no local proxy address"))
        return [_to_remote(proxy, svc, "remote_no_listener", 1.0, steps, ip, vip)]
    listens, detail = _local_listens(local, pod, client)
    steps.append(step("local listener", {True: "yes", False: "no", None: "unknown"}[listens],
                      detail))
    if listens is False:
        return [_to_remote(proxy, svc, "remote_no_listener", 1.0, steps, ip, vip)]
    share = _spill(proxy, pod, steps)
    out = []
    if share < 1.0:
        out.append(target("local", local, "local", 1.0 - share))
    if share > 0.0:
        out.append(_to_remote(proxy, svc, "remote_spill", share, steps, ip, vip))
    return out


def _to_remote(proxy, svc, reason, probability, steps, ip, vip) -> dict:
    remote = _family_address(proxy["remote_proxy"], ip, port=False)
    if not remote or not svc["remote_port"]:
        why = "no remote proxy address" if not remote else "the service has no remote port"
        steps.append(step("remote pool", "none", f"{why}: fail open"))
        return target("original", vip, "failopen_no_remote", probability)
    addr = f"[{remote}]:{svc['remote_port']}" if ":" in remote else f"{remote}:{svc['remote_port']}"
    steps.append(step("remote pool", addr, f"{reason}"))
    return target("remote", addr, reason, probability)


def _family_address(text, ip: str, port=True):
    """The entry of a comma-separated proxy address list ("IP:PORT,[IPv6]:PORT",
    or bare addresses with port=False) in the VIP's family."""
    want_v6 = ":" in ip
    for part in filter(None, (p.strip() for p in str(text or "").split(","))):
        addr = part
        if port:
            addr = part[1:part.index("]")] if part.startswith("[") else part.rpartition(":")[0]
        if (":" in addr) == want_v6:
            return part
    return None


def _local_listens(local: str, pod: dict, client):
    """(listening: bool|None, detail) at the local proxy address, looked up in the
    namespace the kernel would use: the client's own (proxy_netns -1) or the one
    the pod entry names by netns id."""
    lip, _, lport = local.rpartition(":")
    lip = lip.strip("[]")
    where = client.netns
    if pod["proxy_netns"] is not None and pod["proxy_netns"] >= 0:
        if client.netns is None:
            return None, (f"netns id {pod['proxy_netns']}: no process in the pod to resolve it "
                          "from; the kernel checks at connect time")
        where = netns.resolve_nsid(client.netns, pod["proxy_netns"])
        if where is None:
            return None, (f"netns id {pod['proxy_netns']} (seen from the pod) is neither ours "
                          "nor a named netns; cannot look")
    label = where or "this network namespace (no process in the pod)"
    try:
        found = netns.listening(where, lip, int(lport))
    except OSError as exc:
        return None, f"cannot look in {label}: {exc}"
    if found:
        return True, f"{local} listens ({found[0]}) in {label}"
    return False, f"nothing listens on {local} in {label}"


def _spill(proxy: dict, pod: dict, steps: list) -> float:
    glob = float(proxy["spill_percent"])
    own = pod["spill"]
    share = (own if own is not None else glob) / 100.0
    detail = f"global {glob:g}%, pod override {'none' if own is None else f'{own:g}%'}"
    steps.append(step("spill", f"{share * 100:g}% of new connections go remote", detail))
    return share
