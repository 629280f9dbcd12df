/*
 * agent.codec._frames.rewrite(): the Python face of nm_mux_rewrite (mux.h),
 * and same_run() (below). The per-batch calls are in frames_claim.c
 * and frames_replies.c.
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
#include "frames_batch.h"   /* first: Python.h before any system header */

#define MUX_STACK 64            /* runs up to this many frames need no allocation */
#define MUX_MAX_RUN 65536       /* default bound of one call */

static int fill_span(PyObject *item, nm_mux_span *s)
{
    if (!PyObject_TypeCheck(item, &nmf_frame_type)) {
        PyErr_Format(PyExc_TypeError, "rewrite: expected Frame, got %.100s",
                     Py_TYPE(item)->tp_name);
        return -1;
    }
    span_of((const nmf_frame *)item, s);
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

static int same_str(PyObject *a, PyObject *b)
{
    return a == b || (PyUnicode_Check(a) && PyUnicode_Check(b) && PyUnicode_Compare(a, b) == 0);
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
