"""The demo's terminal view: one line a second in 80 columns, events, the summary."""

from __future__ import annotations

import textwrap
from typing import Dict, Tuple

from .settings import PROTOCOLS

WIDTH = 80
SHORT = {"redis": "redis", "thrift": "thrift", "dubbo": "dubbo", "http1": "http"}

LEGEND = ("per second. redis..http: requests ok from pod-a/pod-b; f/r: failed/retried;\n"
          "req L/R: requests at the local/remote proxy; conn L/R: new connections the\n"
          "kernel sent to the local/remote proxy; v1:v2: HTTP responses by backend")


def header() -> str:
    cols = " ".join(f"{SHORT[p]:>6}" for p in PROTOCOLS)
    return f"{'t':>4} {'phase':<15} {cols} {'f/r':>5} {'req L/R':>8} {'conn':>5} {'v1:v2':>6}"


def line(t: float, phase: str, second: Dict[Tuple[str, str], dict], paths: dict,
         pods) -> str:
    cells = []
    for proto in PROTOCOLS:
        oks = [second.get((proto, pod), {}).get("ok") for pod in pods]
        cells.append(f"{'/'.join('-' if n is None else str(n) for n in oks):>6}")
    failed = sum(r.get("failed", 0) for r in second.values())
    retried = sum(r.get("retried", 0) for r in second.values())
    req = f"{paths['requests']['local']}/{paths['requests']['remote']}"
    conn = f"{paths['conns']['local']}/{paths['conns']['remote']}"
    split = _add_up(r.get("by_backend", {}) for (p, _), r in second.items() if p == "http1")
    v1, v2 = split.get("http-v1", 0), split.get("http-v2", 0)
    ratio = f"{round(100 * v1 / (v1 + v2))}:{round(100 * v2 / (v1 + v2))}" if v1 + v2 else "-"
    text = (f"{t:>4.0f} {phase[:15]:<15} {' '.join(cells)} {f'{failed}/{retried}':>5} "
            f"{req:>8} {conn:>5} {ratio:>6}")
    return text[:WIDTH]


def event(t: float, text: str) -> str:
    return f"{t:>4.0f} >> {text}"[:WIDTH]


def summary_text(s: dict) -> str:
    out = ["", "summary"]
    for proto, pods in s["protocols"].items():
        cells = "  ".join(f"{pod} {c['ok']:>5} ok {c['failed']} failed {c['retried']} retried"
                          for pod, c in pods.items())
        out.append(f"  {SHORT[proto]:<6} {cells}"[:WIDTH])
    out.append("  phase              ok  failed  retried (by protocol)")
    for ph in s["phases"]:
        by = ", ".join(f"{SHORT[p]} {c['retried']}" for p, c in ph["by_protocol"].items()
                       if c["retried"])
        out.append(f"  {ph['name'][:15]:<15} {ph['ok']:>5} {ph['failed']:>7} {ph['retried']:>8}"
                   f"{' (' + by + ')' if by else ''}"[:WIDTH])
    split = ", ".join(f"{k}: v1 {v.get('http-v1', 0)} v2 {v.get('http-v2', 0)}"
                      for k, v in s["split"].items())
    out.append(f"  http split by route weights: {split}"[:WIDTH] if len(split) < 50 else
               "  http split by route weights:")
    if len(split) >= 50:
        out += [f"    {k:>7}: v1 {v.get('http-v1', 0)}, v2 {v.get('http-v2', 0)}"
                for k, v in s["split"].items()]
    req, conn = s["paths"]["requests"], s["paths"]["connections"]
    out.append(f"  requests at the local proxy {req['local']}, at the remote proxy {req['remote']}")
    out.append(f"  new connections (kernel): local {conn['local']}, remote {conn['remote']}, "
               f"direct {conn['direct']}")
    out.append("  retried = resent once on a new connection after the first one died under")
    out.append("  the request (SIGKILL; a drain where the protocol has no goodbye signal)")
    if s.get("failover_transitions"):
        out += textwrap.wrap("controller: " + ", ".join(s["failover_transitions"]), WIDTH,
                             initial_indent="  ", subsequent_indent="    ")
    for e in s["errors"][:5]:
        out.append(f"  ! {e}"[:WIDTH])
    left = s["leftovers"]
    out.append("  left behind: nothing" if not left else f"  LEFT BEHIND: {', '.join(left)}")
    out.append("  result: " + ("ok" if s["ok"] else "FAILED: " + "; ".join(s["problems"])))
    return "\n".join(out)


def _add_up(dicts) -> dict:
    out: dict = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out
