/* agent.proxy._ordered: a reply back (UpstreamConn._responses_in_order down to
 * Delivery._finish, and _after_responses). */
#include "ordered_internal.h"

/* ---- the reply side ----------------------------------------------------------- */

static Py_ssize_t bucket_of(double seconds)
{
    Py_ssize_t lo = 0, hi = nmo_nbounds;          /* bisect_left(_BOUNDS_S, seconds) */
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (nmo_bounds[mid] < seconds)
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
    PyObject *codes = need(slot, nmo_SL.codes), *buckets = need(slot, nmo_SL.buckets);
    PyObject *sum = need(slot, nmo_SL.sum_ms), *n;
    if (codes == NULL || buckets == NULL || sum == NULL || !PyDict_Check(codes) ||
        !PyList_Check(buckets) || PyList_GET_SIZE(buckets) != nmo_nbounds + 1) {
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
    put_new(slot, nmo_SL.sum_ms, n);
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
    if (as_long(need(rec, nmo_P.inflight), &in) < 0)
        goto out;
    rc = 0;
    if (in <= 0)
        goto out;
    rc = -1;
    if (nmo_add_slot(rec, nmo_P.inflight, -1) < 0 || nmo_add_attr(fairness, s_inflight, -1) < 0)
        goto out;
    if (in == 1 && nmo_add_attr(fairness, s_active_pods, -1) < 0)
        goto out;
    rc = 0;
out:
    Py_DECREF(rec);
    return rc;
}

/* Delivery._finish(req, data, code, "-") for an ordered session, count 1. */
static int finish(PyObject *session, PyObject *req, PyObject *data, PyObject *code)
{
    put(req, nmo_R.done, Py_True);
    double now = nmo_monotonic(), start = PyFloat_AsDouble(need(req, nmo_R.start));
    if (start == -1.0 && PyErr_Occurred())
        return -1;
    PyObject *slot = need(req, nmo_R.slot), *worker = need(session, nmo_S.worker);
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
    int admitted = truthy(need(req, nmo_R.admitted));
    if (admitted < 0)
        return -1;
    if (admitted) {
        put(req, nmo_R.admitted, Py_False);
        PyObject *fairness = PyObject_GetAttr(worker, s_fairness);
        int rc = fairness ? fair_done(fairness, need(req, nmo_R.pod)) : -1;
        Py_XDECREF(fairness);
        if (rc < 0)
            return -1;
    }
    Py_ssize_t nreq = PyObject_Length(need(req, nmo_R.data)), nrep = PyObject_Length(data);
    if (nreq < 0 || nrep < 0 || nmo_add_slot(session, nmo_S.held, -nreq) < 0)
        return -1;
    int closed = truthy(need(session, nmo_S.closed));
    if (closed != 0)
        return closed < 0 ? -1 : 0;
    put(req, nmo_R.reply, data);
    if (nmo_add_slot(session, nmo_S.held, nrep) < 0)
        return -1;
    PyObject *q = need(session, nmo_S.queue);
    int close_after = truthy(need(req, nmo_R.close_after)), draining = truthy(need(session, nmo_S.draining));
    if (q == NULL || close_after < 0 || draining < 0)
        return -1;
    if (PyList_CheckExact(q) && PyList_GET_SIZE(q) == 1 && PyList_GET_ITEM(q, 0) == req &&
        !close_after && !draining) {
        if (PyList_SetSlice(q, 0, 1, NULL) < 0 || nmo_add_slot(session, nmo_S.tracked, -1) < 0)
            return -1;
        PyObject *out = need(session, nmo_S.out);
        int cwf = truthy(need(session, nmo_S.close_when_flushed));
        int marked = truthy(need(session, nmo_S.marked));
        if (out == NULL || cwf < 0 || marked < 0)
            return -1;
        if (nrep && !cwf && !marked && PyList_CheckExact(out) && !PyList_GET_SIZE(out)) {
            /* Nothing else is owed to this client in this loop iteration: the reply
             * goes to the transport now, as Delivery.flush would write it at the end
             * of the iteration (the same bytes, the same one write). */
            if (nmo_add_slot(session, nmo_S.held, -nrep) < 0 ||
                nmo_call_void(PyObject_CallMethodOneArg(need(session, nmo_S.transport), s_write,
                                                    data)) < 0)
                return -1;
        } else {
            if (nrep && PyList_Append(out, data) < 0)
                return -1;
            if ((PyObject_Length(out) > 0 || cwf) && nmo_mark(worker, session, nmo_S.marked) < 0)
                return -1;
        }
    } else if (nmo_call_void(PyObject_CallMethodNoArgs(session, s_pump)) < 0) {
        return -1;
    }
    long paused;
    if (as_long(need(session, nmo_S.paused), &paused) < 0)
        return -1;
    if ((paused & nmo_cfg.pause_limits) &&
        nmo_call_void(PyObject_CallMethodNoArgs(session, s_unblock)) < 0)
        return -1;
    if ((draining = truthy(GET(session, nmo_S.draining))) < 0)
        return -1;
    if (draining) {
        PyObject *busy = PyObject_CallMethodNoArgs(session, s_in_flight);
        int b = busy ? truthy(busy) : -1;
        Py_XDECREF(busy);
        if (b < 0 || (!b && nmo_call_void(PyObject_CallMethodNoArgs(session, s_close_soon)) < 0))
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
    PyObject *session = need(req, nmo_R.session);
    if (session == NULL)
        return -1;
    if (!PyObject_TypeCheck(session, SessionT))      /* a mirrored copy's sink */
        return 0;
    long count;
    if (as_long(need(req, nmo_R.count), &count) < 0)
        return -1;
    int retry = truthy(need(req, nmo_R.holds_retry)), mux = truthy(need(session, nmo_S.mux));
    if (retry < 0 || mux < 0)
        return -1;
    if (count != 1 || retry || mux)
        return 0;
    PyObject *chain = need(req, nmo_R.chain), *route = need(req, nmo_R.route);
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
        int mut = truthy(need(route, nmo_RT.response_mutations));
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
    PyObject *cluster = need(conn, nmo_U.cluster), *session = GET(req, nmo_R.session);
    if (cluster == NULL)
        return -1;
    put(req, nmo_R.conn, Py_None);
    PyObject *host = need(req, nmo_R.host);      /* ClusterRuntime._end_try */
    if (host == NULL)
        return -1;
    Py_INCREF(host);
    int rc = -1;
    if (host != Py_None) {
        if (!PyObject_TypeCheck(host, HostT)) {
            PyErr_SetString(PyExc_TypeError, "_ordered: a host of another type");
            goto out;
        }
        if (nmo_add_slot(host, nmo_H.active_requests, -1) < 0)
            goto out;
        put(req, nmo_R.host, Py_None);
        PyObject *gate = nmo_requests_gate(cluster);
        int r = gate ? nmo_gate_release(gate) : -1;
        Py_XDECREF(gate);
        if (r < 0 || nmo_add_attr(cluster, s_rq_active, -1) < 0)
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
            put_new(host, nmo_H.consecutive_errors, zero);
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
    int closed = truthy(need(conn, nmo_U.closed)), retiring = truthy(need(conn, nmo_U.retiring));
    int busy = truthy(need(conn, nmo_U.busy)), in_ready = truthy(need(conn, nmo_U.in_ready));
    long depth;
    if (closed < 0 || retiring < 0 || busy < 0 || in_ready < 0 ||
        as_long(need(conn, nmo_U.depth), &depth) < 0)
        return -1;
    if (closed)
        return 0;
    if (retiring)            /* close when empty: the Python method */
        return nmo_call_void(PyObject_CallMethodNoArgs(conn, s_after_responses));
    if (busy || left >= depth)          /* no room */
        return 0;
    PyObject *pool = need(conn, nmo_U.pool);
    PyObject *pending = pool ? PyObject_GetAttr(pool, s_pending) : NULL;
    Py_ssize_t waiting = pending ? PyObject_Length(pending) : -1;
    Py_XDECREF(pending);
    if (waiting < 0)
        return -1;
    if (waiting)
        return nmo_call_void(PyObject_CallMethodOneArg(pool, s_has_room, conn));
    if (in_ready)
        return 0;
    PyObject *ready = PyObject_GetAttr(pool, s_ready);
    int rc = ready ? PyList_Append(ready, conn) : -1;
    Py_XDECREF(ready);
    if (rc == 0)
        put(conn, nmo_U.in_ready, Py_True);
    return rc;
}

/* nmo_replies(conn, frames) -> i: UpstreamConn._responses_in_order for frames[:i]; the
 * caller gives frames[i:] to the Python method (i == len(frames): all done here,
 * including the stalled check at its end and UpstreamConn._after_responses). */
PyObject *nmo_replies(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyObject_TypeCheck(args[0], ConnT) || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "nmo_replies(conn, frames: list)");
        return NULL;
    }
    PyObject *conn = args[0], *frames = args[1];
    PyObject *inflight = need(conn, nmo_U.inflight), *worker = need(conn, nmo_U.worker);
    if (inflight == NULL || worker == NULL)
        return NULL;
    int logged = access_logged(worker);
    if (logged < 0)
        return NULL;
    int http = truthy(need(conn, nmo_U.http)), mux = truthy(need(conn, nmo_U.mux));
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
            if (!(fl & nmo_cfg.keepalive) || (fl & nmo_cfg.until_close)) {
                Py_DECREF(req);
                break;
            }
        }
        long count;
        int done = truthy(need(req, nmo_R.done));
        if (done < 0 || as_long(need(req, nmo_R.count), &count) < 0) {
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
        int stalled = truthy(need(conn, nmo_U.stalled));
        Py_ssize_t left = PyObject_Length(inflight);
        if (stalled < 0 || left < 0)
            goto error;
        if (stalled && !left) {
            put(conn, nmo_U.stalled, Py_False);
            if (nmo_call_void(PyObject_CallMethodNoArgs(conn, s_update_busy)) < 0)
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
