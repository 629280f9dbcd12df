"""Where the traffic went: the kernel's connect4 decisions and the proxies' request counts.

Read once a second; each read returns what happened since the last one.
Connections come from the datapath's per-CPU counters (pinned maps, no agent
needed); requests from each proxy's GET /stats. A restarted proxy starts
counting from zero, so a proxy's count is followed per process id.
"""

from __future__ import annotations

from collections import Counter
from typing import Dict, Tuple

from agent.admin import AdminError

REMOTE_REASONS = ("remote_no_listener", "remote_mode", "remote_spill")
FAIL_OPEN = ("bypass_mode", "failopen_no_remote", "failopen_no_config", "failopen_map_full",
             "failopen_bad_config")


class Paths:
    def __init__(self, node):
        self.node = node
        self.kernel0 = node.ctl.counters()
        self.kernel_last = dict(self.kernel0)
        self._proxy_seen: Dict[str, Tuple[int, int]] = {}     # role -> (pid, requests)
        self.requests = Counter()                             # role -> total since start
        for role in ("local", "remote"):
            self._proxy_requests(role)                        # the baselines: count from now

    def read(self) -> dict:
        """{"conns": {"local", "remote", "direct"}, "requests": {"local", "remote"}}, this second."""
        now = self.node.ctl.counters()
        delta = {k: now[k] - self.kernel_last.get(k, 0) for k in now}
        self.kernel_last = now
        conns = {"local": delta["local"], "remote": sum(delta[k] for k in REMOTE_REASONS),
                 "direct": sum(delta[k] for k in FAIL_OPEN)}
        requests = {role: self._proxy_requests(role) for role in ("local", "remote")}
        self.requests.update(requests)
        return {"conns": conns, "requests": requests}

    def _proxy_requests(self, role: str) -> int:
        try:
            stats = self.node.proxy_admin(role, timeout=0.5).get("/stats")
        except AdminError:
            return 0                   # down (killed, draining away, not started yet)
        pid, total = stats.get("pid"), stats["requests"]["requests"]
        last_pid, last = self._proxy_seen.get(role, (None, 0))
        self._proxy_seen[role] = (pid, total)
        if pid != last_pid:
            return total               # a new proxy: all of its requests are new
        return max(0, total - last)    # a draining proxy's exited workers take their counts

    def kernel(self) -> dict:
        """Every non-zero counter since the demo's traffic began."""
        now = self.node.ctl.counters()
        return {k: now[k] - self.kernel0.get(k, 0) for k in now if now[k] != self.kernel0.get(k, 0)}

    def connections(self) -> dict:
        k = self.kernel()
        return {"local": k.get("local", 0), "remote": sum(k.get(r, 0) for r in REMOTE_REASONS),
                "direct": sum(k.get(r, 0) for r in FAIL_OPEN)}
