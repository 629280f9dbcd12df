/* agent.proxy._ordered: the ordered lean path (see ordered.h): the shared state,
 * the helpers, init() and the module. The steps are in ordered_send.c (a request
 * out), ordered_reply.c (a reply back) and ordered_read.c (whole reads). */
#include "ordered_internal.h"

#include <time.h>

typedef struct { PyTypeObject *type; const char *name; Py_ssize_t *off; } slot_ref;

PyTypeObject *SessionT, *RequestT, *ConnT, *SlotT, *GateT, *PodT, *HostT, *RouteT;

nmo_session_slots nmo_S;        /* Session */
nmo_request_slots nmo_R;        /* Request */
nmo_conn_slots nmo_U;           /* UpstreamConn */
struct nmo_slot_slots nmo_SL;   /* metrics.Slot */
struct nmo_gate_slots nmo_G;   /* circuit._Gate */
struct nmo_pod_slots nmo_P;   /* fairness._Pod */
struct nmo_host_slots nmo_H;
struct nmo_route_slots nmo_RT;

Py_ssize_t *req_all;      /* every slot of Request (the template's copy) */
Py_ssize_t req_nall;
PyObject *req_template;    /* a Request as __init__ leaves it */
double nmo_bounds[64];         /* metrics._BOUNDS_S */
Py_ssize_t nmo_nbounds;
PyObject *by_kind_fn, *status_fn, *http_expect_fn, *codec_error;
PyTypeObject *SessionExactT;     /* Session itself: subclasses read in Python */
nmo_flags nmo_cfg;

/* interned names and constants */
PyObject *s_offset, *s_length, *s_data, *s_kind, *s_flags, *s_status, *s_metadata,
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

PyObject *key_cache;       /* code -> (code, "-"), at most MAX_KEYS */

/* What took the C path, for tests and diagnostics (counts()): requests sent down to
 * UpstreamConn.send, replies finished, reads handled whole. */
unsigned long long n_sent, n_replied, n_session_reads, n_upstream_reads;

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

/* slot += d (a Python int) */
int nmo_add_slot(PyObject *o, Py_ssize_t off, long d)
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
int nmo_add_attr(PyObject *o, PyObject *name, long d)
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

int nmo_long_attr(PyObject *o, PyObject *name, long *out)
{
    PyObject *v = PyObject_GetAttr(o, name);
    int rc = as_long(v, out);
    Py_XDECREF(v);
    return rc;
}

int nmo_call_void(PyObject *r)
{
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

double nmo_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);          /* what time.monotonic() reads */
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Worker.mark(conn): conn's writes are flushed at the end of this loop iteration. */
int nmo_mark(PyObject *worker, PyObject *conn, Py_ssize_t marked_off)
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
    return nmo_call_void(r);
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
 *      nmo_bounds, by_kind, status, http_expect, keepalive, until_close, pause_limits,
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
    nmo_cfg.upgrade = up;
    nmo_cfg.pause_write = pw;
    PyTypeObject **types[8] = {&SessionT, &RequestT, &ConnT, &SlotT, &GateT, &PodT, &HostT,
                               &RouteT};
    for (int i = 0; i < 8; i++)
        if (take_type(t[i], types[i]) < 0)
            return NULL;
    const slot_ref refs[] = {
#define SR(T, st, f) {T, #f, &st.f}
        SR(SessionT, nmo_S, worker), SR(SessionT, nmo_S, chain), SR(SessionT, nmo_S, http),
        SR(SessionT, nmo_S, mux), SR(SessionT, nmo_S, queue), SR(SessionT, nmo_S, held),
        SR(SessionT, nmo_S, tracked), SR(SessionT, nmo_S, busy), SR(SessionT, nmo_S, batch_slot),
        SR(SessionT, nmo_S, pod), SR(SessionT, nmo_S, closed), SR(SessionT, nmo_S, draining),
        SR(SessionT, nmo_S, out), SR(SessionT, nmo_S, marked), SR(SessionT, nmo_S, close_when_flushed),
        SR(SessionT, nmo_S, paused), SR(SessionT, nmo_S, stop_reading), SR(SessionT, nmo_S, decoder),
        SR(SessionT, nmo_S, fed), SR(SessionT, nmo_S, last_active), SR(SessionT, nmo_S, processing),
        SR(SessionT, nmo_S, deferred), SR(SessionT, nmo_S, max_held), SR(SessionT, nmo_S, max_inflight),
        SR(SessionT, nmo_S, lean), SR(SessionT, nmo_S, transport),
        SR(RequestT, nmo_R, session), SR(RequestT, nmo_R, chain), SR(RequestT, nmo_R, frame),
        SR(RequestT, nmo_R, data), SR(RequestT, nmo_R, route), SR(RequestT, nmo_R, pod),
        SR(RequestT, nmo_R, start), SR(RequestT, nmo_R, deadline), SR(RequestT, nmo_R, try_deadline),
        SR(RequestT, nmo_R, slot), SR(RequestT, nmo_R, admitted), SR(RequestT, nmo_R, cluster),
        SR(RequestT, nmo_R, attempt), SR(RequestT, nmo_R, host), SR(RequestT, nmo_R, conn),
        SR(RequestT, nmo_R, sent), SR(RequestT, nmo_R, done), SR(RequestT, nmo_R, reply),
        SR(RequestT, nmo_R, count), SR(RequestT, nmo_R, holds_retry), SR(RequestT, nmo_R, close_after),
        SR(RequestT, nmo_R, hash_key), SR(RequestT, nmo_R, excluded),
        SR(ConnT, nmo_U, worker), SR(ConnT, nmo_U, cluster), SR(ConnT, nmo_U, chain), SR(ConnT, nmo_U, inflight),
        SR(ConnT, nmo_U, busy), SR(ConnT, nmo_U, depth), SR(ConnT, nmo_U, mux), SR(ConnT, nmo_U, http),
        SR(ConnT, nmo_U, served), SR(ConnT, nmo_U, max_requests), SR(ConnT, nmo_U, retiring),
        SR(ConnT, nmo_U, out), SR(ConnT, nmo_U, marked), SR(ConnT, nmo_U, decoder), SR(ConnT, nmo_U, stalled),
        SR(ConnT, nmo_U, in_ready), SR(ConnT, nmo_U, closed), SR(ConnT, nmo_U, pool),
        SR(ConnT, nmo_U, last_active), SR(ConnT, nmo_U, stream_to),
        SR(SlotT, nmo_SL, codes), SR(SlotT, nmo_SL, buckets), SR(SlotT, nmo_SL, sum_ms),
        SR(GateT, nmo_G, current), SR(GateT, nmo_G, max),
        SR(PodT, nmo_P, inflight), SR(PodT, nmo_P, count),
        SR(HostT, nmo_H, active_requests), SR(HostT, nmo_H, consecutive_errors),
        SR(RouteT, nmo_RT, single), SR(RouteT, nmo_RT, response_mutations), SR(RouteT, nmo_RT, timeout),
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
    PyObject *bt = PySequence_Fast(bounds_t, "nmo_bounds");
    if (bt == NULL)
        return NULL;
    nmo_nbounds = PySequence_Fast_GET_SIZE(bt);
    if (nmo_nbounds > (Py_ssize_t)(sizeof nmo_bounds / sizeof nmo_bounds[0])) {
        Py_DECREF(bt);
        PyErr_SetString(PyExc_ValueError, "init: too many buckets");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nmo_nbounds; i++)
        nmo_bounds[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(bt, i));
    Py_DECREF(bt);
    if (PyErr_Occurred())
        return NULL;
    Py_INCREF(bk); Py_XSETREF(by_kind_fn, bk);
    Py_INCREF(st); Py_XSETREF(status_fn, st);
    Py_INCREF(he); Py_XSETREF(http_expect_fn, he);
    nmo_cfg.keepalive = ka;
    nmo_cfg.until_close = uc;
    nmo_cfg.pause_limits = pl;
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
    {"send_one", (PyCFunction)(void (*)(void))nmo_send_one, METH_FASTCALL,
     "nmo_send_one(session, frame, now, route, data, fed): Session._send_one in C."},
    {"replies", (PyCFunction)(void (*)(void))nmo_replies, METH_FASTCALL,
     "nmo_replies(conn, frames) -> i: UpstreamConn._responses_in_order for frames[:i]."},
    {"session_read", (PyCFunction)(void (*)(void))nmo_session_read, METH_FASTCALL,
     "nmo_session_read(session, data): Session.data_received in C."},
    {"upstream_read", (PyCFunction)(void (*)(void))nmo_upstream_read, METH_FASTCALL,
     "nmo_upstream_read(conn, data): UpstreamConn.data_received in C."},
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
