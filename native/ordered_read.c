/* agent.proxy._ordered: whole reads (Session.data_received, UpstreamConn.data_received). */
#include "ordered_internal.h"

/* ---- whole reads ---------------------------------------------------------------- */

static int long_slot(PyObject *o, Py_ssize_t off, long *out)
{
    return as_long(need(o, off), out);
}

/* The limits Session._process checks before each frame: 1 when one is reached. */
static int session_full(PyObject *session)
{
    long paused, held, max_held, tracked, max_inflight;
    if (long_slot(session, nmo_S.paused, &paused) < 0 || long_slot(session, nmo_S.held, &held) < 0 ||
        long_slot(session, nmo_S.max_held, &max_held) < 0 ||
        long_slot(session, nmo_S.tracked, &tracked) < 0 ||
        long_slot(session, nmo_S.max_inflight, &max_inflight) < 0)
        return -1;
    return (paused & nmo_cfg.pause_write) || held > max_held || tracked >= max_inflight;
}

/* The route a single request frame takes in C (a new reference), None when it takes
 * Session._request with that route, NULL + no error when it takes Session._process. */
static PyObject *single_route(PyObject *session, PyObject *frame, PyObject *worker)
{
    PyObject *chain = need(session, nmo_S.chain);
    if (chain == NULL)
        return NULL;
    int logged = access_logged(worker);
    if (logged < 0)
        return NULL;
    int mux = truthy(need(session, nmo_S.mux)), http = truthy(need(session, nmo_S.http));
    if (logged || mux || http < 0 || mux < 0)
        return NULL;
    if (http) {                 /* a plain keep-alive request: no close, no upgrade */
        long fl;
        PyObject *f = PyObject_GetAttr(frame, s_flags);
        int r = as_long(f, &fl);
        Py_XDECREF(f);
        if (r < 0 || (fl & (nmo_cfg.keepalive | nmo_cfg.upgrade)) != nmo_cfg.keepalive)
            return NULL;
    }
    PyObject *route = PyObject_GetAttr(chain, s_batch_route);
    if (route == NULL || route != Py_None)
        return route;
    Py_DECREF(route);
    PyObject *lean = need(session, nmo_S.lean);     /* a route table: select, then lean? */
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
    PyObject *frame = PyList_GET_ITEM(frames, 0), *deferred = need(session, nmo_S.deferred);
    PyObject *worker = need(session, nmo_S.worker);
    if (deferred == NULL || worker == NULL)
        return -1;
    PyObject *kind = PyObject_GetAttr(frame, s_kind);
    if (kind == NULL)
        return -1;
    int request = PyUnicode_Check(kind) && PyUnicode_Compare(kind, s_request) == 0;
    Py_DECREF(kind);
    int stop = truthy(need(session, nmo_S.stop_reading)), full = session_full(session);
    if (stop < 0 || full < 0)
        return -1;
    if (!request || stop || full || deferred != Py_None)
        return 0;
    PyObject *route = single_route(session, frame, worker);
    if (route == NULL)
        return PyErr_Occurred() ? -1 : 0;
    put(session, nmo_S.processing, Py_True);
    PyObject *r;
    if (PyTuple_Check(route))       /* a route that is not lean: the full path */
        r = PyObject_CallMethod(session, "_request", "OOOO", frame, now, Py_False,
                                PyTuple_GET_ITEM(route, 1));
    else if (route == Py_None)
        r = PyObject_CallMethod(session, "_request", "OOOO", frame, now, Py_False, Py_None);
    else {
        PyObject *args[6] = {session, frame, now, route, data, fed};
        r = nmo_send_one(NULL, args, 6);
    }
    put(session, nmo_S.processing, Py_False);
    Py_DECREF(route);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    if ((deferred = need(session, nmo_S.deferred)) == NULL || (full = session_full(session)) < 0)
        return -1;
    if (deferred != Py_None || full)
        return nmo_call_void(PyObject_CallMethod(session, "_pause", "l", nmo_cfg.pause_limits)) < 0
            ? -1 : 1;
    return 1;
}

/* nmo_session_read(session, data): Session.data_received (its Python body, _read_py, for a
 * session with no decoder yet: the decoder pool is Python's). */
PyObject *nmo_session_read(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyObject_TypeCheck(args[0], SessionT)) {
        PyErr_SetString(PyExc_TypeError, "nmo_session_read(session, data)");
        return NULL;
    }
    PyObject *session = args[0], *data = args[1];
    int stop = truthy(need(session, nmo_S.stop_reading));
    if (stop != 0)
        return stop < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *dec = need(session, nmo_S.decoder);
    if (dec == NULL)
        return NULL;
    if (dec == Py_None)
        return PyObject_CallMethodOneArg(session, s_read_py, data);
    PyObject *reader = PyObject_GetAttr(dec, s_reader);
    if (reader == NULL)
        return NULL;
    PyObject *before = PyObject_GetAttr(reader, s_buffered), *fed = need(session, nmo_S.fed);
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
    put_new(session, nmo_S.fed, total);
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
    if ((now = PyFloat_FromDouble(nmo_monotonic())) == NULL)
        goto out;
    put(session, nmo_S.last_active, now);
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

/* nmo_upstream_read(conn, data): UpstreamConn.data_received for an ordered connection that
 * streams to nobody (the Python method, _read_py, otherwise). */
PyObject *nmo_upstream_read(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyObject_TypeCheck(args[0], ConnT)) {
        PyErr_SetString(PyExc_TypeError, "nmo_upstream_read(conn, data)");
        return NULL;
    }
    PyObject *conn = args[0], *data = args[1];
    PyObject *stream = need(conn, nmo_U.stream_to), *worker = need(conn, nmo_U.worker);
    int mux = truthy(need(conn, nmo_U.mux));
    if (stream == NULL || worker == NULL || mux < 0)
        return NULL;
    if (stream != Py_None || mux)
        return PyObject_CallMethodOneArg(conn, s_read_py, data);
    PyObject *now = PyObject_GetAttr(worker, s_now);
    if (now == NULL)
        return NULL;
    put_new(conn, nmo_U.last_active, now);
    PyObject *dec = need(conn, nmo_U.decoder);
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
        PyObject *i = nmo_replies(NULL, argv, 2);
        if (i == NULL || (done = PyLong_AsSsize_t(i)) < 0) {
            Py_XDECREF(i);
            Py_DECREF(frames);
            return NULL;
        }
        Py_DECREF(i);
        if (done == n) {        /* _after_responses ran in nmo_replies() */
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
    int closed = truthy(need(conn, nmo_U.closed));
    if (closed != 0)
        return closed < 0 ? NULL : Py_NewRef(Py_None);
    return PyObject_CallMethodNoArgs(conn, s_after_responses);
}
