/*
 * agent.codec._frames.rewrite(): the Python face of nm_mux_rewrite (mux.h).
 *
 *   rewrite(frames, ids, encoding[, limit]) -> bytes
 *
 * frames: a list or tuple of Frame objects (from any feed: each frame's
 * bytes are read from its own batch, no frame.data copy); ids: the first
 * id (frame i gets ids + i) or a sequence of one id per frame; encoding:
 * 0 big-endian, 1 little-endian, 2 varint (Thrift compact). Returns the
 * frames back to back with the ids written. At most `limit` frames
 * (default MUX_MAX_RUN) per call. ValueError when an id does not fit its
 * field or a frame has no id field; TypeError for a non-Frame.
 */
#include "frames.h"     /* first: Python.h before any system header */
#include "mux.h"

#define MUX_STACK 64            /* runs up to this many frames need no allocation */
#define MUX_MAX_RUN 65536       /* default bound of one call */

static int fill_span(PyObject *item, nm_mux_span *s)
{
    if (!PyObject_TypeCheck(item, &nmf_frame_type)) {
        PyErr_Format(PyExc_TypeError, "rewrite: expected Frame, got %.100s",
                     Py_TYPE(item)->tp_name);
        return -1;
    }
    const nmf_frame *fr = (const nmf_frame *)item;
    const nmf_batch *b = fr->batch;
    const nm_frame *f = &b->frames[fr->index];
    s->data = (const uint8_t *)PyBytes_AS_STRING(b->buf) + b->start + f->offset;
    s->length = f->length;
    s->id_offset = f->id_offset;
    s->id_length = f->id_length;
    return 0;
}

static int fill_ids(PyObject *ids, Py_ssize_t n, uint64_t *out)
{
    if (PyLong_Check(ids)) {
        unsigned long long first = PyLong_AsUnsignedLongLong(ids);
        if (first == (unsigned long long)-1 && PyErr_Occurred())
            return -1;
        for (Py_ssize_t i = 0; i < n; i++)
            out[i] = first + (uint64_t)i;
        return 0;
    }
    PyObject *seq = PySequence_Fast(ids, "rewrite: ids must be an int or a sequence of ints");
    if (!seq)
        return -1;
    if (PySequence_Fast_GET_SIZE(seq) != n) {
        PyErr_SetString(PyExc_ValueError, "rewrite: one id per frame");
        Py_DECREF(seq);
        return -1;
    }
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned long long v = PyLong_AsUnsignedLongLong(items[i]);
        if (v == (unsigned long long)-1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
        out[i] = v;
    }
    Py_DECREF(seq);
    return 0;
}

static PyObject *raise_mux(int64_t rc)
{
    const char *why = rc == NM_MUX_E_VALUE ? "an id does not fit its varint field"
                    : rc == NM_MUX_E_FIELD ? "a frame has no usable id field"
                    : rc == NM_MUX_E_BUFFER ? "output buffer too small"
                    : "bad argument";
    PyErr_Format(PyExc_ValueError, "rewrite: %s", why);
    return NULL;
}

PyObject *nmf_rewrite(PyObject *module, PyObject *args)
{
    PyObject *frames, *ids;
    int encoding;
    Py_ssize_t limit = MUX_MAX_RUN;
    if (!PyArg_ParseTuple(args, "OOi|n:rewrite", &frames, &ids, &encoding, &limit))
        return NULL;
    PyObject *seq = PySequence_Fast(frames, "rewrite: frames must be a list or tuple");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > limit || limit < 0) {
        Py_DECREF(seq);
        return PyErr_Format(PyExc_ValueError, "rewrite: %zd frames, limit %zd", n, limit);
    }
    nm_mux_span stack_spans[MUX_STACK];
    uint64_t stack_ids[MUX_STACK];
    nm_mux_span *spans = stack_spans;
    uint64_t *idv = stack_ids;
    PyObject *out = NULL;
    if (n > MUX_STACK) {
        spans = PyMem_Malloc((size_t)n * sizeof *spans);
        idv = PyMem_Malloc((size_t)n * sizeof *idv);
        if (!spans || !idv) {
            PyErr_NoMemory();
            goto done;
        }
    }
    PyObject **items = PySequence_Fast_ITEMS(seq);
    size_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (fill_span(items[i], &spans[i]) < 0)
            goto done;
        total += spans[i].length;
    }
    if (fill_ids(ids, n, idv) < 0)
        goto done;
    if (total > (size_t)PY_SSIZE_T_MAX) {
        PyErr_NoMemory();
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (!out)
        goto done;
    int64_t rc = nm_mux_rewrite(spans, (size_t)n, idv, encoding,
                                (uint8_t *)PyBytes_AS_STRING(out), total);
    if (rc < 0) {
        Py_CLEAR(out);
        raise_mux(rc);
    }
done:
    if (spans != stack_spans)
        PyMem_Free(spans);
    if (idv != stack_ids)
        PyMem_Free(idv);
    Py_DECREF(seq);
    return out;
}

/*
 * demux(frames, inflight, response, error, start) -> (batches, stop)
 *
 * The reply side of multiplexed batches (agent.proxy.upstream): from
 * frames[start], for each reply frame whose kind is `response` or `error`
 * and whose id maps in `inflight` (upstream id -> request) to a request of a
 * batch (count > 1, not done, the id in its `ids` dict), pop the id from both
 * dicts and file the frame under its request: batches[req] = [[frames...],
 * [indexes...]] (index: the frame's position in the batch, the ids value).
 * It stops at the first other frame (heartbeat, event, single request,
 * unknown id, done request, anything unexpected) and returns its index as
 * `stop` (len(frames) when none): the caller handles that one frame and calls
 * again, so replies keep their arrival order between batches and the rest.
 * The caller's per-frame loop is the reference and handles every frame.
 */
static PyObject *s_count, *s_done, *s_ids;

static int names_ready(void)
{
    if (s_count)
        return 0;
    s_count = PyUnicode_InternFromString("count");
    s_done = PyUnicode_InternFromString("done");
    s_ids = PyUnicode_InternFromString("ids");
    return s_count && s_done && s_ids ? 0 : -1;
}

static int same_str(PyObject *a, PyObject *b)
{
    return a == b || (PyUnicode_Check(a) && PyUnicode_Check(b) && PyUnicode_Compare(a, b) == 0);
}

/* 1: a batch request still waiting for this reply (its index in *index, new
 * reference); 0: not one (rest); -1: error. `known`: req was checked to be a
 * batch, not done, by the previous frame (replies of a batch come together). */
static int batch_index(PyObject *req, PyObject *up, PyObject **index, int known)
{
    if (known)
        goto ids;
    PyObject *v = PyObject_GetAttr(req, s_count);
    if (!v)
        return -1;
    long count = PyLong_Check(v) ? PyLong_AsLong(v) : 0;
    Py_DECREF(v);
    if (count == -1 && PyErr_Occurred())
        return -1;
    if (count <= 1)
        return 0;
    v = PyObject_GetAttr(req, s_done);
    if (!v)
        return -1;
    int done = PyObject_IsTrue(v);
    Py_DECREF(v);
    if (done)
        return done < 0 ? -1 : 0;
ids:;
    PyObject *ids = PyObject_GetAttr(req, s_ids);
    if (!ids)
        return -1;
    int rc = 0;
    if (PyDict_Check(ids)) {
        PyObject *i = PyDict_GetItemWithError(ids, up);
        if (i) {
            Py_INCREF(i);
            if (PyDict_DelItem(ids, up) < 0) {
                Py_DECREF(i);
                rc = -1;
            } else {
                *index = i;
                rc = 1;
            }
        } else if (PyErr_Occurred()) {
            rc = -1;
        }
    }
    Py_DECREF(ids);
    return rc;
}

static int file_under(PyObject *batches, PyObject *req, PyObject *frame, PyObject *index)
{
    PyObject *group = PyDict_GetItemWithError(batches, req);
    if (!group) {
        if (PyErr_Occurred())
            return -1;
        group = Py_BuildValue("[[][]]");
        if (!group)
            return -1;
        int rc = PyDict_SetItem(batches, req, group);
        Py_DECREF(group);           /* batches holds it */
        if (rc < 0)
            return -1;
    }
    if (PyList_Append(PyList_GET_ITEM(group, 0), frame) < 0 ||
        PyList_Append(PyList_GET_ITEM(group, 1), index) < 0)
        return -1;
    return 0;
}

/* One frame: 1 filed under its batch, 0 for rest, -1 error. *last: the
 * request the previous frame was filed under (a strong reference). */
static int demux_one(PyObject *item, PyObject *inflight, PyObject *k_resp, PyObject *k_err,
                     PyObject *batches, PyObject **last)
{
    if (!PyObject_TypeCheck(item, &nmf_frame_type))
        return 0;
    nmf_frame *fr = (nmf_frame *)item;
    if (!same_str(fr->kind, k_resp) && !same_str(fr->kind, k_err))
        return 0;
    PyObject *up = fr->request_id;
    PyObject *req = PyDict_GetItemWithError(inflight, up);
    if (!req)
        return PyErr_Occurred() ? -1 : 0;
    Py_INCREF(req);                 /* inflight may hold its last reference */
    PyObject *index = NULL;
    int rc = batch_index(req, up, &index, req == *last);
    if (rc == 1) {
        rc = PyDict_DelItem(inflight, up) < 0 ? -1 : 1;
        if (rc == 1 && file_under(batches, req, item, index) < 0)
            rc = -1;
        Py_DECREF(index);
    }
    if (rc == 1 && req != *last) {
        Py_XSETREF(*last, req);         /* takes the reference taken above */
        return rc;
    }
    Py_DECREF(req);
    return rc;
}

PyObject *nmf_demux(PyObject *module, PyObject *args)
{
    PyObject *frames, *inflight, *k_resp, *k_err;
    Py_ssize_t start = 0;
    if (!PyArg_ParseTuple(args, "OO!UU|n:demux", &frames, &PyDict_Type, &inflight, &k_resp,
                          &k_err, &start) || names_ready() < 0)
        return NULL;
    PyObject *seq = PySequence_Fast(frames, "demux: frames must be a list or tuple");
    if (!seq)
        return NULL;
    PyObject *batches = PyDict_New();
    if (!batches) {
        Py_DECREF(seq);
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), i = start < 0 ? 0 : start;
    PyObject *last = NULL;
    for (; i < n; i++) {
        /* (the list cannot change under us: only dicts are touched, and a
         * Request's attributes are slots, no Python code runs) */
        int rc = demux_one(PySequence_Fast_GET_ITEM(seq, i), inflight, k_resp, k_err,
                           batches, &last);
        if (rc < 0) {
            Py_XDECREF(last);
            Py_DECREF(seq);
            Py_DECREF(batches);
            return NULL;
        }
        if (rc == 0)
            break;
    }
    Py_XDECREF(last);
    Py_DECREF(seq);
    PyObject *out = Py_BuildValue("(Nn)", batches, i);
    return out;
}

/*
 * same_run(frames, start, limit) -> n
 *
 * How many frames from `start` (at least 1, at most limit - start) are
 * requests whose metadata equals frames[start]'s: they select the same route
 * (selection reads the metadata alone), so only the first is matched.
 */
static PyObject *s_request;

PyObject *nmf_same_run(PyObject *module, PyObject *args)
{
    PyObject *frames;
    Py_ssize_t start, limit;
    if (!PyArg_ParseTuple(args, "Onn:same_run", &frames, &start, &limit))
        return NULL;
    if (!PyList_Check(frames))
        return PyLong_FromLong(1);          /* not the reader's list: the caller's loop */
    if (!s_request && !(s_request = PyUnicode_InternFromString("request")))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(frames);
    if (limit > n)
        limit = n;
    if (start < 0 || start >= limit)
        return PyErr_Format(PyExc_IndexError, "same_run: start %zd outside [0, %zd)", start,
                            limit);
    PyObject *first = PyList_GET_ITEM(frames, start);
    if (!PyObject_TypeCheck(first, &nmf_eager_frame_type))
        return PyLong_FromLong(1);          /* lazy or Python frames: the caller's loop */
    PyObject *meta = ((nmf_frame *)first)->metadata;
    Py_ssize_t end = start + 1;
    for (; end < limit; end++) {
        PyObject *item = PyList_GET_ITEM(frames, end);
        if (Py_TYPE(item) != &nmf_eager_frame_type)
            break;
        nmf_frame *f = (nmf_frame *)item;
        if (!same_str(f->kind, s_request))
            break;
        if (f->metadata != meta) {
            /* dict == dict of str: no Python code runs */
            int eq = PyObject_RichCompareBool(f->metadata, meta, Py_EQ);
            if (eq < 0)
                return NULL;
            if (!eq)
                break;
        }
    }
    return PyLong_FromSsize_t(end - start);
}

/*
 * take_ids(inflight, req, first, n) -> ids or None
 *
 * Upstream ids first .. first + n - 1 for the n frames of batch `req`: None
 * when one of them is in flight already; else inflight[id] = req for each
 * and the dict {id: index} (what the replies and timeouts look ids up in).
 */
PyObject *nmf_take_ids(PyObject *module, PyObject *args)
{
    PyObject *inflight, *req;
    unsigned long long first;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "O!OKn:take_ids", &PyDict_Type, &inflight, &req, &first, &n))
        return NULL;
    if (n < 0 || n > MUX_MAX_RUN)
        return PyErr_Format(PyExc_ValueError, "take_ids: %zd ids, limit %d", n, MUX_MAX_RUN);
    PyObject *ids = PyDict_New();
    if (!ids)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PyLong_FromUnsignedLongLong(first + (unsigned long long)i);
        PyObject *index = key ? PyLong_FromSsize_t(i) : NULL;
        int rc = index ? PyDict_Contains(inflight, key) : -1;
        if (rc == 0)
            rc = PyDict_SetItem(ids, key, index);
        else if (rc == 1)
            rc = 2;                        /* in flight: give back what was taken */
        Py_XDECREF(key);
        Py_XDECREF(index);
        if (rc != 0) {
            Py_DECREF(ids);
            if (rc == 2)
                Py_RETURN_NONE;
            return NULL;
        }
    }
    /* all free: now claim them (no Python code ran in between) */
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(ids, &pos, &key, &value))
        if (PyDict_SetItem(inflight, key, req) < 0) {
            Py_DECREF(ids);
            return NULL;
        }
    return ids;
}
