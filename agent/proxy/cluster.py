"""A cluster as one worker runs it: hosts, balancer, breakers, outlier, pools, retries.

Every try of a request goes through dispatch(): circuit breaker, host pick,
the host's pool. A try ends in on_response() or on_failure() (or abandon()
on timeout), which give back what the try held and decide on a retry with
the policies module. Circuit-breaker thresholds are split between workers
(each keeps its own counters), so the node as a whole honours the cluster's
limits.
"""

from __future__ import annotations

import math
from dataclasses import fields, replace
from typing import Dict, Optional

from agent.config.model import CircuitBreakers, Cluster, Endpoint

from . import retry as retry_policy
from .circuit import CircuitBreaker
from .hosts import Host, HostSet
from .lb import make_balancer
from .outlier import OutlierDetector
from .pool import HostPool
from .protocols import FLAG_NO_HEALTHY, FLAG_NONE, FLAG_OVERFLOW


MAX_PASSTHROUGH_HOSTS = 4096


def per_worker(thresholds: CircuitBreakers, workers: int) -> CircuitBreakers:
    if workers <= 1:
        return thresholds
    split = lambda n: max(1, math.ceil(n / workers)) if n else 0   # noqa: E731
    return replace(thresholds, max_connections=split(thresholds.max_connections),
                   max_pending_requests=split(thresholds.max_pending_requests),
                   max_requests=split(thresholds.max_requests),
                   max_retries=split(thresholds.max_retries))


_POLICY_FIELDS = tuple(f.name for f in fields(Cluster)
                       if f.name not in ("endpoints", "version", "endpoints_version"))


def _same_policy(a: Cluster, b: Cluster) -> bool:
    """Equal but for endpoints and versions (an EDS update): the balancer stays.
    Field by field, identical objects first: an EDS update shares all the others."""
    for name in _POLICY_FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        if x is not y and x != y:
            return False
    return True


class ClusterRuntime:
    def __init__(self, worker, model: Cluster):
        self.worker = worker
        self.name = model.name
        self.model = model
        self.hosts = HostSet(model)
        self.balancer = make_balancer(model, self.hosts)
        self.outlier = OutlierDetector(model.outlier, self.hosts)
        self.outlier_on = model.outlier is not None
        self.breaker = CircuitBreaker(per_worker(model.circuit_breakers, worker.workers))
        self.pools: Dict[tuple, HostPool] = {}
        self.passthrough: Dict[tuple, Host] = {}     # ORIGINAL_DST hosts by (address, port)
        self.health = None                     # HealthChecker, started by the worker
        self.health_task = None
        self.removed = False
        # Envoy-style counters (exported at scrape time)
        self.cx_total = self.cx_active = self.cx_connect_fail = self.cx_connect_timeout = 0
        self.rq_total = self.rq_active = self.rq_timeout = self.rq_retry = 0
        self.pending_active = self.retries_active = 0
        self.mirrored = 0

    # -- configuration ------------------------------------------------------------------

    def update(self, model: Cluster) -> None:
        """A new version of this cluster: hosts keep their state, pools of hosts that
        stay keep their connections."""
        if model is self.model or model == self.model:
            return
        old = self.model
        self.model = model
        self.hosts.update_cluster(model)
        if model.circuit_breakers is not old.circuit_breakers:
            self.breaker.update(per_worker(model.circuit_breakers, self.worker.workers))
        self.outlier.update(model.outlier)
        self.outlier_on = model.outlier is not None
        if not _same_policy(old, model):
            self.balancer = make_balancer(model, self.hosts)
        self.close_removed_hosts()

    def close_removed_hosts(self) -> None:
        for key, pool in list(self.pools.items()):
            if pool.host not in self.hosts and not self.model.original_dst:
                pool.close()
                if pool.idle:
                    del self.pools[key]

    def close(self) -> None:
        """The cluster left the configuration: in-flight requests finish, then pools close."""
        self.removed = True
        for pool in self.pools.values():
            pool.close()
        if self.health is not None:
            self.health.stop()

    # -- requests -----------------------------------------------------------------------

    def dispatch(self, req) -> None:
        """Send one try of req (or fail it with a local reply)."""
        if not self.breaker.try_acquire("requests", req.count):    # a batch takes count
            self._fail(req, FLAG_OVERFLOW, "overflow", False)
            return
        if self.model.original_dst:
            host = self.original_host(getattr(req.session, "orig_dst", None))
        else:
            host = self.balancer.pick(req.hash_key, req.excluded)
        if host is None:
            self.breaker.release("requests", req.count)
            self._fail(req, FLAG_NO_HEALTHY, "no-host", False)
            return
        req.attempt += 1
        req.host = host
        host.active_requests += req.count
        self.rq_total += req.count
        self.rq_active += 1
        pool = self.pools.get(host)
        if pool is None or pool.identity is not req.chain.identity:
            pool = self._pool(host, req.chain)
        pool.send(req)

    def _pool(self, host, chain) -> HostPool:
        """The pool for a host and a codec; pools[host] holds the one used first (the
        usual single codec per cluster), other codecs are kept under (host, identity)."""
        first = self.pools.get(host)
        if first is None:
            pool = self.pools[host] = HostPool(self, host, chain)
            return pool
        if first.identity == chain.identity:
            return first
        key = (host, chain.identity)
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = HostPool(self, host, chain)
        return pool

    def original_host(self, dst):
        """ORIGINAL_DST (Istio's PassthroughCluster): the address the client dialled."""
        if dst is None:
            return None
        host = self.passthrough.get(dst)
        if host is None:
            if len(self.passthrough) >= MAX_PASSTHROUGH_HOSTS:
                self.passthrough.pop(next(iter(self.passthrough)))
            host = self.passthrough[dst] = Host(Endpoint(dst[0], dst[1]))
        return host

    def send_oneway(self, req) -> bool:
        """Fire and forget (Dubbo/Thrift oneway): a picked host's pool, no slot, no retry."""
        host = self.balancer.pick(req.hash_key)
        if host is None:
            return False
        pool = self._pool(host, req.chain)
        self.rq_total += 1
        return pool.send_oneway(req.data)

    def _end_try(self, req) -> Optional[object]:
        host = req.host
        if host is not None:
            host.active_requests -= req.count
            req.host = None
            self.breaker.release("requests", req.count)
            self.rq_active -= 1
        if req.holds_retry:
            req.holds_retry = False
            self.retries_active -= 1
            self.breaker.release("retries")
        req.conn = None
        return host

    def on_response(self, req, frame, data) -> None:
        host = self._end_try(req)
        traits = req.chain.traits
        failed = traits.can_fail and traits.upstream_failed(frame)
        if host is not None and self.outlier_on:
            self.outlier.report(host, not failed, "error")
        code = traits.response_code(frame)
        if failed and self._retry(req, host, "5xx" if traits.name == "http1" else "error", True):
            return
        req.session.complete(req, frame, data, code, FLAG_NONE)

    def batch_done(self, req, frame, data: bytes) -> None:
        """The last replies of a multiplexed batch (`data`: with the clients' ids; each reply
        was counted and the earlier ones written and seen by outlier detection as they
        came): on_response without the retry decision, which a batch never takes
        (agent.proxy.batch.batchable: no retry policy)."""
        host = self._end_try(req)
        traits = req.chain.traits
        if host is not None and self.outlier_on:
            self.outlier.report(host, not (traits.can_fail and traits.upstream_failed(frame)),
                                "error")
        req.session.complete(req, frame, data, traits.response_code(frame), FLAG_NONE)

    def on_failure(self, req, reason: str, reached: bool, flag: str) -> None:
        """A try failed: connect failure, reset, overflow, garbage; retry or reply."""
        host = self._end_try(req)
        if host is not None and reason in ("reset", "connect-failure"):
            self.outlier.report(host, False, "reset" if reason == "reset" else "error")
        if req.done:
            return
        if self._retry(req, host, reason, reached):
            return
        self._fail(req, flag, reason, reached)

    def abandon(self, req, timed_out: bool = True):
        """Give up the current try (timeout, or the client went away); a timeout
        counts against the host."""
        holder = req.conn
        if holder is not None:
            holder.forget(req)
        host = self._end_try(req)
        if timed_out:
            self.rq_timeout += 1
            if host is not None:
                self.outlier.report(host, False, "timeout")
        return host

    def connect_failed(self, host, timed_out: bool) -> None:
        self.cx_connect_fail += 1
        if timed_out:
            self.cx_connect_timeout += 1
        self.outlier.report(host, False, "timeout" if timed_out else "error")

    def report(self, host, ok: bool, kind: str) -> None:
        self.outlier.report(host, ok, kind)

    def try_timed_out(self, req) -> bool:
        """The route's per_try_timeout passed: give up this try; True if retried."""
        host = self.abandon(req)
        return self._retry(req, host, "timeout", True)

    def _fail(self, req, flag, reason, reached) -> None:
        req.session.fail(req, flag, reason)

    # -- retries ------------------------------------------------------------------------

    def _retry(self, req, host, reason: str, reached: bool) -> bool:
        policy = req.route.retry if req.route is not None else None
        if policy is None or req.mirror:
            return False
        method = None
        if reached and policy.idempotent_methods:
            key = req.chain.traits.method_key
            method = req.frame.metadata.get(key) if key else None
        if not retry_policy.should_retry(policy, attempt=req.attempt, kind=req.kind,
                                         reached_upstream=reached, method=method, reason=reason):
            return False
        cb = self.model.circuit_breakers
        if getattr(cb, "retry_budget_percent", None) is not None:
            budget = retry_policy.RetryBudget(cb.retry_budget_percent,
                                              cb.retry_budget_min_concurrency)
        else:
            budget = retry_policy.RetryBudget(policy.budget_percent, policy.min_retry_concurrency)
        if not budget.can_retry(self.rq_active + self.pending_active, self.retries_active) or \
                not self.breaker.try_acquire("retries"):
            return False
        req.holds_retry = True
        self.retries_active += 1
        self.rq_retry += 1
        req.excluded = (host,) if host is not None else ()
        delay = retry_policy.backoff(req.attempt)
        self.worker.loop.call_later(delay, self._resend, req)
        return True

    def _resend(self, req) -> None:
        if req.done:
            if req.holds_retry:
                req.holds_retry = False
                self.retries_active -= 1
                self.breaker.release("retries")
            return
        now = self.worker.now
        if req.route.retry and req.route.retry.per_try_timeout:
            req.try_deadline = min(req.deadline, now + req.route.retry.per_try_timeout)
        self.dispatch(req)

    # -- introspection ------------------------------------------------------------------

    def gauges(self):
        labels = (("cluster", self.name),)
        b = self.breaker.stats()
        return [
            ("nodemesh_upstream_cx_active", labels, self.cx_active),
            ("nodemesh_upstream_rq_active", labels, self.rq_active),
            ("nodemesh_upstream_rq_pending_active", labels, self.pending_active),
            ("nodemesh_outlier_ejections_active", labels, len(self.outlier.ejected())),
            ("nodemesh_membership_total", labels, len(self.hosts)),
            ("nodemesh_membership_healthy", labels,
             len(self.hosts.available(self.worker.now))),
            ("nodemesh_circuit_breakers_rq_open", labels, b["gauges"]["rq_open"]),
            ("nodemesh_circuit_breakers_cx_open", labels, b["gauges"]["cx_open"]),
        ]

    def counters(self):
        labels = (("cluster", self.name),)
        b = self.breaker.stats()["counters"]
        rows = [("nodemesh_upstream_cx_total", self.cx_total),
                ("nodemesh_upstream_cx_connect_fail_total", self.cx_connect_fail),
                ("nodemesh_upstream_cx_connect_timeout_total", self.cx_connect_timeout),
                ("nodemesh_upstream_rq_total", self.rq_total),
                ("nodemesh_upstream_rq_timeout_total", self.rq_timeout),
                ("nodemesh_upstream_rq_retry_total", self.rq_retry),
                ("nodemesh_mirror_requests_total", self.mirrored),
                ("nodemesh_outlier_ejections_total", self.outlier.counters["ejections_total"])]
        rows += [(f"nodemesh_{name}_total", value) for name, value in b.items()]
        return [(name, labels, value) for name, value in rows]

    def state(self) -> dict:
        """For /clusters: hosts with health, outlier state, load; breakers; pools."""
        now = self.worker.now
        hosts = []
        for h in self.hosts.hosts:
            entry = {"address": f"{h.address}:{h.port}", "weight": h.weight,
                     "priority": h.priority, "locality": h.locality,
                     "eds_healthy": h.endpoint.healthy, "health_ok": h.health_ok,
                     "available": h.available(now), "active_requests": h.active_requests,
                     "connections": h.connections, "outlier": self.outlier.state(h)}
            if self.health is not None:
                entry["health_check"] = self.health.state(h)
            hosts.append(entry)
        return {"name": self.name, "version": self.model.version,
                "lb_policy": self.model.lb_policy, "hosts": hosts,
                "circuit_breakers": self.breaker.stats(), "outlier": self.outlier.stats(),
                "balancer": self.balancer.state(),
                "pools": {f"{p.host.address}:{p.host.port}": p.state()
                          for p in self.pools.values()},
                "requests": {"total": self.rq_total, "active": self.rq_active,
                             "timeouts": self.rq_timeout, "retries": self.rq_retry}}
