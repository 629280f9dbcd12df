/*
 * Reader: Decoder.feed() in C (agent/codec/pyframes.py is the same loop in
 * Python and the reference the tests hold this one to).
 *
 * feed(data) joins the unconsumed tail and data, calls nm_decode() until the
 * input, the frame budget (max_pipelined) or progress runs out, and returns
 * the completed frames. nm_decode() writes into process-wide scratch arrays
 * (a decoder needs no arrays of its own between calls); each call's arrays
 * are copied into a Batch before any Python object is created.
 */
#include "frames.h"
#include "frames_batch.h"     /* IdRun, registered below */

#define BATCH_FRAMES 256

typedef int (*decode_fn)(nm_decoder *, const uint8_t *, size_t, nm_frame *,
                         uint32_t, nm_meta *, uint32_t, size_t *);
typedef const char *(*strerror_fn)(int);

static nm_frame scratch_frames[BATCH_FRAMES];
static nm_meta *scratch_meta;
static uint32_t scratch_meta_cap;

typedef struct {
    PyObject_HEAD
    nm_decoder *d;
    decode_fn decode;
    strerror_fn strerror;
    PyObject *owner;        /* keeps the nm_decoder's memory alive */
    PyObject *names;        /* tuple of NMF_NAMES: key id -> str or None */
    PyObject *kinds;        /* tuple: nm_kind -> str */
    PyObject *unknown;      /* kind of a code outside kinds */
    PyObject *error_for;    /* (status, reason, offset) -> CodecError */
    PyObject *protocol;     /* str, prefixes error reasons */
    PyObject *tail;         /* bytes not consumed yet: tail[0..tail_len); */
    Py_ssize_t tail_len;    /* past it, room to grow a frame in place */
    int tail_ours;          /* tail made here, seen by nobody: may be written */
    uint64_t base;          /* stream offset of tail[0] */
    uint32_t max_pipelined;
    uint32_t meta_cap;
    int eager;              /* decode metadata with each frame */
    PyObject *last;         /* the last frame's metadata dict (eager) */
    int busy;
} reader;

static int grow_scratch(uint32_t cap)
{
    if (cap <= scratch_meta_cap)
        return 0;
    nm_meta *m = PyMem_Realloc(scratch_meta, (size_t)cap * sizeof(nm_meta));
    if (!m) {
        PyErr_NoMemory();
        return -1;
    }
    scratch_meta = m;
    scratch_meta_cap = cap;
    return 0;
}

static void *address(PyObject *v)
{
    return PyLong_AsVoidPtr(v);
}

static int reader_init(reader *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"owner", "decoder", "decode", "strerror", "names", "kinds",
                            "max_pipelined", "meta_cap", "error_for", "protocol", "eager", NULL};
    PyObject *owner, *dec, *fn, *se, *keys, *kinds, *error_for, *protocol;
    unsigned int max_pipelined, meta_cap;
    int eager = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOO!O!IIOU|p", names, &owner, &dec, &fn, &se,
                                     &PyTuple_Type, &keys, &PyTuple_Type, &kinds,
                                     &max_pipelined, &meta_cap, &error_for, &protocol, &eager))
        return -1;
    if (PyTuple_GET_SIZE(keys) != NMF_NAMES) {
        PyErr_Format(PyExc_ValueError, "names must have %d entries", NMF_NAMES);
        return -1;
    }
    if (!max_pipelined || !meta_cap || !PyCallable_Check(error_for)) {
        PyErr_SetString(PyExc_ValueError, "max_pipelined and meta_cap must be > 0, "
                                          "error_for callable");
        return -1;
    }
    self->d = address(dec);
    self->decode = (decode_fn)address(fn);
    self->strerror = (strerror_fn)address(se);
    if (PyErr_Occurred())
        return -1;
    if (!self->d || !self->decode || !self->strerror) {
        PyErr_SetString(PyExc_ValueError, "null decoder or function address");
        return -1;
    }
    if (grow_scratch(meta_cap) < 0)
        return -1;
    Py_XSETREF(self->unknown, PyUnicode_InternFromString("unknown"));
    if (!self->unknown)
        return -1;
    Py_INCREF(owner);
    Py_XSETREF(self->owner, owner);
    Py_INCREF(keys);
    Py_XSETREF(self->names, keys);
    Py_INCREF(kinds);
    Py_XSETREF(self->kinds, kinds);
    Py_INCREF(error_for);
    Py_XSETREF(self->error_for, error_for);
    Py_INCREF(protocol);
    Py_XSETREF(self->protocol, protocol);
    Py_XSETREF(self->tail, PyBytes_FromStringAndSize(NULL, 0));
    self->tail_len = 0;
    self->tail_ours = 0;
    self->base = 0;
    self->max_pipelined = max_pipelined;
    self->meta_cap = meta_cap;
    self->eager = eager;
    return self->tail ? 0 : -1;
}

static int reader_traverse(reader *self, visitproc visit, void *arg)
{
    Py_VISIT(self->owner);
    Py_VISIT(self->names);
    Py_VISIT(self->kinds);
    Py_VISIT(self->error_for);
    Py_VISIT(self->last);
    return 0;
}

static int reader_clear(reader *self)
{
    Py_CLEAR(self->owner);
    Py_CLEAR(self->names);
    Py_CLEAR(self->kinds);
    Py_CLEAR(self->unknown);
    Py_CLEAR(self->error_for);
    Py_CLEAR(self->protocol);
    Py_CLEAR(self->tail);
    Py_CLEAR(self->last);
    return 0;
}

static void reader_dealloc(reader *self)
{
    PyObject_GC_UnTrack(self);
    reader_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The codec's error as the CodecError subclass for its status. */
static void raise_error(reader *self, int status, Py_ssize_t pos)
{
    const char *why = self->d->error_reason ? self->d->error_reason : self->strerror(status);
    unsigned long long at = self->base + (unsigned long long)pos + self->d->error_offset;
    PyObject *reason = PyUnicode_FromFormat("%U: %s", self->protocol, why);
    if (!reason)
        return;
    PyObject *exc = PyObject_CallFunction(self->error_for, "iOK", status, reason, at);
    Py_DECREF(reason);
    if (!exc)
        return;
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
}

/* The frames of one feed, collected before the list is made at its size. */
typedef struct {
    PyObject **items;
    size_t n, cap;
    PyObject *local[BATCH_FRAMES];
} frame_vec;

static int vec_room(frame_vec *v, size_t more)
{
    if (v->n + more <= v->cap)
        return 0;
    size_t cap = v->cap * 2 >= v->n + more ? v->cap * 2 : v->n + more;
    PyObject **items = PyMem_Malloc(cap * sizeof(PyObject *));
    if (!items) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(items, v->items, v->n * sizeof(PyObject *));
    if (v->items != v->local)
        PyMem_Free(v->items);
    v->items = items;
    v->cap = cap;
    return 0;
}

static void vec_drop(frame_vec *v)
{
    for (size_t i = 0; i < v->n; i++)
        Py_DECREF(v->items[i]);
    if (v->items != v->local)
        PyMem_Free(v->items);
}

/* The vector's frames as a list (the vector is emptied). */
static PyObject *vec_list(frame_vec *v)
{
    PyObject *list = PyList_New((Py_ssize_t)v->n);
    if (!list) {
        vec_drop(v);
        return NULL;
    }
    for (size_t i = 0; i < v->n; i++)
        PyList_SET_ITEM(list, (Py_ssize_t)i, v->items[i]);
    if (v->items != v->local)
        PyMem_Free(v->items);
    return list;
}

/* Frames of the last nm_decode() call (in the scratch arrays) into v. */
static int collect(reader *self, frame_vec *v, PyObject *buf, Py_ssize_t start, int n)
{
    const nm_frame *last = &scratch_frames[n - 1];
    uint32_t nmeta = last->meta_start + last->meta_count;
    if (nmeta > self->meta_cap) {
        PyErr_SetString(PyExc_SystemError, "codec wrote more metadata than it was given");
        return -1;
    }
    if (vec_room(v, (size_t)n) < 0)
        return -1;
    nmf_batch *b = nmf_batch_new(buf, self->names, start, self->base + (uint64_t)start,
                                 scratch_frames, (uint32_t)n, scratch_meta, nmeta);
    if (!b)
        return -1;
    int rc = 0;
    Py_ssize_t nkinds = PyTuple_GET_SIZE(self->kinds);
    for (int i = 0; i < n; i++) {
        uint32_t k = b->frames[i].kind;
        PyObject *kind = k < (uint32_t)nkinds ? PyTuple_GET_ITEM(self->kinds, k) : self->unknown;
        /* A frame whose spans repeat its predecessor's (a client calling one
         * method again) shares that dict: no Python code runs between the two,
         * so the dict is still what those spans decode to, and same_run sees
         * the run by identity. */
        PyObject *share = NULL;
        if (self->eager && i > 0 && nmf_same_meta(b, &b->frames[i - 1], &b->frames[i]))
            share = ((nmf_frame *)v->items[v->n - 1])->metadata;
        PyObject *frame = nmf_frame_new(b, (uint32_t)i, kind, self->eager, &self->last, share);
        if (!frame) {
            rc = -1;
            break;
        }
        v->items[v->n++] = frame;
    }
    Py_DECREF(b);
    return rc;
}

/*
 * tail + data as one bytes object of which the caller gets the reader's
 * reference (self->tail is NULL after a success, untouched after a failure):
 * data itself when nothing is held back. A frame that arrives in many pieces
 * grows one buffer, doubling its room, instead of being copied whole on every
 * feed; the room is cut off before any frame points into it (exact_size).
 */
static PyObject *join_input(reader *self, PyObject *data, Py_ssize_t *len, int *ours)
{
    Py_ssize_t tlen = self->tail_len;
    PyObject *buf;
    *ours = 0;
    if (tlen == 0 && PyBytes_CheckExact(data)) {
        Py_INCREF(data);
        *len = PyBytes_GET_SIZE(data);
        Py_CLEAR(self->tail);
        return data;
    }
    *ours = 1;
    Py_buffer in;
    if (PyObject_GetBuffer(data, &in, PyBUF_SIMPLE) < 0)
        return NULL;
    Py_ssize_t need = tlen + in.len;
    if (self->tail_ours && Py_REFCNT(self->tail) == 1 && PyBytes_GET_SIZE(self->tail) >= need) {
        buf = self->tail;                           /* room enough, ours alone */
        self->tail = NULL;
    } else {
        buf = PyBytes_FromStringAndSize(NULL, need > 2 * tlen ? need : 2 * tlen);
        if (!buf) {
            PyBuffer_Release(&in);
            return NULL;
        }
        memcpy(PyBytes_AS_STRING(buf), PyBytes_AS_STRING(self->tail), (size_t)tlen);
        Py_CLEAR(self->tail);
    }
    memcpy(PyBytes_AS_STRING(buf) + tlen, in.buf, (size_t)in.len);
    PyBuffer_Release(&in);
    *len = need;
    return buf;
}

/* buf without room past len: frames read the size of the buffer they hold. */
static int exact_size(PyObject **buf, Py_ssize_t len)
{
    if (PyBytes_GET_SIZE(*buf) == len)
        return 0;
    PyObject *exact = PyBytes_FromStringAndSize(PyBytes_AS_STRING(*buf), len);
    if (!exact)
        return -1;
    Py_SETREF(*buf, exact);
    return 0;
}

/* Decode buf[0..len) into frames; buf (owned) becomes the tail. ours: buf
 * was made by join_input (not the caller's object). */
static PyObject *run_decode(reader *self, PyObject *buf, Py_ssize_t len, int ours)
{
    Py_ssize_t pos = 0;
    frame_vec frames;
    frames.items = frames.local;
    frames.n = 0;
    frames.cap = BATCH_FRAMES;
    for (;;) {
        uint32_t room = self->max_pipelined - (uint32_t)frames.n;
        size_t consumed = 0;
        if (room > BATCH_FRAMES)
            room = BATCH_FRAMES;
        const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(buf);
        int n = self->decode(self->d, p + pos, (size_t)(len - pos), scratch_frames, room,
                             scratch_meta, self->meta_cap, &consumed);
        if (n < 0) {
            if (frames.n)   /* sticky: the next feed() raises it */
                break;
            raise_error(self, n, pos);
            goto fail;
        }
        if (n > 0 && (exact_size(&buf, len) < 0 || collect(self, &frames, buf, pos, n) < 0))
            goto fail;
        pos += (Py_ssize_t)consumed;
        /* n == 0: the rest is an incomplete frame. A short batch can also
         * mean the metadata array filled up: go on while there is progress. */
        if (n == 0 || pos >= len || self->d->error || frames.n >= self->max_pipelined)
            break;
    }
    if (pos > 0) {
        PyObject *rest = PyBytes_FromStringAndSize(PyBytes_AS_STRING(buf) + pos, len - pos);
        if (!rest)
            goto fail;
        Py_SETREF(buf, rest);
        ours = 1;
    }
    self->tail = buf;           /* when nothing was consumed, it keeps its room */
    self->tail_ours = ours;
    self->tail_len = len - pos;
    self->base += (uint64_t)pos;
    return vec_list(&frames);
fail:
    /* As if this feed never happened: its frames are dropped, and the old
     * tail's bytes are still the start of buf. */
    vec_drop(&frames);
    self->tail = buf;
    self->tail_ours = ours && PyBytes_GET_SIZE(buf) > len;   /* not cut: unseen */
    return NULL;
}

static PyObject *reader_feed(reader *self, PyObject *data)
{
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Decoder.feed() re-entered");
        return NULL;
    }
    if (!self->d || !self->tail || !self->names || !self->kinds || !self->unknown) {
        PyErr_SetString(PyExc_RuntimeError, "Reader not set up, or already torn down");
        return NULL;
    }
    Py_ssize_t len;
    int ours;
    PyObject *buf = join_input(self, data, &len, &ours);
    if (!buf)
        return NULL;
    self->busy = 1;
    PyObject *frames = run_decode(self, buf, len, ours);
    self->busy = 0;
    return frames;
}

static PyObject *reader_buffered(reader *self, void *closure)
{
    return PyLong_FromSsize_t(self->tail_len);
}

static PyMethodDef reader_methods[] = {
    {"feed", (PyCFunction)reader_feed, METH_O,
     "feed(data) -> list of Frame: add bytes; return the frames they completed."},
    {0},
};

static PyGetSetDef reader_getset[] = {
    {"buffered", (getter)reader_buffered, NULL, "bytes held back waiting for the rest of a frame",
     NULL},
    {0},
};

static PyTypeObject reader_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "agent.codec._frames.Reader",
    .tp_basicsize = sizeof(reader),
    .tp_dealloc = (destructor)reader_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Reader(owner, decoder, decode, strerror, names, kinds, max_pipelined, meta_cap,"
              " error_for, protocol): one direction of one connection.",
    .tp_traverse = (traverseproc)reader_traverse,
    .tp_clear = (inquiry)reader_clear,
    .tp_methods = reader_methods,
    .tp_getset = reader_getset,
    .tp_init = (initproc)reader_init,
    .tp_new = PyType_GenericNew,
};

static void frames_free(void *module)
{
    nmf_strings_clear();
    nmf_metadata_clear();
    nmf_frames_clear();
    PyMem_Free(scratch_meta);
    scratch_meta = NULL;
    scratch_meta_cap = 0;
}

/* For tests: empty the pool of dicts kept for reuse, so that the other ways
 * of making a frame's dict (copy of the last one, new) are exercised. */
static PyObject *drop_kept_dicts(PyObject *module, PyObject *unused)
{
    nmf_metadata_clear();
    Py_RETURN_NONE;
}

PyObject *nmf_rewrite(PyObject *module, PyObject *args);     /* frames_mux.c */
PyObject *nmf_same_run(PyObject *module, PyObject *args);
PyObject *nmf_claim(PyObject *module, PyObject *args);        /* frames_claim.c */
PyObject *nmf_replies(PyObject *module, PyObject *args);      /* frames_replies.c */

static PyMethodDef frames_functions[] = {
    {"rewrite", nmf_rewrite, METH_VARARGS,
     "rewrite(frames, ids, encoding[, limit]) -> bytes: the frames back to back with ids"
     " written (see native/frames_mux.c)."},
    {"same_run", nmf_same_run, METH_VARARGS,
     "same_run(frames, start, limit) -> n: requests from start with equal metadata."},
    {"claim", nmf_claim, METH_VARARGS,
     "claim(frames, inflight, req, first, encoding, varint_mask) -> (data, {id: index}) or"
     " None: a batch's upstream ids taken and written in one call (native/frames_claim.c)."},
    {"replies", nmf_replies, METH_VARARGS,
     "replies(frames, inflight, response, error, start, encoding, varint_mask, code_by, names)"
     " -> (groups, stop): one upstream read's batch replies, per batch with the clients' ids"
     " restored, each counted in req.codes (native/frames_replies.c)."},
    {"_drop_kept_dicts", drop_kept_dicts, METH_NOARGS,
     "Empty the pool of metadata dicts kept for reuse (tests)."},
    {0},
};

static struct PyModuleDef frames_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "agent.codec._frames",
    .m_doc = "Frame objects straight from nm_decode()'s arrays (see native/frames.h).",
    .m_size = -1,
    .m_methods = frames_functions,
    .m_free = frames_free,
};

PyMODINIT_FUNC PyInit__frames(void)
{
    if (nmf_frames_init() < 0 || PyType_Ready(&nmf_batch_type) < 0 ||
        PyType_Ready(&nmf_frame_type) < 0 ||
        PyType_Ready(&nmf_eager_frame_type) < 0 || PyType_Ready(&nmf_idrun_type) < 0 ||
        PyType_Ready(&reader_type) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&frames_module);
    if (!m)
        return NULL;
    Py_INCREF(&nmf_frame_type);
    if (PyModule_AddObject(m, "Frame", (PyObject *)&nmf_frame_type) < 0) {
        Py_DECREF(&nmf_frame_type);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&reader_type);
    if (PyModule_AddObject(m, "Reader", (PyObject *)&reader_type) < 0) {
        Py_DECREF(&reader_type);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "BATCH_FRAMES", BATCH_FRAMES) < 0 ||
        PyModule_AddIntConstant(m, "NAMES", NMF_NAMES) < 0 ||
        PyModule_AddIntConstant(m, "FRAME_SIZE", sizeof(nm_frame)) < 0 ||
        PyModule_AddIntConstant(m, "META_SIZE", sizeof(nm_meta)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
