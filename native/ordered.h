/*
 * agent.proxy._ordered: the ordered lean path in C (docs/proxy-performance.md,
 * "The ordered lean path").
 *
 * An ordered request (Redis, HTTP/1.1, a length-field layout without id) on a
 * batchable route, and the replies of an ordered upstream connection, take a
 * fixed chain of small Python methods in agent/proxy: Session._send_one ->
 * dispatch_lean -> PodFairness.admit -> ClusterRuntime.dispatch ->
 * HostPool.send -> UpstreamConn.send on the way out, and
 * UpstreamConn._responses_in_order -> ClusterRuntime.on_response ->
 * Delivery.complete -> Delivery._finish on the way back. This extension does
 * the plain case of each chain in one C call, on the same Python objects: the
 * same Request objects in the same queues and FIFOs, the same counters
 * (Slot, circuit-breaker gates, per-pod fairness, host and cluster counts),
 * updated at the same moments. The Python methods stay the reference: at the
 * first step that is not the plain case (a refusal, a limit, a reply that
 * counts against its host, a retry, a mutation, an access log, a batch, a
 * closed or draining peer, a cache miss) the C code hands over to the Python
 * method that continues from exactly that step, before changing any state of
 * that step. tests/proxy/test_ordered_fast.py drives both with the same byte
 * streams and compares everything they leave behind.
 *
 * Attributes of the proxy's __slots__ classes (Session, Request, UpstreamConn,
 * Slot, the breaker's _Gate, fairness's _Pod, Host, RouteRuntime) are read and
 * written at the offsets of their member descriptors, resolved once by
 * init(); the other objects (Worker, ClusterRuntime, PodFairness, HostPool)
 * through their instance dicts. init() fails (and the proxy keeps the Python
 * path) when a class lacks one of the slots these files use.
 *
 * Bounded: no allocation beyond the objects the Python path allocates, no
 * loop beyond the frames of one read; no limit of its own (the queues are
 * bounded by the session and pool limits the Python path enforces).
 */
#ifndef NODEMESH_ORDERED_H
#define NODEMESH_ORDERED_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* The codec's frame flags the reply side checks (codec.h NM_FRAME_*), given
 * by init() so that this file does not depend on the codec headers. */
typedef struct {
    long keepalive;
    long until_close;
    long upgrade;
    long pause_limits;      /* agent.proxy.delivery.PAUSE_LIMITS */
    long pause_write;       /* agent.proxy.delivery.PAUSE_WRITE */
} nmo_flags;

#endif
