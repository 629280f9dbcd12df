/* agent.proxy._ordered: a request out (Session._send_one down to UpstreamConn.send). */
#include "ordered_internal.h"

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
        nmo_long_attr(fairness, s_inflight, &inflight) == 0 &&
        nmo_long_attr(fairness, s_max_inflight, &max) == 0 && inflight < max) {
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
    if (nmo_add_slot(rec, nmo_P.count, 1) < 0 || as_long(need(rec, nmo_P.inflight), &rin) < 0)
        return -1;
    if (!rin && nmo_add_attr(fairness, s_active_pods, 1) < 0)
        return -1;
    PyObject *n = PyLong_FromLong(inflight + 1);      /* (read above: no other change) */
    int rc = n ? PyObject_SetAttr(fairness, s_inflight, n) : -1;
    Py_XDECREF(n);
    if (rc < 0 || nmo_add_slot(rec, nmo_P.inflight, 1) < 0 || nmo_add_attr(fairness, s_admitted, 1) < 0)
        return -1;
    return 1;
}

/* UpstreamConn.send(req) for an ordered connection (always takes it). */
static int conn_send(PyObject *conn, PyObject *req)
{
    PyObject *r = PyObject_CallMethodOneArg(need(conn, nmo_U.inflight), s_append, req);
    if (nmo_call_void(r) < 0)
        return -1;
    int http = truthy(need(conn, nmo_U.http));
    if (http < 0)
        return -1;
    if (http) {       /* _http_expect: a call only when the decoder needs to know */
        long depth;
        if (as_long(need(conn, nmo_U.depth), &depth) < 0)
            return -1;
        int call = depth > 1, known = 0;
        PyObject *body = GET(req, nmo_R.data);
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
            PyObject *meta = PyObject_GetAttr(need(req, nmo_R.frame), s_metadata);
            if (meta == NULL)
                return -1;
            PyObject *m = PyDict_Check(meta) ? PyDict_GetItemWithError(meta, s_method_key) : NULL;
            call = m != NULL && PyUnicode_Check(m) &&
                (PyUnicode_Compare(m, s_head) == 0 || PyUnicode_Compare(m, s_connect) == 0);
            Py_DECREF(meta);
            if (PyErr_Occurred())
                return -1;
        }
        if (call && nmo_call_void(PyObject_CallFunctionObjArgs(http_expect_fn, need(conn, nmo_U.decoder),
                                                          GET(req, nmo_R.frame), GET(conn, nmo_U.depth),
                                                          NULL)) < 0)
            return -1;
    }
    put(req, nmo_R.conn, conn);
    put(req, nmo_R.sent, Py_True);
    if (nmo_add_slot(conn, nmo_U.served, 1) < 0)
        return -1;
    long served, max_requests;
    if (as_long(GET(conn, nmo_U.served), &served) < 0 ||
        as_long(need(conn, nmo_U.max_requests), &max_requests) < 0)
        return -1;
    if (max_requests && served >= max_requests) {
        put(conn, nmo_U.retiring, Py_True);
        put(conn, nmo_U.busy, Py_True);
    }
    if (PyList_Append(need(conn, nmo_U.out), need(req, nmo_R.data)) < 0)
        return -1;
    return nmo_mark(need(conn, nmo_U.worker), conn, nmo_U.marked);
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
        int busy = truthy(need(conn, nmo_U.busy)), mux = truthy(need(conn, nmo_U.mux));
        if (busy < 0 || mux < 0 || as_long(need(conn, nmo_U.depth), &depth) < 0 ||
            (n = PyObject_Length(need(conn, nmo_U.inflight))) < 0) {
            Py_DECREF(ready);
            return -1;
        }
        plain = !busy && !mux && n < depth;
    }
    if (!plain) {
        Py_DECREF(ready);
        return nmo_call_void(PyObject_CallMethodOneArg(pool, s_send, req));
    }
    Py_INCREF(conn);
    int rc = conn_send(conn, req);
    if (rc == 0) {
        n_sent++;
        int busy = truthy(GET(conn, nmo_U.busy));
        if (busy < 0 || (n = PyObject_Length(GET(conn, nmo_U.inflight))) < 0)
            rc = -1;
        else if (busy || n >= depth) {
            rc = PyList_SetSlice(ready, PyList_GET_SIZE(ready) - 1, PyList_GET_SIZE(ready), NULL);
            put(conn, nmo_U.in_ready, Py_False);
        }
    }
    Py_DECREF(conn);
    Py_DECREF(ready);
    return rc;
}

/* The last breaker's `requests` gate: a CircuitBreaker makes its gates once (update()
 * changes their limits in place), so the pair holds while the breaker lives (held here). */
static PyObject *last_breaker, *last_gate;

PyObject *nmo_requests_gate(PyObject *cluster)
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
int nmo_gate_release(PyObject *gate)
{
    long cur;
    if (as_long(need(gate, nmo_G.current), &cur) < 0)
        return -1;
    PyObject *n = PyLong_FromLong(cur - 1 > 0 ? cur - 1 : 0);
    if (n == NULL)
        return -1;
    put_new(gate, nmo_G.current, n);
    return 0;
}

/* ClusterRuntime.dispatch(req) for a request of count 1. */
static int cluster_dispatch(PyObject *cluster, PyObject *req)
{
    PyObject *gate = nmo_requests_gate(cluster);
    if (gate == NULL)
        return -1;
    long cur, max;
    PyObject *model = NULL, *odst = NULL;
    int plain = as_long(need(gate, nmo_G.current), &cur) == 0 && as_long(need(gate, nmo_G.max), &max) == 0;
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
        return nmo_call_void(PyObject_CallMethodOneArg(cluster, s_dispatch, req));
    }
    PyObject *n = PyLong_FromLong(cur + 1);
    if (n == NULL) {
        Py_DECREF(gate);
        return -1;
    }
    put_new(gate, nmo_G.current, n);
    PyObject *balancer = PyObject_GetAttr(cluster, s_balancer);
    PyObject *host = balancer ? PyObject_CallMethodObjArgs(balancer, s_pick, need(req, nmo_R.hash_key),
                                                          need(req, nmo_R.excluded), NULL) : NULL;
    Py_XDECREF(balancer);
    if (host == NULL) {
        Py_DECREF(gate);
        return -1;
    }
    if (host == Py_None) {
        Py_DECREF(host);
        int rc = nmo_gate_release(gate);
        Py_DECREF(gate);
        if (rc < 0)
            return -1;
        return nmo_call_void(PyObject_CallMethodObjArgs(cluster, s_fail_m, req, s_uh, s_nohost,
                                                    Py_False, NULL));
    }
    Py_DECREF(gate);
    int rc = -1;
    PyObject *pools = NULL, *pool = NULL, *chain = GET(req, nmo_R.chain);
    if (!PyObject_TypeCheck(host, HostT)) {
        PyErr_SetString(PyExc_TypeError, "_ordered: the balancer picked a non-Host");
        goto out;
    }
    if (nmo_add_slot(req, nmo_R.attempt, 1) < 0)
        goto out;
    put(req, nmo_R.host, host);
    if (nmo_add_slot(host, nmo_H.active_requests, 1) < 0 || nmo_add_attr(cluster, s_rq_total, 1) < 0 ||
        nmo_add_attr(cluster, s_rq_active, 1) < 0)
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
    PyObject *cached = need(session, nmo_S.batch_slot), *worker = need(session, nmo_S.worker);
    if (cached == NULL || worker == NULL)
        return -1;
    PyObject *clusters = NULL, *cluster = NULL, *fairness = NULL;
    int plain = PyTuple_Check(cached) && PyTuple_GET_SIZE(cached) == 2 &&
        PyTuple_GET_ITEM(cached, 0) == route;
    if (plain) {     /* the cluster first: its lookup changes nothing, admit() does */
        clusters = PyObject_GetAttr(worker, s_clusters);
        cluster = clusters && PyDict_Check(clusters) ?
            PyDict_GetItemWithError(clusters, need(route, nmo_RT.single)) : NULL;
        Py_XINCREF(cluster);
        Py_XDECREF(clusters);
        if (PyErr_Occurred())
            return -1;
        plain = cluster != NULL;
    }
    if (!plain) {    /* another route's slot, no such cluster: the Python method */
        Py_XDECREF(cluster);
        return nmo_call_void(PyObject_CallMethod(session, "dispatch_lean", "OOi", req, route, 1));
    }
    put(req, nmo_R.slot, PyTuple_GET_ITEM(cached, 1));
    int rc = -1;
    if ((fairness = PyObject_GetAttr(worker, s_fairness)) == NULL)
        goto out;
    int ok = fair_admit(fairness, need(session, nmo_S.pod));
    if (ok < 0)
        goto out;
    if (!ok) {
        rc = nmo_call_void(PyObject_CallMethodObjArgs(session, s_fail, req, s_lo, NULL));
        goto out;
    }
    put(req, nmo_R.admitted, Py_True);
    put(req, nmo_R.cluster, cluster);
    rc = cluster_dispatch(cluster, req);
out:
    Py_XDECREF(fairness);
    Py_DECREF(cluster);
    return rc;
}

/* nmo_send_one(session, frame, now, route, data, fed): Session._send_one. */
PyObject *nmo_send_one(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "nmo_send_one(session, frame, now, route, data, fed)");
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
    PyObject *deadline = req ? PyNumber_Add(now, need(route, nmo_RT.timeout)) : NULL;
    if (deadline == NULL) {
        Py_DECREF(body);
        Py_XDECREF(req);
        return NULL;
    }
    put(req, nmo_R.session, session);
    put(req, nmo_R.chain, need(session, nmo_S.chain));
    put(req, nmo_R.frame, frame);
    put_new(req, nmo_R.data, body);
    put(req, nmo_R.route, route);
    put(req, nmo_R.pod, need(session, nmo_S.pod));
    put(req, nmo_R.start, now);
    put(req, nmo_R.deadline, deadline);
    put_new(req, nmo_R.try_deadline, deadline);
    int rc = -1;
    if (nmo_add_slot(session, nmo_S.held, nbody) < 0 || nmo_add_slot(session, nmo_S.tracked, 1) < 0)
        goto out;
    PyObject *queue = need(session, nmo_S.queue);
    if (queue == NULL)
        goto out;
    if (!PyList_CheckExact(queue)) {
        PyObject *q = PyObject_CallMethodNoArgs(session, s_ordered);
        if (q == NULL)
            goto out;
        Py_DECREF(q);
        queue = GET(session, nmo_S.queue);
    }
    if (PyList_Append(queue, req) < 0)
        goto out;
    int busy = truthy(need(session, nmo_S.busy));
    if (busy < 0)
        goto out;
    if (!busy) {
        put(session, nmo_S.busy, Py_True);
        PyObject *set = PyObject_GetAttr(GET(session, nmo_S.worker), s_busy_set);
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
