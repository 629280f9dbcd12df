/*
 * agent.codec._frames.claim: a multiplexed batch's way out in one call
 * (agent.proxy.upstream.UpstreamConn._assign_ids).
 *
 *   claim(frames, inflight, req, first, encoding, varint_mask) -> (data, ids) | None
 *
 * Upstream ids first .. first + n - 1 for the n frames of batch `req`. None
 * when one of them is in flight already (nothing taken); else inflight[id] =
 * req for each, and (the frames back to back with those ids written,
 * {id: index} as an IdRun, frames_ids.c). ValueError when an id does not fit its frame's field (a
 * varint of another width): nothing taken. TypeError for a non-Frame. At
 * most CLAIM_MAX frames. The reference is UpstreamConn._claim_py (rewrite,
 * then _take_ids_py); the caller's fallback for None is _assign_ids_each.
 */
#include "frames_batch.h"

#define CLAIM_MAX 65536         /* frames per claim() */

/* Take ids first .. first + n - 1 in inflight for req, all or none: 1 taken
 * (their int keys in keys[]), 0 one was in flight (none taken), -1 error
 * (none taken). One lookup per id: insert-if-absent. */
static int take(PyObject *inflight, PyObject *req, unsigned long long first, Py_ssize_t n,
                PyObject **keys)
{
    Py_ssize_t i = 0;
    int rc = 1;
    for (; i < n; i++) {
        Py_ssize_t before = PyDict_GET_SIZE(inflight);
        keys[i] = PyLong_FromUnsignedLongLong(first + (unsigned long long)i);
        if (!keys[i] || !PyDict_SetDefault(inflight, keys[i], req)) {
            rc = -1;
            break;
        }
        if (PyDict_GET_SIZE(inflight) == before) {      /* it was there: in flight */
            rc = 0;
            break;
        }
    }
    if (rc == 1)
        return 1;
    for (Py_ssize_t j = 0; j < i; j++)      /* give back what this call took */
        if (PyDict_DelItem(inflight, keys[j]) < 0)
            PyErr_Clear();
    return rc;
}

static void take_back(PyObject *inflight, Py_ssize_t n, PyObject **keys)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if (PyDict_DelItem(inflight, keys[i]) < 0)
            PyErr_Clear();
}

/* (data, IdRun of the n ids from first). */
static PyObject *claimed(unsigned long long first, Py_ssize_t n, PyObject *data)
{
    PyObject *ids = nmf_idrun_new(first, (uint32_t)n);
    return ids ? Py_BuildValue("(ON)", data, ids) : NULL;
}

PyObject *nmf_claim(PyObject *module, PyObject *args)
{
    PyObject *frames, *inflight, *req;
    unsigned long long first;
    int encoding;
    unsigned int mask;
    if (!PyArg_ParseTuple(args, "OO!OKiI:claim", &frames, &PyDict_Type, &inflight, &req, &first,
                          &encoding, &mask))
        return NULL;
    PyObject *seq = PySequence_Fast(frames, "claim: frames must be a list or tuple");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *out = NULL, *data = NULL;
    scratch s;
    if (n < 1 || n > CLAIM_MAX) {
        Py_DECREF(seq);
        return PyErr_Format(PyExc_ValueError, "claim: %zd frames, 1 to %d", n, CLAIM_MAX);
    }
    if (first > UINT64_MAX - (unsigned long long)n) {
        Py_DECREF(seq);
        return PyErr_Format(PyExc_ValueError, "claim: ids past 2**64");
    }
    if (scratch_init(&s, (size_t)n) < 0)
        goto done;
    PyObject **items = PySequence_Fast_ITEMS(seq);
    size_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyObject_TypeCheck(items[i], &nmf_frame_type)) {
            PyErr_Format(PyExc_TypeError, "claim: expected Frame, got %.100s",
                         Py_TYPE(items[i])->tp_name);
            goto done;
        }
        const nmf_frame *fr = (const nmf_frame *)items[i];
        span_of(fr, &s.spans[i]);
        s.encs[i] = (uint8_t)encoding_of(raw_of(fr), encoding, mask);
        s.ids[i] = first + (uint64_t)i;
        total += s.spans[i].length;
    }
    int64_t wrc = 0;
    data = rewritten(&s, (size_t)n, total, &wrc);
    if (!data) {
        if (wrc < 0)
            mux_error(wrc);
        goto done;
    }
    int rc = take(inflight, req, first, n, s.objs);
    if (rc == 1) {
        out = claimed(first, n, data);
        if (!out)
            take_back(inflight, n, s.objs);
    } else if (rc == 0) {
        out = Py_NewRef(Py_None);
    }
done:
    Py_XDECREF(data);
    for (Py_ssize_t i = 0; i < n && s.objs; i++)
        Py_XDECREF(s.objs[i]);
    scratch_free(&s);
    Py_DECREF(seq);
    return out;
}

