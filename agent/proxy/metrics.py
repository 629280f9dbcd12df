"""Per-worker counters, merged by the supervisor at scrape time.

The hot path touches plain Python ints and dicts (no locks, no
prometheus_client objects per request: bench/proxy_metrics.py measures the
difference). Each worker exports its counters as plain data over its
control channel; the supervisor sums them and renders Prometheus text with
Istio/Envoy-style names:

  nodemesh_requests_total{service,route,cluster,source_pod,response_code,response_flags}
  nodemesh_request_duration_milliseconds{service,route,cluster,source_pod} (histogram)
  nodemesh_upstream_cx_*{cluster}, nodemesh_upstream_rq_*{cluster}, nodemesh_downstream_*
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Dict, Iterable, List, Tuple

# Istio's default buckets for istio_request_duration_milliseconds.
DURATION_BUCKETS_MS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000,
                       60000, 300000, 600000, 1800000, 3600000)
_BOUNDS_S = tuple(b / 1000.0 for b in DURATION_BUCKETS_MS)
_B0, _B1 = _BOUNDS_S[0], _BOUNDS_S[1]
SLOT_LABELS = ("service", "route", "cluster", "source_pod")
# Gauges every worker reports about the same thing (its copy of the cluster): the
# node's value is the largest, not the sum.
SAME_IN_EVERY_WORKER = frozenset({"nodemesh_membership_total", "nodemesh_membership_healthy",
                                  "nodemesh_outlier_ejections_active",
                                  "nodemesh_circuit_breakers_rq_open",
                                  "nodemesh_circuit_breakers_cx_open"})
OTHER_POD = "other"

HELP = {
    "nodemesh_requests_total": "Requests by service, route, cluster, source pod and outcome.",
    "nodemesh_request_duration_milliseconds": "Request duration seen by the proxy.",
    "nodemesh_downstream_cx_total": "Client connections accepted.",
    "nodemesh_downstream_cx_active": "Client connections open.",
    "nodemesh_downstream_cx_rejected_total": "Client connections closed at accept (no record, "
                                             "no listener, draining).",
    "nodemesh_downstream_cx_protocol_error_total": "Client connections closed on bad frames.",
    "nodemesh_downstream_rq_active": "Requests in flight from clients.",
    "nodemesh_upstream_cx_total": "Upstream connections opened.",
    "nodemesh_upstream_cx_active": "Upstream connections open.",
    "nodemesh_upstream_cx_connect_fail_total": "Upstream connects that failed.",
    "nodemesh_upstream_cx_connect_timeout_total": "Upstream connects that timed out.",
    "nodemesh_upstream_cx_destroy_with_active_rq_total": "Upstream connections lost with "
                                                         "requests in flight.",
    "nodemesh_upstream_cx_protocol_error_total": "Upstream connections closed on garbage.",
    "nodemesh_upstream_rq_total": "Requests sent upstream (each try).",
    "nodemesh_upstream_rq_active": "Requests in flight upstream.",
    "nodemesh_upstream_rq_timeout_total": "Requests that timed out.",
    "nodemesh_upstream_rq_retry_total": "Retries sent.",
    "nodemesh_upstream_rq_pending_active": "Requests waiting for an upstream connection.",
    "nodemesh_mirror_requests_total": "Mirrored copies sent to a shadow cluster.",
}


class Slot:
    """The counters of one (service, route, cluster, source_pod): what a request updates."""

    __slots__ = ("labels", "codes", "buckets", "sum_ms")

    def __init__(self, labels: Tuple[str, str, str, str]):
        self.labels = labels
        self.codes: Dict[Tuple[str, str], int] = {}
        self.buckets = [0] * (len(_BOUNDS_S) + 1)
        self.sum_ms = 0.0

    def observe_n(self, code: str, flags: str, seconds: float, n: int) -> None:
        """n requests that ended together (a pipelined batch)."""
        key = (code, flags)
        self.codes[key] = self.codes.get(key, 0) + n
        self.buckets[bisect_left(_BOUNDS_S, seconds)] += n
        self.sum_ms += seconds * 1000.0 * n

    def observe(self, code: str, flags: str, seconds: float) -> None:
        key = (code, flags)
        codes = self.codes
        codes[key] = codes.get(key, 0) + 1
        # most requests fall in the first buckets: compare before searching
        if seconds <= _B0:
            self.buckets[0] += 1
        elif seconds <= _B1:
            self.buckets[1] += 1
        else:
            self.buckets[bisect_left(_BOUNDS_S, seconds)] += 1
        self.sum_ms += seconds * 1000.0


class WorkerStats:
    """Everything one worker counts; `export()` is what it sends to the supervisor."""

    def __init__(self, max_pod_labels: int = 1000):
        self.max_pod_labels = max_pod_labels
        self.slots: Dict[Tuple[str, str, str, str], Slot] = {}
        self.counters: Dict[Tuple[str, Tuple], float] = {}
        self._pods = set()

    def slot(self, service: str, route: str, cluster: str, pod: str) -> Slot:
        key = (service, route, cluster, pod)
        s = self.slots.get(key)
        if s is None:
            if pod not in self._pods:
                if len(self._pods) >= self.max_pod_labels:
                    return self.slot(service, route, cluster, OTHER_POD)
                self._pods.add(pod)
            s = self.slots[key] = Slot(key)
        return s

    def inc(self, name: str, labels: Tuple = (), n: float = 1) -> None:
        key = (name, labels)
        self.counters[key] = self.counters.get(key, 0) + n

    def export(self, gauges: Iterable = ()) -> dict:
        """Plain data: counters and gauges as (name, labels, value), slots as lists."""
        return {
            "counters": [(n, list(lb), v) for (n, lb), v in self.counters.items()],
            "gauges": [(n, list(lb), v) for n, lb, v in gauges],
            "slots": [(list(s.labels), [(c, f, n) for (c, f), n in s.codes.items()],
                       list(s.buckets), s.sum_ms) for s in self.slots.values()],
        }


# -- supervisor side: merge and render -------------------------------------------------

def merge(exports: List[dict]) -> dict:
    counters, gauges, slots = {}, {}, {}
    for ex in exports:
        for name, labels, value in ex.get("counters", ()):
            key = (name, tuple(map(tuple, labels)))
            counters[key] = counters.get(key, 0) + value
        for name, labels, value in ex.get("gauges", ()):
            key = (name, tuple(map(tuple, labels)))
            if name in SAME_IN_EVERY_WORKER:
                gauges[key] = max(gauges.get(key, value), value)
            else:
                gauges[key] = gauges.get(key, 0) + value
        for labels, codes, buckets, sum_ms in ex.get("slots", ()):
            key = tuple(labels)
            cur = slots.setdefault(key, [{}, [0] * len(buckets), 0.0])
            for code, flags, n in codes:
                cur[0][(code, flags)] = cur[0].get((code, flags), 0) + n
            cur[1] = [a + b for a, b in zip(cur[1], buckets)]
            cur[2] += sum_ms
    return {"counters": counters, "gauges": gauges, "slots": slots}


def _escape(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def _fmt(value) -> str:
    if isinstance(value, float) and not value.is_integer():
        return repr(value)
    return str(int(value))


def render(merged: dict) -> str:
    """Prometheus text exposition format (version 0.0.4)."""
    out: List[str] = []
    _render_requests(out, merged["slots"])
    for kind, table in (("counter", merged["counters"]), ("gauge", merged["gauges"])):
        by_name: Dict[str, list] = {}
        for (name, labels), value in sorted(table.items()):
            by_name.setdefault(name, []).append((labels, value))
        for name, rows in by_name.items():
            out.append(f"# HELP {name} {HELP.get(name, name.replace('_', ' '))}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(f"{name}{_labels(labels)} {_fmt(value)}" for labels, value in rows)
    return "\n".join(out) + "\n"


def _render_requests(out: List[str], slots: dict) -> None:
    name = "nodemesh_requests_total"
    out += [f"# HELP {name} {HELP[name]}", f"# TYPE {name} counter"]
    for labels, (codes, _, _) in sorted(slots.items()):
        base = list(zip(SLOT_LABELS, labels))
        for (code, flags), n in sorted(codes.items()):
            labels = base + [("response_code", code), ("response_flags", flags)]
            out.append(f"{name}{_labels(labels)} {n}")
    name = "nodemesh_request_duration_milliseconds"
    out += [f"# HELP {name} {HELP[name]}", f"# TYPE {name} histogram"]
    for labels, (_, buckets, sum_ms) in sorted(slots.items()):
        base = list(zip(SLOT_LABELS, labels))
        running = 0
        for bound, n in zip(DURATION_BUCKETS_MS + ("+Inf",), buckets):
            running += n
            out.append(f"{name}_bucket{_labels(base + [('le', bound)])} {running}")
        out.append(f"{name}_sum{_labels(base)} {sum_ms:.3f}")
        out.append(f"{name}_count{_labels(base)} {running}")


def totals(merged: dict) -> dict:
    """Small summary for /stats: requests by response flag, over all slots."""
    by_flag: Dict[str, int] = {}
    total = 0
    for codes, _, _ in merged["slots"].values():
        for (_, flags), n in codes.items():
            by_flag[flags] = by_flag.get(flags, 0) + n
            total += n
    return {"requests": total, "by_response_flags": by_flag}
