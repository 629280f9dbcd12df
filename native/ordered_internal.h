/*
 * The parts of agent.proxy._ordered (native/ordered*.c) share these: the slot
 * offsets resolved by init(), the classes, the interned names, and the small
 * helpers every step uses. Not a public interface (ordered.h describes the
 * module).
 */
#ifndef NODEMESH_ORDERED_INTERNAL_H
#define NODEMESH_ORDERED_INTERNAL_H

#include "ordered.h"

#include <structmember.h>
#include <string.h>

extern PyTypeObject *SessionT, *RequestT, *ConnT, *SlotT, *GateT, *PodT, *HostT, *RouteT;

typedef struct {
    Py_ssize_t worker, chain, http, mux, queue, held, tracked, busy, batch_slot, pod, closed,
        draining, out, marked, close_when_flushed, paused, stop_reading, decoder, fed,
        last_active, processing, deferred, max_held, max_inflight, lean, transport;
} nmo_session_slots;
extern nmo_session_slots nmo_S;        /* Session */
typedef struct {
    Py_ssize_t session, chain, frame, data, route, pod, start, deadline, try_deadline, slot,
        admitted, cluster, attempt, host, conn, sent, done, reply, count, holds_retry,
        close_after, hash_key, excluded;
} nmo_request_slots;
extern nmo_request_slots nmo_R;        /* Request */
typedef struct {
    Py_ssize_t worker, cluster, chain, inflight, busy, depth, mux, http, served, max_requests,
        retiring, out, marked, decoder, stalled, in_ready, closed, pool, last_active, stream_to;
} nmo_conn_slots;
extern nmo_conn_slots nmo_U;           /* UpstreamConn */
extern struct nmo_slot_slots { Py_ssize_t codes, buckets, sum_ms; } nmo_SL;   /* metrics.Slot */
extern struct nmo_gate_slots { Py_ssize_t current, max; } nmo_G;   /* circuit._Gate */
extern struct nmo_pod_slots { Py_ssize_t inflight, count; } nmo_P;   /* fairness._Pod */
extern struct nmo_host_slots { Py_ssize_t active_requests, consecutive_errors; } nmo_H;
extern struct nmo_route_slots { Py_ssize_t single, response_mutations, timeout; } nmo_RT;

extern Py_ssize_t *req_all;      /* every slot of Request (the template's copy) */
extern Py_ssize_t req_nall;
extern PyObject *req_template;    /* a Request as __init__ leaves it */
extern double nmo_bounds[64];         /* metrics._BOUNDS_S */
extern Py_ssize_t nmo_nbounds;
extern PyObject *by_kind_fn, *status_fn, *http_expect_fn, *codec_error;
extern PyTypeObject *SessionExactT;     /* Session itself: subclasses read in Python */
extern nmo_flags nmo_cfg;

/* interned names and constants */
extern PyObject *s_offset, *s_length, *s_data, *s_kind, *s_flags, *s_status, *s_metadata,
    *s_clusters, *s_fairness, *s_breaker, *s_gates, *s_model, *s_original_dst, *s_balancer,
    *s_pick, *s_rq_total, *s_rq_active, *s_pools, *s_identity, *s_ready, *s_dirty,
    *s_flush_scheduled, *s_loop, *s_call_soon, *s_flush, *s_access_log, *s_clock,
    *s_next_roll, *s_pods, *s_inflight, *s_max_inflight, *s_active_pods, *s_admitted,
    *s_untracked, *s_admit, *s_dispatch, *s_send, *s_pool, *s_fail_m, *s_ordered,
    *s_dispatch_lean, *s_fail, *s_pump, *s_unblock, *s_in_flight, *s_close_soon, *s_append,
    *s_popleft, *s_add, *s_outlier_on, *s_traits, *s_can_fail, *s_name, *s_response_code,
    *s_update_busy, *s_requests, *s_request, *s_response, *s_event, *s_ok, *s_dash, *s_http1,
    *s_method_key, *s_head, *s_connect, *s_lo, *s_uh, *s_nohost, *s_busy_set, *s_pending,
    *s_has_room, *s_after_responses, *s_reader, *s_feed, *s_buffered, *s_malformed,
    *s_process, *s_request_m, *s_pause, *s_batch_route, *s_select, *s_get, *s_now, *s_garbage,
    *s_responses_in_order, *s_read_py, *s_empty, *s_write;

extern PyObject *key_cache;       /* code -> (code, "-"), at most MAX_KEYS */
#define MAX_KEYS 4096             /* codes are a few dozen; an upstream inventing more
                                   * gets its keys made per reply past this */

/* What took the C path, for tests and diagnostics (counts()): requests sent down to
 * UpstreamConn.send, replies finished, reads handled whole. */
extern unsigned long long n_sent, n_replied, n_session_reads, n_upstream_reads;


#define GET(o, off) (*(PyObject **)((char *)(o) + (off)))

static inline void put(PyObject *o, Py_ssize_t off, PyObject *v)     /* v: borrowed */
{
    PyObject **p = (PyObject **)((char *)o + off), *old = *p;
    Py_INCREF(v);
    *p = v;
    Py_XDECREF(old);
}

static inline void put_new(PyObject *o, Py_ssize_t off, PyObject *v)  /* v: new ref */
{
    PyObject **p = (PyObject **)((char *)o + off), *old = *p;
    *p = v;
    Py_XDECREF(old);
}

/* A slot that __init__ always sets; NULL only if the Python side changed. */
static inline PyObject *need(PyObject *o, Py_ssize_t off)
{
    PyObject *v = GET(o, off);
    if (v == NULL)
        PyErr_Format(PyExc_RuntimeError, "_ordered: unset slot in %s", Py_TYPE(o)->tp_name);
    return v;
}

static inline int truthy(PyObject *v)
{
    if (v == Py_True) return 1;
    if (v == Py_False || v == Py_None) return 0;
    return PyObject_IsTrue(v);
}

/* 1 when the worker writes an access log (the C path stands aside), 0 if not,
   -1 with an exception set */
static inline int access_logged(PyObject *worker)
{
    PyObject *log = PyObject_GetAttr(worker, s_access_log);
    if (log == NULL)
        return -1;
    int logged = log != Py_None;
    Py_DECREF(log);
    return logged;
}

static inline int as_long(PyObject *v, long *out)
{
    if (v == NULL)
        return -1;
    *out = PyLong_AsLong(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}


/* ordered.c */
int nmo_add_slot(PyObject *o, Py_ssize_t off, long d);
int nmo_add_attr(PyObject *o, PyObject *name, long d);
int nmo_long_attr(PyObject *o, PyObject *name, long *out);
int nmo_call_void(PyObject *r);
double nmo_monotonic(void);
int nmo_mark(PyObject *worker, PyObject *conn, Py_ssize_t marked_off);

/* ordered_send.c */
PyObject *nmo_send_one(PyObject *mod, PyObject *const *args, Py_ssize_t nargs);
PyObject *nmo_requests_gate(PyObject *cluster);   /* the cluster's `requests` gate */
int nmo_gate_release(PyObject *gate);             /* CircuitBreaker.release("requests") */

/* ordered_reply.c */
PyObject *nmo_replies(PyObject *mod, PyObject *const *args, Py_ssize_t nargs);

/* ordered_read.c */
PyObject *nmo_session_read(PyObject *mod, PyObject *const *args, Py_ssize_t nargs);
PyObject *nmo_upstream_read(PyObject *mod, PyObject *const *args, Py_ssize_t nargs);

#endif
