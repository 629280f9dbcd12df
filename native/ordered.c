/* agent.proxy._ordered: the ordered lean path (see ordered.h). */
#include "ordered.h"

#include <structmember.h>
#include <string.h>
#include <time.h>

/* ---- slot offsets ------------------------------------------------------------ */

typedef struct { PyTypeObject *type; const char *name; Py_ssize_t *off; } slot_ref;

static PyTypeObject *SessionT, *RequestT, *ConnT, *SlotT, *GateT, *PodT, *HostT, *RouteT;

static struct {
    Py_ssize_t worker, chain, http, mux, queue, held, tracked, busy, batch_slot, pod, closed,
        draining, out, marked, close_when_flushed, paused, stop_reading, decoder, fed,
        last_active, processing, deferred, max_held, max_inflight, lean, transport;
} S;
static struct {
    Py_ssize_t session, chain, frame, data, route, pod, start, deadline, try_deadline, slot,
        admitted, cluster, attempt, host, conn, sent, done, reply, count, holds_retry,
        close_after, hash_key, excluded;
} R;
static struct {
    Py_ssize_t worker, cluster, chain, inflight, busy, depth, mux, http, served, max_requests,
        retiring, out, marked, decoder, stalled, in_ready, closed, pool, last_active, stream_to;
} U;
static struct { Py_ssize_t codes, buckets, sum_ms; } SL;
static struct { Py_ssize_t current, max; } G;
static struct { Py_ssize_t inflight, count; } P;
static struct { Py_ssize_t active_requests, consecutive_errors; } H;
static struct { Py_ssize_t single, response_mutations, timeout; } RT;

static Py_ssize_t *req_all;      /* every slot of Request (the template's copy) */
static Py_ssize_t req_nall;
static PyObject *req_template;    /* a Request as __init__ leaves it */
static double bounds[64];         /* metrics._BOUNDS_S */
static Py_ssize_t nbounds;
static PyObject *by_kind_fn, *status_fn, *http_expect_fn, *codec_error;
static PyTypeObject *SessionExactT;     /* Session itself: subclasses read in Python */
static nmo_flags flags;

/* interned names and constants */
static PyObject *s_offset, *s_length, *s_data, *s_kind, *s_flags, *s_status, *s_metadata,
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

static PyObject *key_cache;       /* code -> (code, "-"), at most MAX_KEYS */
#define MAX_KEYS 4096             /* codes are a few dozen; an upstream inventing more
                                   * gets its keys made per reply past this */

/* What took the C path, for tests and diagnostics (counts()): requests sent down to
 * UpstreamConn.send, replies finished, reads handled whole. */
static unsigned long long n_sent, n_replied, n_session_reads, n_upstream_reads;

static int resolve(PyTypeObject *tp, const char *name, Py_ssize_t *off)
{
    PyObject *d = PyObject_GetAttrString((PyObject *)tp, name);
    if (d == NULL)
        return -1;
    if (!Py_IS_TYPE(d, &PyMemberDescr_Type) ||
        ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a __slots__ member", tp->tp_name, name);
        Py_DECREF(d);
        return -1;
    }
    *off = ((PyMemberDescrObject *)d)->d_member->offset;
    Py_DECREF(d);
    return 0;
}

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

static inline int as_long(PyObject *v, long *out)
{
    if (v == NULL)
        return -1;
    *out = PyLong_AsLong(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* slot += d (a Python int) */
static int add_slot(PyObject *o, Py_ssize_t off, long d)
{
    long x;
    if (as_long(need(o, off), &x) < 0)
        return -1;
    PyObject *n = PyLong_FromLong(x + d);
    if (n == NULL)
        return -1;
    put_new(o, off, n);
    return 0;
}

/* obj.name += d for an object with an instance dict */
static int add_attr(PyObject *o, PyObject *name, long d)
{
    long x;
    PyObject *v = PyObject_GetAttr(o, name);
    int rc = as_long(v, &x);
    Py_XDECREF(v);
    if (rc < 0)
        return -1;
    PyObject *n = PyLong_FromLong(x + d);
    if (n == NULL)
        return -1;
    rc = PyObject_SetAttr(o, name, n);
    Py_DECREF(n);
    return rc;
}

static int long_attr(PyObject *o, PyObject *name, long *out)
{
    PyObject *v = PyObject_GetAttr(o, name);
    int rc = as_long(v, out);
    Py_XDECREF(v);
    return rc;
}

static int call_void(PyObject *r)
{
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

static double monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);          /* what time.monotonic() reads */
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Worker.mark(conn): conn's writes are flushed at the end of this loop iteration. */
static int mark(PyObject *worker, PyObject *conn, Py_ssize_t marked_off)
{
    int m = truthy(need(conn, marked_off));
    if (m != 0)
        return m < 0 ? -1 : 0;
    put(conn, marked_off, Py_True);
    PyObject *dirty = PyObject_GetAttr(worker, s_dirty);
    if (dirty == NULL)
        return -1;
    int rc = PyList_Append(dirty, conn);
    Py_DECREF(dirty);
    if (rc < 0)
        return -1;
    PyObject *sched = PyObject_GetAttr(worker, s_flush_scheduled);
    if (sched == NULL)
        return -1;
    int on = truthy(sched);
    Py_DECREF(sched);
    if (on != 0)
        return on < 0 ? -1 : 0;
    if (PyObject_SetAttr(worker, s_flush_scheduled, Py_True) < 0)
        return -1;
    PyObject *loop = PyObject_GetAttr(worker, s_loop);
    PyObject *flush = loop ? PyObject_GetAttr(worker, s_flush) : NULL;
    PyObject *r = flush ? PyObject_CallMethodOneArg(loop, s_call_soon, flush) : NULL;
    Py_XDECREF(loop);
    Py_XDECREF(flush);
    return call_void(r);
}

/* ---- the request side --------------------------------------------------------- */

static PyObject *new_request(void)
{
    PyObject *req = RequestT->tp_alloc(RequestT, 0);
    if (req == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < req_nall; i++) {
        PyObject *v = GET(req_template, req_all[i]);
        Py_XINCREF(v);
        *(PyObject **)((char *)req + req_all[i]) = v;
    }
    return req;
}

/* PodFairness.admit(pod, 1) when no decision is near: 1 admitted, 0 refused; the
 * Python method when the window rolls, the pod is new or the limit is near. */
static int fair_admit(PyObject *fairness, PyObject *pod)
{
    PyObject *clock = PyObject_GetAttr(fairness, s_clock);
    PyObject *now = clock ? PyObject_CallNoArgs(clock) : NULL;
    Py_XDECREF(clock);
    if (now == NULL)
        return -1;
    PyObject *roll = PyObject_GetAttr(fairness, s_next_roll);
    int due = roll ? PyObject_RichCompareBool(now, roll, Py_GE) : -1;
    Py_XDECREF(roll);
    Py_DECREF(now);
    if (due < 0)
        return -1;
    PyObject *pods = NULL, *rec = NULL;
    long inflight, max;
    if (!due && (pods = PyObject_GetAttr(fairness, s_pods)) != NULL &&
        long_attr(fairness, s_inflight, &inflight) == 0 &&
        long_attr(fairness, s_max_inflight, &max) == 0 && inflight < max) {
        rec = PyDict_GetItemWithError(pods, pod);
        if (rec != NULL && !Py_IS_TYPE(rec, PodT))
            rec = NULL;
    }
    Py_XDECREF(pods);
    if (PyErr_Occurred())
        return -1;
    if (rec == NULL) {
        PyObject *r = PyObject_CallMethodObjArgs(fairness, s_admit, pod, NULL);
        if (r == NULL)
            return -1;
        int ok = truthy(r);
        Py_DECREF(r);
        return ok;
    }
    long rin;
    if (add_slot(rec, P.count, 1) < 0 || as_long(need(rec, P.inflight), &rin) < 0)
        return -1;
    if (!rin && add_attr(fairness, s_active_pods, 1) < 0)
        return -1;
    PyObject *n = PyLong_FromLong(inflight + 1);      /* (read above: no other change) */
    int rc = n ? PyObject_SetAttr(fairness, s_inflight, n) : -1;
    Py_XDECREF(n);
    if (rc < 0 || add_slot(rec, P.inflight, 1) < 0 || add_attr(fairness, s_admitted, 1) < 0)
        return -1;
    return 1;
}

/* UpstreamConn.send(req) for an ordered connection (always takes it). */
static int conn_send(PyObject *conn, PyObject *req)
{
    PyObject *r = PyObject_CallMethodOneArg(need(conn, U.inflight), s_append, req);
    if (call_void(r) < 0)
        return -1;
    int http = truthy(need(conn, U.http));
    if (http < 0)
        return -1;
    if (http) {       /* _http_expect: a call only when the decoder needs to know */
        long depth;
        if (as_long(need(conn, U.depth), &depth) < 0)
            return -1;
        int call = depth > 1, known = 0;
        PyObject *body = GET(req, R.data);
        if (!call && body != NULL && PyBytes_CheckExact(body) && PyBytes_GET_SIZE(body) > 8) {
            /* the request line's method, as the decoder read it into :method (a request
             * that does not start with it, e.g. after empty lines: the metadata) */
            const char *b = PyBytes_AS_STRING(body);
            if (b[0] >= 'A' && b[0] <= 'Z') {
                known = 1;
                call = memcmp(b, "HEAD ", 5) == 0 || memcmp(b, "CONNECT ", 8) == 0;
            }
        }
        if (!call && !known) {
            PyObject *meta = PyObject_GetAttr(need(req, R.frame), s_metadata);
            if (meta == NULL)
                return -1;
            PyObject *m = PyDict_Check(meta) ? PyDict_GetItemWithError(meta, s_method_key) : NULL;
            call = m != NULL && PyUnicode_Check(m) &&
                (PyUnicode_Compare(m, s_head) == 0 || PyUnicode_Compare(m, s_connect) == 0);
            Py_DECREF(meta);
            if (PyErr_Occurred())
                return -1;
        }
        if (call && call_void(PyObject_CallFunctionObjArgs(http_expect_fn, need(conn, U.decoder),
                                                          GET(req, R.frame), GET(conn, U.depth),
                                                          NULL)) < 0)
            return -1;
    }
    put(req, R.conn, conn);
    put(req, R.sent, Py_True);
    if (add_slot(conn, U.served, 1) < 0)
        return -1;
    long served, max_requests;
    if (as_long(GET(conn, U.served), &served) < 0 ||
        as_long(need(conn, U.max_requests), &max_requests) < 0)
        return -1;
    if (max_requests && served >= max_requests) {
        put(conn, U.retiring, Py_True);
        put(conn, U.busy, Py_True);
    }
    if (PyList_Append(need(conn, U.out), need(req, R.data)) < 0)
        return -1;
    return mark(need(conn, U.worker), conn, U.marked);
}

/* HostPool.send(req): the hottest ready connection when it has room, else Python. */
static int pool_send(PyObject *pool, PyObject *req)
{
    PyObject *ready = PyObject_GetAttr(pool, s_ready);
    if (ready == NULL)
        return -1;
    PyObject *conn = PyList_Check(ready) && PyList_GET_SIZE(ready) ?
        PyList_GET_ITEM(ready, PyList_GET_SIZE(ready) - 1) : NULL;
    int plain = conn != NULL && PyObject_TypeCheck(conn, ConnT);
    long depth = 0, n = 0;
    if (plain) {
        int busy = truthy(need(conn, U.busy)), mux = truthy(need(conn, U.mux));
        if (busy < 0 || mux < 0 || as_long(need(conn, U.depth), &depth) < 0 ||
            (n = PyObject_Length(need(conn, U.inflight))) < 0) {
            Py_DECREF(ready);
            return -1;
        }
        plain = !busy && !mux && n < depth;
    }
    if (!plain) {
        Py_DECREF(ready);
        return call_void(PyObject_CallMethodOneArg(pool, s_send, req));
    }
    Py_INCREF(conn);
    int rc = conn_send(conn, req);
    if (rc == 0) {
        n_sent++;
        int busy = truthy(GET(conn, U.busy));
        if (busy < 0 || (n = PyObject_Length(GET(conn, U.inflight))) < 0)
            rc = -1;
        else if (busy || n >= depth) {
            rc = PyList_SetSlice(ready, PyList_GET_SIZE(ready) - 1, PyList_GET_SIZE(ready), NULL);
            put(conn, U.in_ready, Py_False);
        }
    }
    Py_DECREF(conn);
    Py_DECREF(ready);
    return rc;
}

/* The last breaker's `requests` gate: a CircuitBreaker makes its gates once (update()
 * changes their limits in place), so the pair holds while the breaker lives (held here). */
static PyObject *last_breaker, *last_gate;

static PyObject *requests_gate(PyObject *cluster)
{
    PyObject *breaker = PyObject_GetAttr(cluster, s_breaker);
    if (breaker == NULL)
        return NULL;
    if (breaker == last_breaker) {
        Py_DECREF(breaker);
        return Py_NewRef(last_gate);
    }
    PyObject *gates = PyObject_GetAttr(breaker, s_gates);
    if (gates == NULL) {
        Py_DECREF(breaker);
        return NULL;
    }
    PyObject *gate = PyDict_Check(gates) ? PyDict_GetItemWithError(gates, s_requests) : NULL;
    Py_XINCREF(gate);
    Py_DECREF(gates);
    if (gate != NULL && !Py_IS_TYPE(gate, GateT)) {
        Py_DECREF(gate);
        gate = NULL;
    }
    if (gate == NULL && !PyErr_Occurred())
        PyErr_SetString(PyExc_RuntimeError, "_ordered: no requests gate");
    if (gate != NULL) {
        Py_XSETREF(last_breaker, Py_NewRef(breaker));
        Py_XSETREF(last_gate, Py_NewRef(gate));
    }
    Py_DECREF(breaker);
    return gate;
}

/* CircuitBreaker.release("requests", 1) */
static int gate_release(PyObject *gate)
{
    long cur;
    if (as_long(need(gate, G.current), &cur) < 0)
        return -1;
    PyObject *n = PyLong_FromLong(cur - 1 > 0 ? cur - 1 : 0);
    if (n == NULL)
        return -1;
    put_new(gate, G.current, n);
    return 0;
}

/* ClusterRuntime.dispatch(req) for a request of count 1. */
static int cluster_dispatch(PyObject *cluster, PyObject *req)
{
    PyObject *gate = requests_gate(cluster);
    if (gate == NULL)
        return -1;
    long cur, max;
    PyObject *model = NULL, *odst = NULL;
    int plain = as_long(need(gate, G.current), &cur) == 0 && as_long(need(gate, G.max), &max) == 0;
    if (plain && cur + 1 <= max && (model = PyObject_GetAttr(cluster, s_model)) != NULL &&
        (odst = PyObject_GetAttr(model, s_original_dst)) != NULL)
        plain = !truthy(odst);
    else
        plain = 0;
    Py_XDECREF(model);
    Py_XDECREF(odst);
    if (PyErr_Occurred()) {
        Py_DECREF(gate);
        return -1;
    }
    if (!plain) {      /* overflow, ORIGINAL_DST: the Python method decides */
        Py_DECREF(gate);
        return call_void(PyObject_CallMethodOneArg(cluster, s_dispatch, req));
    }
    PyObject *n = PyLong_FromLong(cur + 1);
    if (n == NULL) {
        Py_DECREF(gate);
        return -1;
    }
    put_new(gate, G.current, n);
    PyObject *balancer = PyObject_GetAttr(cluster, s_balancer);
    PyObject *host = balancer ? PyObject_CallMethodObjArgs(balancer, s_pick, need(req, R.hash_key),
                                                          need(req, R.excluded), NULL) : NULL;
    Py_XDECREF(balancer);
    if (host == NULL) {
        Py_DECREF(gate);
        return -1;
    }
    if (host == Py_None) {
        Py_DECREF(host);
        int rc = gate_release(gate);
        Py_DECREF(gate);
        if (rc < 0)
            return -1;
        return call_void(PyObject_CallMethodObjArgs(cluster, s_fail_m, req, s_uh, s_nohost,
                                                    Py_False, NULL));
    }
    Py_DECREF(gate);
    int rc = -1;
    PyObject *pools = NULL, *pool = NULL, *chain = GET(req, R.chain);
    if (!PyObject_TypeCheck(host, HostT)) {
        PyErr_SetString(PyExc_TypeError, "_ordered: the balancer picked a non-Host");
        goto out;
    }
    if (add_slot(req, R.attempt, 1) < 0)
        goto out;
    put(req, R.host, host);
    if (add_slot(host, H.active_requests, 1) < 0 || add_attr(cluster, s_rq_total, 1) < 0 ||
        add_attr(cluster, s_rq_active, 1) < 0)
        goto out;
    if ((pools = PyObject_GetAttr(cluster, s_pools)) == NULL)
        goto out;
    pool = PyDict_Check(pools) ? PyDict_GetItemWithError(pools, host) : NULL;
    Py_XINCREF(pool);
    if (PyErr_Occurred())
        goto out;
    if (pool != NULL) {
        PyObject *a = PyObject_GetAttr(pool, s_identity);
        PyObject *b = a ? PyObject_GetAttr(chain, s_identity) : NULL;
        int same = a != NULL && a == b;
        Py_XDECREF(a);
        Py_XDECREF(b);
        if (PyErr_Occurred())
            goto out;
        if (!same)
            Py_CLEAR(pool);
    }
    if (pool == NULL &&
        (pool = PyObject_CallMethod(cluster, "_pool", "OO", host, chain)) == NULL)
        goto out;
    rc = pool_send(pool, req);
out:
    Py_XDECREF(pool);
    Py_XDECREF(pools);
    Py_DECREF(host);
    return rc;
}

/* Session.dispatch_lean(req, route, 1) */
static int dispatch_lean(PyObject *session, PyObject *req, PyObject *route)
{
    PyObject *cached = need(session, S.batch_slot), *worker = need(session, S.worker);
    if (cached == NULL || worker == NULL)
        return -1;
    PyObject *clusters = NULL, *cluster = NULL, *fairness = NULL;
    int plain = PyTuple_Check(cached) && PyTuple_GET_SIZE(cached) == 2 &&
        PyTuple_GET_ITEM(cached, 0) == route;
    if (plain) {     /* the cluster first: its lookup changes nothing, admit() does */
        clusters = PyObject_GetAttr(worker, s_clusters);
        cluster = clusters && PyDict_Check(clusters) ?
            PyDict_GetItemWithError(clusters, need(route, RT.single)) : NULL;
        Py_XINCREF(cluster);
        Py_XDECREF(clusters);
        if (PyErr_Occurred())
            return -1;
        plain = cluster != NULL;
    }
    if (!plain) {    /* another route's slot, no such cluster: the Python method */
        Py_XDECREF(cluster);
        return call_void(PyObject_CallMethod(session, "dispatch_lean", "OOi", req, route, 1));
    }
    put(req, R.slot, PyTuple_GET_ITEM(cached, 1));
    int rc = -1;
    if ((fairness = PyObject_GetAttr(worker, s_fairness)) == NULL)
        goto out;
    int ok = fair_admit(fairness, need(session, S.pod));
    if (ok < 0)
        goto out;
    if (!ok) {
        rc = call_void(PyObject_CallMethodObjArgs(session, s_fail, req, s_lo, NULL));
        goto out;
    }
    put(req, R.admitted, Py_True);
    put(req, R.cluster, cluster);
    rc = cluster_dispatch(cluster, req);
out:
    Py_XDECREF(fairness);
    Py_DECREF(cluster);
    return rc;
}

/* send_one(session, frame, now, route, data, fed): Session._send_one. */
static PyObject *send_one(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "send_one(session, frame, now, route, data, fed)");
        return NULL;
    }
    PyObject *session = args[0], *frame = args[1], *now = args[2], *route = args[3],
        *data = args[4], *fed = args[5];
    if (!PyObject_TypeCheck(session, SessionT) || !PyObject_TypeCheck(route, RouteT)) {
        PyErr_SetString(PyExc_TypeError, "send_one: a Session and a RouteRuntime");
        return NULL;
    }
    PyObject *body = NULL;
    if (data != Py_None) {
        PyObject *off = PyObject_GetAttr(frame, s_offset);
        PyObject *len = off ? PyObject_GetAttr(frame, s_length) : NULL;
        Py_ssize_t n = len ? PyObject_Length(data) : -1;
        int whole = 0;
        if (n >= 0) {
            int a = PyObject_RichCompareBool(off, fed, Py_EQ);
            whole = a > 0 && PyLong_AsSsize_t(len) == n;
        }
        Py_XDECREF(off);
        Py_XDECREF(len);
        if (PyErr_Occurred())
            return NULL;
        if (whole) {
            body = data;
            Py_INCREF(body);
        }
    }
    if (body == NULL && (body = PyObject_GetAttr(frame, s_data)) == NULL)
        return NULL;
    Py_ssize_t nbody = PyObject_Length(body);
    PyObject *req = nbody < 0 ? NULL : new_request();
    PyObject *deadline = req ? PyNumber_Add(now, need(route, RT.timeout)) : NULL;
    if (deadline == NULL) {
        Py_DECREF(body);
        Py_XDECREF(req);
        return NULL;
    }
    put(req, R.session, session);
    put(req, R.chain, need(session, S.chain));
    put(req, R.frame, frame);
    put_new(req, R.data, body);
    put(req, R.route, route);
    put(req, R.pod, need(session, S.pod));
    put(req, R.start, now);
    put(req, R.deadline, deadline);
    put_new(req, R.try_deadline, deadline);
    int rc = -1;
    if (add_slot(session, S.held, nbody) < 0 || add_slot(session, S.tracked, 1) < 0)
        goto out;
    PyObject *queue = need(session, S.queue);
    if (queue == NULL)
        goto out;
    if (!PyList_CheckExact(queue)) {
        PyObject *q = PyObject_CallMethodNoArgs(session, s_ordered);
        if (q == NULL)
            goto out;
        Py_DECREF(q);
        queue = GET(session, S.queue);
    }
    if (PyList_Append(queue, req) < 0)
        goto out;
    int busy = truthy(need(session, S.busy));
    if (busy < 0)
        goto out;
    if (!busy) {
        put(session, S.busy, Py_True);
        PyObject *set = PyObject_GetAttr(GET(session, S.worker), s_busy_set);
        int r = set ? PySet_Add(set, session) : -1;
        Py_XDECREF(set);
        if (r < 0)
            goto out;
    }
    rc = dispatch_lean(session, req, route);
out:
    Py_DECREF(req);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* ---- the reply side ----------------------------------------------------------- */

static Py_ssize_t bucket_of(double seconds)
{
    Py_ssize_t lo = 0, hi = nbounds;          /* bisect_left(_BOUNDS_S, seconds) */
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (bounds[mid] < seconds)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Slot.observe(code, "-", seconds) */
static int observe(PyObject *slot, PyObject *code, double seconds)
{
    PyObject *owned = NULL, *key = PyDict_GetItemWithError(key_cache, code);
    if (key == NULL) {           /* a new code: its key, kept while the cache has room */
        if (PyErr_Occurred() || (owned = PyTuple_Pack(2, code, s_dash)) == NULL)
            return -1;
        if (PyDict_GET_SIZE(key_cache) < MAX_KEYS &&
            PyDict_SetItem(key_cache, code, owned) < 0) {
            Py_DECREF(owned);
            return -1;
        }
        key = owned;
    }
    int rc = -1;
    PyObject *codes = need(slot, SL.codes), *buckets = need(slot, SL.buckets);
    PyObject *sum = need(slot, SL.sum_ms), *n;
    if (codes == NULL || buckets == NULL || sum == NULL || !PyDict_Check(codes) ||
        !PyList_Check(buckets) || PyList_GET_SIZE(buckets) != nbounds + 1) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "_ordered: a Slot of another shape");
        goto out;
    }
    long c = 0;
    PyObject *have = PyDict_GetItemWithError(codes, key);
    if ((have == NULL && PyErr_Occurred()) || (have != NULL && as_long(have, &c) < 0))
        goto out;
    if ((n = PyLong_FromLong(c + 1)) == NULL)
        goto out;
    int set = PyDict_SetItem(codes, key, n);
    Py_DECREF(n);
    if (set < 0)
        goto out;
    Py_ssize_t b = bucket_of(seconds);
    if (as_long(PyList_GET_ITEM(buckets, b), &c) < 0 || (n = PyLong_FromLong(c + 1)) == NULL)
        goto out;
    PyList_SetItem(buckets, b, n);
    double s = PyFloat_AsDouble(sum);
    if ((s == -1.0 && PyErr_Occurred()) || (n = PyFloat_FromDouble(s + seconds * 1000.0)) == NULL)
        goto out;
    put_new(slot, SL.sum_ms, n);
    rc = 0;
out:
    Py_XDECREF(owned);
    return rc;
}

/* PodFairness.done(pod, 1) */
static int fair_done(PyObject *fairness, PyObject *pod)
{
    PyObject *pods = PyObject_GetAttr(fairness, s_pods);
    if (pods == NULL)
        return -1;
    PyObject *rec = PyDict_Check(pods) ? PyDict_GetItemWithError(pods, pod) : NULL;
    Py_XINCREF(rec);
    Py_DECREF(pods);
    if (rec == NULL && (PyErr_Occurred() || (rec = PyObject_GetAttr(fairness, s_untracked)) == NULL))
        return -1;
    long in;
    int rc = -1;
    if (!Py_IS_TYPE(rec, PodT)) {
        PyErr_SetString(PyExc_TypeError, "_ordered: a fairness record of another type");
        goto out;
    }
    if (as_long(need(rec, P.inflight), &in) < 0)
        goto out;
    rc = 0;
    if (in <= 0)
        goto out;
    rc = -1;
    if (add_slot(rec, P.inflight, -1) < 0 || add_attr(fairness, s_inflight, -1) < 0)
        goto out;
    if (in == 1 && add_attr(fairness, s_active_pods, -1) < 0)
        goto out;
    rc = 0;
out:
    Py_DECREF(rec);
    return rc;
}

/* Delivery._finish(req, data, code, "-") for an ordered session, count 1. */
static int finish(PyObject *session, PyObject *req, PyObject *data, PyObject *code)
{
    put(req, R.done, Py_True);
    double now = monotonic(), start = PyFloat_AsDouble(need(req, R.start));
    if (start == -1.0 && PyErr_Occurred())
        return -1;
    PyObject *slot = need(req, R.slot), *worker = need(session, S.worker);
    if (slot == NULL || worker == NULL)
        return -1;
    if (slot != Py_None) {
        if (!Py_IS_TYPE(slot, SlotT)) {
            PyErr_SetString(PyExc_TypeError, "_ordered: a metrics slot of another type");
            return -1;
        }
        if (observe(slot, code, now - start) < 0)
            return -1;
    }
    int admitted = truthy(need(req, R.admitted));
    if (admitted < 0)
        return -1;
    if (admitted) {
        put(req, R.admitted, Py_False);
        PyObject *fairness = PyObject_GetAttr(worker, s_fairness);
        int rc = fairness ? fair_done(fairness, need(req, R.pod)) : -1;
        Py_XDECREF(fairness);
        if (rc < 0)
            return -1;
    }
    Py_ssize_t nreq = PyObject_Length(need(req, R.data)), nrep = PyObject_Length(data);
    if (nreq < 0 || nrep < 0 || add_slot(session, S.held, -nreq) < 0)
        return -1;
    int closed = truthy(need(session, S.closed));
    if (closed != 0)
        return closed < 0 ? -1 : 0;
    put(req, R.reply, data);
    if (add_slot(session, S.held, nrep) < 0)
        return -1;
    PyObject *q = need(session, S.queue);
    int close_after = truthy(need(req, R.close_after)), draining = truthy(need(session, S.draining));
    if (q == NULL || close_after < 0 || draining < 0)
        return -1;
    if (PyList_CheckExact(q) && PyList_GET_SIZE(q) == 1 && PyList_GET_ITEM(q, 0) == req &&
        !close_after && !draining) {
        if (PyList_SetSlice(q, 0, 1, NULL) < 0 || add_slot(session, S.tracked, -1) < 0)
            return -1;
        PyObject *out = need(session, S.out);
        int cwf = truthy(need(session, S.close_when_flushed));
        int marked = truthy(need(session, S.marked));
        if (out == NULL || cwf < 0 || marked < 0)
            return -1;
        if (nrep && !cwf && !marked && PyList_CheckExact(out) && !PyList_GET_SIZE(out)) {
            /* Nothing else is owed to this client in this loop iteration: the reply
             * goes to the transport now, as Delivery.flush would write it at the end
             * of the iteration (the same bytes, the same one write). */
            if (add_slot(session, S.held, -nrep) < 0 ||
                call_void(PyObject_CallMethodOneArg(need(session, S.transport), s_write,
                                                    data)) < 0)
                return -1;
        } else {
            if (nrep && PyList_Append(out, data) < 0)
                return -1;
            if ((PyObject_Length(out) > 0 || cwf) && mark(worker, session, S.marked) < 0)
                return -1;
        }
    } else if (call_void(PyObject_CallMethodNoArgs(session, s_pump)) < 0) {
        return -1;
    }
    long paused;
    if (as_long(need(session, S.paused), &paused) < 0)
        return -1;
    if ((paused & flags.pause_limits) &&
        call_void(PyObject_CallMethodNoArgs(session, s_unblock)) < 0)
        return -1;
    if ((draining = truthy(GET(session, S.draining))) < 0)
        return -1;
    if (draining) {
        PyObject *busy = PyObject_CallMethodNoArgs(session, s_in_flight);
        int b = busy ? truthy(busy) : -1;
        Py_XDECREF(busy);
        if (b < 0 || (!b && call_void(PyObject_CallMethodNoArgs(session, s_close_soon)) < 0))
            return -1;
    }
    return 0;
}

/* str(status), the usual statuses made once */
static PyObject *status_texts[600];

static PyObject *status_text(PyObject *status)
{
    long st = PyLong_Check(status) ? PyLong_AsLong(status) : -1;
    if (st == -1 && PyErr_Occurred())
        PyErr_Clear();
    if (st < 100 || st >= 600)
        return PyObject_Str(status);
    if (status_texts[st] == NULL && (status_texts[st] = PyObject_Str(status)) == NULL)
        return NULL;
    return Py_NewRef(status_texts[st]);
}

/* The response code of an ordered reply (Traits.response_code), or NULL: not known here. */
static PyObject *response_code(PyObject *traits, PyObject *frame, PyObject *kind)
{
    PyObject *fn = PyObject_GetAttr(traits, s_response_code);
    if (fn == NULL)
        return NULL;
    PyObject *code = NULL;
    if (fn == by_kind_fn) {
        code = PyUnicode_Compare(kind, s_response) == 0 ? s_ok : kind;
        Py_INCREF(code);
    } else if (fn == status_fn) {
        PyObject *status = PyObject_GetAttr(frame, s_status);
        code = status ? status_text(status) : NULL;
        Py_XDECREF(status);
    } else if (!PyErr_Occurred()) {
        code = Py_None;          /* another function: the Python path */
        Py_INCREF(code);
    }
    Py_DECREF(fn);
    return code;
}

/* Traits.can_fail and whether the traits are HTTP's; kept for the last traits (a
 * frozen dataclass: they cannot change while it lives, and it is held here). */
static PyObject *last_traits;
static int last_can_fail, last_is_http;

static int traits_of(PyObject *traits, int *can_fail, int *is_http)
{
    if (traits != last_traits) {
        PyObject *can = PyObject_GetAttr(traits, s_can_fail);
        int c = can ? truthy(can) : -1;
        Py_XDECREF(can);
        PyObject *name = c < 0 ? NULL : PyObject_GetAttr(traits, s_name);
        int h = name ? PyObject_RichCompareBool(name, s_http1, Py_EQ) : -1;
        Py_XDECREF(name);
        if (h < 0)
            return -1;
        Py_XSETREF(last_traits, Py_NewRef(traits));
        last_can_fail = c;
        last_is_http = h;
    }
    *can_fail = last_can_fail;
    *is_http = last_is_http;
    return 0;
}

/* May the C path take this reply for req? 1 yes, 0 no (the Python path), -1 error.
 * Nothing is changed here: the Python path starts from the same state. */
static int plain_reply(PyObject *conn, PyObject *req, PyObject *frame, int http, PyObject **code)
{
    PyObject *session = need(req, R.session);
    if (session == NULL)
        return -1;
    if (!PyObject_TypeCheck(session, SessionT))      /* a mirrored copy's sink */
        return 0;
    long count;
    if (as_long(need(req, R.count), &count) < 0)
        return -1;
    int retry = truthy(need(req, R.holds_retry)), mux = truthy(need(session, S.mux));
    if (retry < 0 || mux < 0)
        return -1;
    if (count != 1 || retry || mux)
        return 0;
    PyObject *chain = need(req, R.chain), *route = need(req, R.route);
    if (chain == NULL || route == NULL)
        return -1;
    PyObject *traits = PyObject_GetAttr(chain, s_traits);
    if (traits == NULL)
        return -1;
    int rc = -1, can_fail, is_http;
    PyObject *kind = NULL;
    if (traits_of(traits, &can_fail, &is_http) < 0)
        goto out;
    if (can_fail) {      /* ordered protocols that can fail: HTTP (5xx) */
        if (!is_http) {
            rc = 0;
            goto out;
        }
        long status;
        PyObject *st = PyObject_GetAttr(frame, s_status);
        int r = as_long(st, &status);
        Py_XDECREF(st);
        if (r < 0)
            goto out;
        if (status >= 500) {     /* outlier detection and retries see it now, in Python */
            rc = 0;
            goto out;
        }
    }
    if (http && route != Py_None && PyObject_TypeCheck(route, RouteT)) {
        int mut = truthy(need(route, RT.response_mutations));
        if (mut != 0) {
            rc = mut < 0 ? -1 : 0;
            goto out;
        }
    } else if (http) {
        rc = 0;
        goto out;
    }
    if ((kind = PyObject_GetAttr(frame, s_kind)) == NULL ||
        (*code = response_code(traits, frame, kind)) == NULL)
        goto out;
    if (*code == Py_None) {
        Py_CLEAR(*code);
        rc = 0;
        goto out;
    }
    rc = 1;
out:
    Py_XDECREF(kind);
    Py_DECREF(traits);
    return rc;
}

/* ClusterRuntime.on_response(req, frame, data) for a reply that did not fail, then
 * Delivery.complete and _finish. */
static int respond(PyObject *conn, PyObject *req, PyObject *frame, PyObject *code)
{
    PyObject *cluster = need(conn, U.cluster), *session = GET(req, R.session);
    if (cluster == NULL)
        return -1;
    put(req, R.conn, Py_None);
    PyObject *host = need(req, R.host);      /* ClusterRuntime._end_try */
    if (host == NULL)
        return -1;
    Py_INCREF(host);
    int rc = -1;
    if (host != Py_None) {
        if (!PyObject_TypeCheck(host, HostT)) {
            PyErr_SetString(PyExc_TypeError, "_ordered: a host of another type");
            goto out;
        }
        if (add_slot(host, H.active_requests, -1) < 0)
            goto out;
        put(req, R.host, Py_None);
        PyObject *gate = requests_gate(cluster);
        int r = gate ? gate_release(gate) : -1;
        Py_XDECREF(gate);
        if (r < 0 || add_attr(cluster, s_rq_active, -1) < 0)
            goto out;
        PyObject *on = PyObject_GetAttr(cluster, s_outlier_on);
        int outlier = on ? truthy(on) : -1;
        Py_XDECREF(on);
        if (outlier < 0)
            goto out;
        if (outlier) {           /* OutlierDetector.report(host, ok=True) */
            PyObject *zero = PyLong_FromLong(0);
            if (zero == NULL)
                goto out;
            put_new(host, H.consecutive_errors, zero);
        }
    }
    PyObject *data = PyObject_GetAttr(frame, s_data);
    if (data == NULL)
        goto out;
    rc = finish(session, req, data, code);
    Py_DECREF(data);
out:
    Py_DECREF(host);
    return rc;
}

/* UpstreamConn._after_responses, for a connection still open: back into its pool's
 * `ready` when it has room (HostPool.has_room with no request pending), the Python
 * methods otherwise. */
static int after_responses(PyObject *conn, Py_ssize_t left)
{
    int closed = truthy(need(conn, U.closed)), retiring = truthy(need(conn, U.retiring));
    int busy = truthy(need(conn, U.busy)), in_ready = truthy(need(conn, U.in_ready));
    long depth;
    if (closed < 0 || retiring < 0 || busy < 0 || in_ready < 0 ||
        as_long(need(conn, U.depth), &depth) < 0)
        return -1;
    if (closed)
        return 0;
    if (retiring)            /* close when empty: the Python method */
        return call_void(PyObject_CallMethodNoArgs(conn, s_after_responses));
    if (busy || left >= depth)          /* no room */
        return 0;
    PyObject *pool = need(conn, U.pool);
    PyObject *pending = pool ? PyObject_GetAttr(pool, s_pending) : NULL;
    Py_ssize_t waiting = pending ? PyObject_Length(pending) : -1;
    Py_XDECREF(pending);
    if (waiting < 0)
        return -1;
    if (waiting)
        return call_void(PyObject_CallMethodOneArg(pool, s_has_room, conn));
    if (in_ready)
        return 0;
    PyObject *ready = PyObject_GetAttr(pool, s_ready);
    int rc = ready ? PyList_Append(ready, conn) : -1;
    Py_XDECREF(ready);
    if (rc == 0)
        put(conn, U.in_ready, Py_True);
    return rc;
}

/* replies(conn, frames) -> i: UpstreamConn._responses_in_order for frames[:i]; the
 * caller gives frames[i:] to the Python method (i == len(frames): all done here,
 * including the stalled check at its end and UpstreamConn._after_responses). */
static PyObject *replies(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyObject_TypeCheck(args[0], ConnT) || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "replies(conn, frames: list)");
        return NULL;
    }
    PyObject *conn = args[0], *frames = args[1];
    PyObject *inflight = need(conn, U.inflight), *worker = need(conn, U.worker);
    if (inflight == NULL || worker == NULL)
        return NULL;
    PyObject *log = PyObject_GetAttr(worker, s_access_log);
    if (log == NULL)
        return NULL;
    int logged = log != Py_None;
    Py_DECREF(log);
    int http = truthy(need(conn, U.http)), mux = truthy(need(conn, U.mux));
    if (http < 0 || mux < 0)
        return NULL;
    Py_ssize_t i = 0, n = PyList_GET_SIZE(frames);
    if (logged || mux)
        return PyLong_FromSsize_t(0);
    Py_INCREF(inflight);
    for (; i < n; i++) {
        PyObject *frame = PyList_GET_ITEM(frames, i), *code = NULL;
        PyObject *kind = PyObject_GetAttr(frame, s_kind);
        if (kind == NULL)
            goto error;
        int event = PyUnicode_Check(kind) && PyUnicode_Compare(kind, s_event) == 0;
        Py_DECREF(kind);
        Py_ssize_t left = PyObject_Length(inflight);
        if (left < 0)
            goto error;
        if (event || !left)
            break;
        PyObject *req = PySequence_GetItem(inflight, 0);
        if (req == NULL)
            goto error;
        if (!Py_IS_TYPE(req, RequestT)) {
            Py_DECREF(req);
            break;
        }
        if (http) {          /* closing or streaming replies: the Python path */
            PyObject *f = PyObject_GetAttr(frame, s_flags);
            long fl;
            int r = as_long(f, &fl);
            Py_XDECREF(f);
            if (r < 0) {
                Py_DECREF(req);
                goto error;
            }
            if (!(fl & flags.keepalive) || (fl & flags.until_close)) {
                Py_DECREF(req);
                break;
            }
        }
        long count;
        int done = truthy(need(req, R.done));
        if (done < 0 || as_long(need(req, R.count), &count) < 0) {
            Py_DECREF(req);
            goto error;
        }
        int ok = count != 1 ? 0 : done ? 1 : plain_reply(conn, req, frame, http, &code);
        if (ok <= 0) {
            Py_DECREF(req);
            if (ok < 0)
                goto error;
            break;
        }
        PyObject *gone = PyObject_CallMethodNoArgs(inflight, s_popleft);
        int rc = gone == NULL ? -1 : done ? 0 : respond(conn, req, frame, code);
        n_replied += rc == 0 && !done;
        Py_XDECREF(gone);
        Py_XDECREF(code);
        Py_DECREF(req);
        if (rc < 0)
            goto error;
    }
    if (i == n) {            /* the end of _responses_in_order */
        int stalled = truthy(need(conn, U.stalled));
        Py_ssize_t left = PyObject_Length(inflight);
        if (stalled < 0 || left < 0)
            goto error;
        if (stalled && !left) {
            put(conn, U.stalled, Py_False);
            if (call_void(PyObject_CallMethodNoArgs(conn, s_update_busy)) < 0)
                goto error;
        }
        if (after_responses(conn, left) < 0)
            goto error;
    }
    Py_DECREF(inflight);
    return PyLong_FromSsize_t(i);
error:
    Py_DECREF(inflight);
    return NULL;
}

/* ---- whole reads ---------------------------------------------------------------- */

static int long_slot(PyObject *o, Py_ssize_t off, long *out)
{
    return as_long(need(o, off), out);
}

/* The limits Session._process checks before each frame: 1 when one is reached. */
static int session_full(PyObject *session)
{
    long paused, held, max_held, tracked, max_inflight;
    if (long_slot(session, S.paused, &paused) < 0 || long_slot(session, S.held, &held) < 0 ||
        long_slot(session, S.max_held, &max_held) < 0 ||
        long_slot(session, S.tracked, &tracked) < 0 ||
        long_slot(session, S.max_inflight, &max_inflight) < 0)
        return -1;
    return (paused & flags.pause_write) || held > max_held || tracked >= max_inflight;
}

/* The route a single request frame takes in C (a new reference), None when it takes
 * Session._request with that route, NULL + no error when it takes Session._process. */
static PyObject *single_route(PyObject *session, PyObject *frame, PyObject *worker)
{
    PyObject *chain = need(session, S.chain);
    if (chain == NULL)
        return NULL;
    PyObject *log = PyObject_GetAttr(worker, s_access_log);
    if (log == NULL)
        return NULL;
    int logged = log != Py_None;
    Py_DECREF(log);
    int mux = truthy(need(session, S.mux)), http = truthy(need(session, S.http));
    if (logged || mux || http < 0 || mux < 0)
        return NULL;
    if (http) {                 /* a plain keep-alive request: no close, no upgrade */
        long fl;
        PyObject *f = PyObject_GetAttr(frame, s_flags);
        int r = as_long(f, &fl);
        Py_XDECREF(f);
        if (r < 0 || (fl & (flags.keepalive | flags.upgrade)) != flags.keepalive)
            return NULL;
    }
    PyObject *route = PyObject_GetAttr(chain, s_batch_route);
    if (route == NULL || route != Py_None)
        return route;
    Py_DECREF(route);
    PyObject *lean = need(session, S.lean);     /* a route table: select, then lean? */
    if (lean == NULL || lean == Py_None || !PyDict_Check(lean))
        return NULL;
    route = PyObject_CallMethodOneArg(chain, s_select, frame);
    if (route == NULL || route == Py_None)
        return route;
    PyObject *ok = PyDict_GetItemWithError(lean, route);
    int yes = ok != NULL && truthy(ok) > 0;
    if (PyErr_Occurred()) {
        Py_DECREF(route);
        return NULL;
    }
    if (!yes) {
        PyObject *full = PyTuple_Pack(2, Py_None, route);   /* (None, route): _request */
        Py_DECREF(route);
        return full;
    }
    return route;
}

/* Session._process for one request frame, in C; 0 when it is not the plain case
 * (nothing done: the caller runs Session._process). */
static int process_one(PyObject *session, PyObject *frames, PyObject *now, PyObject *data,
                       PyObject *fed)
{
    if (PyList_GET_SIZE(frames) != 1 || !Py_IS_TYPE(session, SessionExactT))
        return 0;
    PyObject *frame = PyList_GET_ITEM(frames, 0), *deferred = need(session, S.deferred);
    PyObject *worker = need(session, S.worker);
    if (deferred == NULL || worker == NULL)
        return -1;
    PyObject *kind = PyObject_GetAttr(frame, s_kind);
    if (kind == NULL)
        return -1;
    int request = PyUnicode_Check(kind) && PyUnicode_Compare(kind, s_request) == 0;
    Py_DECREF(kind);
    int stop = truthy(need(session, S.stop_reading)), full = session_full(session);
    if (stop < 0 || full < 0)
        return -1;
    if (!request || stop || full || deferred != Py_None)
        return 0;
    PyObject *route = single_route(session, frame, worker);
    if (route == NULL)
        return PyErr_Occurred() ? -1 : 0;
    put(session, S.processing, Py_True);
    PyObject *r;
    if (PyTuple_Check(route))       /* a route that is not lean: the full path */
        r = PyObject_CallMethod(session, "_request", "OOOO", frame, now, Py_False,
                                PyTuple_GET_ITEM(route, 1));
    else if (route == Py_None)
        r = PyObject_CallMethod(session, "_request", "OOOO", frame, now, Py_False, Py_None);
    else {
        PyObject *args[6] = {session, frame, now, route, data, fed};
        r = send_one(NULL, args, 6);
    }
    put(session, S.processing, Py_False);
    Py_DECREF(route);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    if ((deferred = need(session, S.deferred)) == NULL || (full = session_full(session)) < 0)
        return -1;
    if (deferred != Py_None || full)
        return call_void(PyObject_CallMethod(session, "_pause", "l", flags.pause_limits)) < 0
            ? -1 : 1;
    return 1;
}

/* session_read(session, data): Session.data_received (its Python body, _read_py, for a
 * session with no decoder yet: the decoder pool is Python's). */
static PyObject *session_read(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyObject_TypeCheck(args[0], SessionT)) {
        PyErr_SetString(PyExc_TypeError, "session_read(session, data)");
        return NULL;
    }
    PyObject *session = args[0], *data = args[1];
    int stop = truthy(need(session, S.stop_reading));
    if (stop != 0)
        return stop < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *dec = need(session, S.decoder);
    if (dec == NULL)
        return NULL;
    if (dec == Py_None)
        return PyObject_CallMethodOneArg(session, s_read_py, data);
    PyObject *reader = PyObject_GetAttr(dec, s_reader);
    if (reader == NULL)
        return NULL;
    PyObject *before = PyObject_GetAttr(reader, s_buffered), *fed = need(session, S.fed);
    Py_ssize_t n = PyObject_Length(data);
    long fed_n;
    if (before == NULL || n < 0 || as_long(fed, &fed_n) < 0) {
        Py_XDECREF(before);
        Py_DECREF(reader);
        return NULL;
    }
    Py_INCREF(fed);
    PyObject *rc = NULL, *frames = NULL, *now = NULL, *total = PyLong_FromLong(fed_n + n);
    if (total == NULL)
        goto out;
    put_new(session, S.fed, total);
    frames = PyObject_CallMethodOneArg(reader, s_feed, data);
    if (frames == NULL) {
        if (!PyErr_ExceptionMatches(codec_error))
            goto out;
        PyObject *type, *exc, *tb;
        PyErr_Fetch(&type, &exc, &tb);
        PyErr_NormalizeException(&type, &exc, &tb);
        int had = truthy(before);
        rc = had < 0 ? NULL : PyObject_CallMethodObjArgs(session, s_malformed, exc,
                                                          had ? s_empty : data, NULL);
        Py_XDECREF(type);
        Py_XDECREF(exc);
        Py_XDECREF(tb);
        goto out;
    }
    if ((now = PyFloat_FromDouble(monotonic())) == NULL)
        goto out;
    put(session, S.last_active, now);
    int done = PyList_CheckExact(frames) ? process_one(session, frames, now, data, fed) : 0;
    if (done < 0)
        goto out;
    n_session_reads += done;
    rc = done ? Py_NewRef(Py_None) :
        PyObject_CallMethodObjArgs(session, s_process, frames, now, data, fed, NULL);
out:
    Py_XDECREF(now);
    Py_XDECREF(frames);
    Py_DECREF(fed);
    Py_DECREF(before);
    Py_DECREF(reader);
    return rc;
}

/* upstream_read(conn, data): UpstreamConn.data_received for an ordered connection that
 * streams to nobody (the Python method, _read_py, otherwise). */
static PyObject *upstream_read(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyObject_TypeCheck(args[0], ConnT)) {
        PyErr_SetString(PyExc_TypeError, "upstream_read(conn, data)");
        return NULL;
    }
    PyObject *conn = args[0], *data = args[1];
    PyObject *stream = need(conn, U.stream_to), *worker = need(conn, U.worker);
    int mux = truthy(need(conn, U.mux));
    if (stream == NULL || worker == NULL || mux < 0)
        return NULL;
    if (stream != Py_None || mux)
        return PyObject_CallMethodOneArg(conn, s_read_py, data);
    PyObject *now = PyObject_GetAttr(worker, s_now);
    if (now == NULL)
        return NULL;
    put_new(conn, U.last_active, now);
    PyObject *dec = need(conn, U.decoder);
    PyObject *reader = dec ? PyObject_GetAttr(dec, s_reader) : NULL;
    PyObject *frames = reader ? PyObject_CallMethodOneArg(reader, s_feed, data) : NULL;
    Py_XDECREF(reader);
    if (frames == NULL) {
        if (dec == NULL || reader == NULL || !PyErr_ExceptionMatches(codec_error))
            return NULL;
        PyObject *type, *exc, *tb;
        PyErr_Fetch(&type, &exc, &tb);
        PyErr_NormalizeException(&type, &exc, &tb);
        PyObject *why = exc ? PyObject_Str(exc) : NULL;
        PyObject *r = why ? PyObject_CallMethodOneArg(conn, s_garbage, why) : NULL;
        Py_XDECREF(why);
        Py_XDECREF(type);
        Py_XDECREF(exc);
        Py_XDECREF(tb);
        return r;
    }
    Py_ssize_t n = PyList_Check(frames) ? PyList_GET_SIZE(frames) : -1, done = 0;
    if (n > 0) {
        PyObject *argv[2] = {conn, frames};
        PyObject *i = replies(NULL, argv, 2);
        if (i == NULL || (done = PyLong_AsSsize_t(i)) < 0) {
            Py_XDECREF(i);
            Py_DECREF(frames);
            return NULL;
        }
        Py_DECREF(i);
        if (done == n) {        /* _after_responses ran in replies() */
            n_upstream_reads++;
            Py_DECREF(frames);
            Py_RETURN_NONE;
        }
        PyObject *rest = PyList_GetSlice(frames, done, n);
        PyObject *r = rest ? PyObject_CallMethodOneArg(conn, s_responses_in_order, rest) : NULL;
        Py_XDECREF(rest);
        if (r == NULL) {
            Py_DECREF(frames);
            return NULL;
        }
        Py_DECREF(r);
    } else if (n < 0) {         /* not a list: the Python method takes the frames */
        PyObject *r = PyObject_CallMethodOneArg(conn, s_responses_in_order, frames);
        if (r == NULL) {
            Py_DECREF(frames);
            return NULL;
        }
        Py_DECREF(r);
    }
    Py_DECREF(frames);
    int closed = truthy(need(conn, U.closed));
    if (closed != 0)
        return closed < 0 ? NULL : Py_NewRef(Py_None);
    return PyObject_CallMethodNoArgs(conn, s_after_responses);
}

/* ---- init --------------------------------------------------------------------- */

static int intern_all(void)
{
#define I(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return -1
    I(s_offset, "offset"); I(s_length, "length"); I(s_data, "data"); I(s_kind, "kind");
    I(s_flags, "flags"); I(s_status, "status"); I(s_metadata, "metadata");
    I(s_clusters, "clusters"); I(s_fairness, "fairness"); I(s_breaker, "breaker");
    I(s_gates, "_gates"); I(s_model, "model"); I(s_original_dst, "original_dst");
    I(s_balancer, "balancer"); I(s_pick, "pick"); I(s_rq_total, "rq_total");
    I(s_rq_active, "rq_active"); I(s_pools, "pools"); I(s_identity, "identity");
    I(s_ready, "ready"); I(s_dirty, "dirty"); I(s_flush_scheduled, "flush_scheduled");
    I(s_loop, "loop"); I(s_call_soon, "call_soon"); I(s_flush, "flush");
    I(s_access_log, "access_log"); I(s_clock, "_clock"); I(s_next_roll, "_next_roll");
    I(s_pods, "_pods"); I(s_inflight, "inflight"); I(s_max_inflight, "max_inflight");
    I(s_active_pods, "active_pods"); I(s_admitted, "admitted"); I(s_untracked, "_untracked");
    I(s_admit, "admit"); I(s_dispatch, "dispatch"); I(s_send, "send"); I(s_pool, "_pool");
    I(s_fail_m, "_fail"); I(s_ordered, "ordered"); I(s_dispatch_lean, "dispatch_lean");
    I(s_fail, "fail"); I(s_pump, "_pump"); I(s_unblock, "_unblock");
    I(s_in_flight, "_in_flight"); I(s_close_soon, "_close_soon"); I(s_append, "append");
    I(s_popleft, "popleft"); I(s_add, "add"); I(s_outlier_on, "outlier_on");
    I(s_traits, "traits"); I(s_can_fail, "can_fail"); I(s_name, "name");
    I(s_response_code, "response_code"); I(s_update_busy, "_update_busy");
    I(s_requests, "requests"); I(s_request, "request"); I(s_response, "response");
    I(s_event, "event"); I(s_ok, "ok"); I(s_dash, "-"); I(s_http1, "http1");
    I(s_method_key, ":method"); I(s_head, "HEAD"); I(s_connect, "CONNECT");
    I(s_lo, "LO"); I(s_uh, "UH"); I(s_nohost, "no-host"); I(s_busy_set, "busy");
    I(s_pending, "pending"); I(s_has_room, "has_room"); I(s_after_responses, "_after_responses");
    I(s_reader, "_reader"); I(s_feed, "feed"); I(s_buffered, "buffered");
    I(s_malformed, "_malformed"); I(s_process, "_process"); I(s_request_m, "_request");
    I(s_pause, "_pause"); I(s_batch_route, "batch_route"); I(s_select, "select");
    I(s_get, "get"); I(s_now, "now"); I(s_garbage, "_garbage");
    I(s_responses_in_order, "_responses_in_order"); I(s_read_py, "_read_py");
    I(s_write, "write");
    if ((s_empty = PyBytes_FromStringAndSize(NULL, 0)) == NULL)
        return -1;
#undef I
    return 0;
}

static int take_type(PyObject *o, PyTypeObject **slot)
{
    if (!PyType_Check(o)) {
        PyErr_SetString(PyExc_TypeError, "init: expected classes");
        return -1;
    }
    Py_INCREF(o);
    Py_XSETREF(*slot, (PyTypeObject *)o);
    return 0;
}

/* init(Session, Request, UpstreamConn, Slot, Gate, Pod, Host, RouteRuntime, template,
 *      bounds, by_kind, status, http_expect, keepalive, until_close, pause_limits,
 *      CodecError, upgrade, pause_write) */
static PyObject *init(PyObject *mod, PyObject *args)
{
    PyObject *t[8], *template, *bounds_t;
    long ka, uc, pl, up, pw;
    PyObject *bk, *st, *he, *ce;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOOOlllOll", &t[0], &t[1], &t[2], &t[3], &t[4],
                          &t[5], &t[6], &t[7], &template, &bounds_t, &bk, &st, &he, &ka, &uc,
                          &pl, &ce, &up, &pw))
        return NULL;
    if (!PyExceptionClass_Check(ce)) {
        PyErr_SetString(PyExc_TypeError, "init: CodecError must be an exception class");
        return NULL;
    }
    Py_INCREF(ce);
    Py_XSETREF(codec_error, ce);
    flags.upgrade = up;
    flags.pause_write = pw;
    PyTypeObject **types[8] = {&SessionT, &RequestT, &ConnT, &SlotT, &GateT, &PodT, &HostT,
                               &RouteT};
    for (int i = 0; i < 8; i++)
        if (take_type(t[i], types[i]) < 0)
            return NULL;
    const slot_ref refs[] = {
#define SR(T, st, f) {T, #f, &st.f}
        SR(SessionT, S, worker), SR(SessionT, S, chain), SR(SessionT, S, http),
        SR(SessionT, S, mux), SR(SessionT, S, queue), SR(SessionT, S, held),
        SR(SessionT, S, tracked), SR(SessionT, S, busy), SR(SessionT, S, batch_slot),
        SR(SessionT, S, pod), SR(SessionT, S, closed), SR(SessionT, S, draining),
        SR(SessionT, S, out), SR(SessionT, S, marked), SR(SessionT, S, close_when_flushed),
        SR(SessionT, S, paused), SR(SessionT, S, stop_reading), SR(SessionT, S, decoder),
        SR(SessionT, S, fed), SR(SessionT, S, last_active), SR(SessionT, S, processing),
        SR(SessionT, S, deferred), SR(SessionT, S, max_held), SR(SessionT, S, max_inflight),
        SR(SessionT, S, lean), SR(SessionT, S, transport),
        SR(RequestT, R, session), SR(RequestT, R, chain), SR(RequestT, R, frame),
        SR(RequestT, R, data), SR(RequestT, R, route), SR(RequestT, R, pod),
        SR(RequestT, R, start), SR(RequestT, R, deadline), SR(RequestT, R, try_deadline),
        SR(RequestT, R, slot), SR(RequestT, R, admitted), SR(RequestT, R, cluster),
        SR(RequestT, R, attempt), SR(RequestT, R, host), SR(RequestT, R, conn),
        SR(RequestT, R, sent), SR(RequestT, R, done), SR(RequestT, R, reply),
        SR(RequestT, R, count), SR(RequestT, R, holds_retry), SR(RequestT, R, close_after),
        SR(RequestT, R, hash_key), SR(RequestT, R, excluded),
        SR(ConnT, U, worker), SR(ConnT, U, cluster), SR(ConnT, U, chain), SR(ConnT, U, inflight),
        SR(ConnT, U, busy), SR(ConnT, U, depth), SR(ConnT, U, mux), SR(ConnT, U, http),
        SR(ConnT, U, served), SR(ConnT, U, max_requests), SR(ConnT, U, retiring),
        SR(ConnT, U, out), SR(ConnT, U, marked), SR(ConnT, U, decoder), SR(ConnT, U, stalled),
        SR(ConnT, U, in_ready), SR(ConnT, U, closed), SR(ConnT, U, pool),
        SR(ConnT, U, last_active), SR(ConnT, U, stream_to),
        SR(SlotT, SL, codes), SR(SlotT, SL, buckets), SR(SlotT, SL, sum_ms),
        SR(GateT, G, current), SR(GateT, G, max),
        SR(PodT, P, inflight), SR(PodT, P, count),
        SR(HostT, H, active_requests), SR(HostT, H, consecutive_errors),
        SR(RouteT, RT, single), SR(RouteT, RT, response_mutations), SR(RouteT, RT, timeout),
#undef SR
    };
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++)
        if (resolve(refs[i].type, refs[i].name, refs[i].off) < 0)
            return NULL;
    if (!Py_IS_TYPE(template, RequestT)) {
        PyErr_SetString(PyExc_TypeError, "init: the template must be a Request");
        return NULL;
    }
    PyObject *names = PyObject_GetAttrString((PyObject *)RequestT, "__slots__");
    PyObject *seq = names ? PySequence_Fast(names, "Request.__slots__") : NULL;
    Py_XDECREF(names);
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyMem_Free(req_all);
    req_all = PyMem_New(Py_ssize_t, n);
    if (req_all == NULL) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *name = PyUnicode_AsUTF8(PySequence_Fast_GET_ITEM(seq, i));
        if (name == NULL || resolve(RequestT, name, &req_all[i]) < 0) {
            Py_DECREF(seq);
            return NULL;
        }
    }
    Py_DECREF(seq);
    req_nall = n;
    Py_INCREF(template);
    Py_XSETREF(req_template, template);
    PyObject *bt = PySequence_Fast(bounds_t, "bounds");
    if (bt == NULL)
        return NULL;
    nbounds = PySequence_Fast_GET_SIZE(bt);
    if (nbounds > (Py_ssize_t)(sizeof bounds / sizeof bounds[0])) {
        Py_DECREF(bt);
        PyErr_SetString(PyExc_ValueError, "init: too many buckets");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nbounds; i++)
        bounds[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(bt, i));
    Py_DECREF(bt);
    if (PyErr_Occurred())
        return NULL;
    Py_INCREF(bk); Py_XSETREF(by_kind_fn, bk);
    Py_INCREF(st); Py_XSETREF(status_fn, st);
    Py_INCREF(he); Py_XSETREF(http_expect_fn, he);
    flags.keepalive = ka;
    flags.until_close = uc;
    flags.pause_limits = pl;
    SessionExactT = SessionT;
    Py_RETURN_NONE;
}

static PyObject *counts(PyObject *mod, PyObject *unused)
{
    return Py_BuildValue("{sKsKsKsK}", "sent", n_sent, "replied", n_replied,
                         "session_reads", n_session_reads, "upstream_reads", n_upstream_reads);
}

/* method(f): f as a method of a class (the instance comes first), with no Python frame
 * in between (instancemethod: what a C function needs to bind like a Python one). */
static PyObject *method(PyObject *mod, PyObject *func)
{
    if (!PyCallable_Check(func)) {
        PyErr_SetString(PyExc_TypeError, "method(f): f must be callable");
        return NULL;
    }
    return PyInstanceMethod_New(func);
}

static PyMethodDef methods[] = {
    {"method", method, METH_O, "method(f): f bound like a Python method."},
    {"counts", counts, METH_NOARGS,
     "What took the C path in this process: sent, replied, session_reads, upstream_reads."},
    {"init", init, METH_VARARGS, "Resolve the slots of the proxy's classes (once)."},
    {"send_one", (PyCFunction)(void (*)(void))send_one, METH_FASTCALL,
     "send_one(session, frame, now, route, data, fed): Session._send_one in C."},
    {"replies", (PyCFunction)(void (*)(void))replies, METH_FASTCALL,
     "replies(conn, frames) -> i: UpstreamConn._responses_in_order for frames[:i]."},
    {"session_read", (PyCFunction)(void (*)(void))session_read, METH_FASTCALL,
     "session_read(session, data): Session.data_received in C."},
    {"upstream_read", (PyCFunction)(void (*)(void))upstream_read, METH_FASTCALL,
     "upstream_read(conn, data): UpstreamConn.data_received in C."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_ordered",
    "The ordered lean path in C (native/ordered.h).", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__ordered(void)
{
    if (intern_all() < 0 || (key_cache = PyDict_New()) == NULL)
        return NULL;
    return PyModule_Create(&module);
}
