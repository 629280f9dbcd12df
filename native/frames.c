/*
 * Batch and Frame (see frames.h). A Frame is created for every frame a feed
 * completes, so creating one does the least it can: four object slots, a
 * batch reference and an index. Everything else is read from the batch when
 * asked for.
 *
 * Frames are GC objects but untracked until their metadata dict is handed
 * out: before that they hold only strs, ints and their batch (no cycle is
 * possible); after it, user code may put anything in that dict.
 */
#include "frames.h"     /* first: Python.h before any system header */

#include <stddef.h>
#include <structmember.h>

/* -- Batch ----------------------------------------------------------------- */

static void batch_dealloc(nmf_batch *b)
{
    Py_XDECREF(b->buf);
    Py_XDECREF(b->names);
    PyObject_Free(b);
}

PyTypeObject nmf_batch_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "agent.codec._frames.Batch",
    .tp_basicsize = sizeof(nmf_batch),
    .tp_dealloc = (destructor)batch_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The input and span arrays the frames of one nm_decode() call share.",
};

nmf_batch *nmf_batch_new(PyObject *buf, PyObject *names, Py_ssize_t start,
                         uint64_t base, const nm_frame *frames,
                         uint32_t nframes, const nm_meta *meta, uint32_t nmeta)
{
    size_t head = (sizeof(nmf_batch) + 7) & ~(size_t)7;
    size_t fsize = (size_t)nframes * sizeof(nm_frame);
    size_t msize = (size_t)nmeta * sizeof(nm_meta);
    /* PyObject_Malloc, not a GC allocation: no collection (and so no Python
     * code) can run between nm_decode() and this copy of its arrays. */
    nmf_batch *b = PyObject_Malloc(head + fsize + msize);
    if (!b)
        return (nmf_batch *)PyErr_NoMemory();
    PyObject_Init((PyObject *)b, &nmf_batch_type);
    b->frames = (nm_frame *)((char *)b + head);
    b->meta = (nm_meta *)((char *)b->frames + fsize);
    memcpy(b->frames, frames, fsize);
    if (msize)
        memcpy(b->meta, meta, msize);
    Py_INCREF(buf);
    b->buf = buf;
    Py_INCREF(names);
    b->names = names;
    b->start = start;
    b->base = base;
    b->nframes = nframes;
    b->nmeta = nmeta;
    return b;
}

/* -- Frame ----------------------------------------------------------------- */

#define RAW(self) (&(self)->batch->frames[(self)->index])

/* Freed frames kept for reuse, one list per type (a feed creates hundreds
 * and the consumer drops them as fast): saves the GC allocation. */
#define FREE_MAX 2048
static nmf_frame *free_frames[2][FREE_MAX];
static int nfree[2];

static int type_slot(PyTypeObject *t)
{
    return t == &nmf_eager_frame_type ? 1 : t == &nmf_frame_type ? 0 : -1;
}

static nmf_frame *frame_alloc(PyTypeObject *type)
{
    int k = type_slot(type);
    if (nfree[k]) {
        nmf_frame *self = free_frames[k][--nfree[k]];
        PyObject_Init((PyObject *)self, type);
        return self;
    }
    return PyObject_GC_New(nmf_frame, type);
}

/* Ints below this are shared objects: frame lengths, statuses and request
 * ids are mostly small, and an int object per frame field adds up. */
#define SMALL_INTS 1024
static PyObject *small_ints[SMALL_INTS];

int nmf_frames_init(void)
{
    for (int i = 0; i < SMALL_INTS; i++)
        if (!small_ints[i] && !(small_ints[i] = PyLong_FromLong(i)))
            return -1;
    return 0;
}

void nmf_frames_clear(void)
{
    for (int k = 0; k < 2; k++)
        while (nfree[k])
            PyObject_GC_Del(free_frames[k][--nfree[k]]);
    for (int i = 0; i < SMALL_INTS; i++)
        Py_CLEAR(small_ints[i]);
}

static inline PyObject *int_of(uint64_t v)
{
    if (v < SMALL_INTS) {
        Py_INCREF(small_ints[v]);
        return small_ints[v];
    }
    return PyLong_FromUnsignedLongLong(v);
}

static void track(nmf_frame *self)
{
    PyObject_GC_Track(self);
    self->tracked = 1;
}

PyObject *nmf_frame_new(nmf_batch *b, uint32_t i, PyObject *kind, int eager, PyObject **last,
                        PyObject *share)
{
    const nm_frame *f = &b->frames[i];
    nmf_frame *self = frame_alloc(eager ? &nmf_eager_frame_type : &nmf_frame_type);
    if (!self)
        return NULL;
    self->length = int_of(f->length);
    self->request_id = int_of(f->request_id);
    self->status = f->status >= 0 ? int_of((uint64_t)f->status) : PyLong_FromLong(f->status);
    Py_INCREF(kind);
    self->kind = kind;
    Py_INCREF(b);
    self->batch = b;
    self->index = i;
    self->tracked = 0;
    if (eager && share) {
        Py_INCREF(share);
        self->metadata = share;
    } else {
        self->metadata = eager ? nmf_metadata(b, f, last) : NULL;
    }
    if (!self->length || !self->request_id || !self->status || (eager && !self->metadata)) {
        Py_DECREF(self);
        return NULL;
    }
    if (eager)      /* its dict is out: user code may make a cycle through it */
        track(self);
    return (PyObject *)self;
}

static int frame_traverse(nmf_frame *self, visitproc visit, void *arg)
{
    Py_VISIT(self->metadata);
    return 0;
}

static int frame_clear(nmf_frame *self)
{
    Py_CLEAR(self->metadata);
    return 0;
}

static void frame_dealloc(nmf_frame *self)
{
    if (self->tracked)
        PyObject_GC_UnTrack(self);
    Py_CLEAR(self->kind);
    Py_CLEAR(self->length);
    Py_CLEAR(self->request_id);
    Py_CLEAR(self->status);
    if (self->metadata) {
        PyObject *md = self->metadata;
        self->metadata = NULL;
        nmf_metadata_release(md);
    }
    Py_CLEAR(self->batch);
    int k = type_slot(Py_TYPE(self));
    if (k >= 0 && nfree[k] < FREE_MAX)
        free_frames[k][nfree[k]++] = self;
    else
        PyObject_GC_Del(self);
}

static PyObject *frame_metadata(nmf_frame *self, void *closure)
{
    if (!self->metadata) {
        self->metadata = nmf_metadata(self->batch, RAW(self), NULL);
        if (!self->metadata)
            return NULL;
        if (!self->tracked)
            track(self);
    }
    Py_INCREF(self->metadata);
    return self->metadata;
}

static PyObject *frame_offset(nmf_frame *self, void *closure)
{
    return PyLong_FromUnsignedLongLong(self->batch->base + RAW(self)->offset);
}

/* The uint32 fields of nm_frame read on demand, by their offset. */
static PyObject *frame_u32(nmf_frame *self, void *closure)
{
    uint32_t v;
    memcpy(&v, (const char *)RAW(self) + (size_t)closure, sizeof v);
    return PyLong_FromUnsignedLong(v);
}

static PyObject *frame_data(nmf_frame *self, void *closure)
{
    const nm_frame *f = RAW(self);
    const char *p = PyBytes_AS_STRING(self->batch->buf) + self->batch->start;
    return PyBytes_FromStringAndSize(p + f->offset, f->length);
}

/* The buffer the spans and _pos are relative to (for the reply builders). */
static PyObject *frame_buf(nmf_frame *self, void *closure)
{
    nmf_batch *b = self->batch;
    if (b->start == 0) {
        Py_INCREF(b->buf);
        return b->buf;
    }
    PyObject *view = PyMemoryView_FromObject(b->buf);
    if (!view)
        return NULL;
    PyObject *out = PySequence_GetSlice(view, b->start, PY_SSIZE_T_MAX);
    Py_DECREF(view);
    return out;
}

static PyObject *frame_pos(nmf_frame *self, void *closure)
{
    return PyLong_FromUnsignedLongLong(RAW(self)->offset);
}

/* The frame's nm_meta entries as a flat list of uint32 words. */
static PyObject *frame_spans(nmf_frame *self, void *closure)
{
    const nm_frame *f = RAW(self);
    const size_t words = sizeof(nm_meta) / sizeof(uint32_t);
    PyObject *out = PyList_New((Py_ssize_t)(f->meta_count * words));
    if (!out)
        return NULL;
    const uint32_t *w = (const uint32_t *)&self->batch->meta[f->meta_start];
    for (size_t i = 0; i < f->meta_count * words; i++) {
        PyObject *v = PyLong_FromUnsignedLong(w[i]);
        if (!v) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, (Py_ssize_t)i, v);
    }
    return out;
}

static PyObject *frame_repr(nmf_frame *self)
{
    PyObject *offset = frame_offset(self, NULL);
    if (!offset)
        return NULL;
    PyObject *r = PyUnicode_FromFormat("Frame(%U, id=%S, status=%S, offset=%S, length=%S)",
                                       self->kind, self->request_id, self->status, offset,
                                       self->length);
    Py_DECREF(offset);
    return r;
}

#define U32(name, field, doc) \
    {name, (getter)frame_u32, NULL, doc, (void *)offsetof(nm_frame, field)}

static PyGetSetDef frame_getset[] = {
    {"metadata", (getter)frame_metadata, NULL,
     "dict of str to str, decoded from the frame's spans on first access", NULL},
    {"offset", (getter)frame_offset, NULL, "where the frame starts in the stream", NULL},
    {"data", (getter)frame_data, NULL, "the frame's bytes (a copy)", NULL},
    U32("flags", flags, "NM_FRAME_* bits"),
    U32("body_offset", body_offset, "where the payload starts, from the frame start"),
    U32("id_offset", id_offset, "where the request id field starts, from the frame start"),
    U32("id_length", id_length, "bytes of the request id field (0: none)"),
    U32("variant", variant, "protocol detail (Thrift protocol/transport bits, RESP type)"),
    {"_buf", (getter)frame_buf, NULL, "the input buffer spans point into", NULL},
    {"_pos", (getter)frame_pos, NULL, "the frame's offset in _buf", NULL},
    {"_spans", (getter)frame_spans, NULL, "the frame's nm_meta words", NULL},
    {0},
};

static PyMemberDef frame_members[] = {
    {"kind", T_OBJECT_EX, offsetof(nmf_frame, kind), READONLY,
     "request, response, oneway, heartbeat, event or error"},
    {"length", T_OBJECT_EX, offsetof(nmf_frame, length), READONLY, "bytes of the whole frame"},
    {"request_id", T_OBJECT_EX, offsetof(nmf_frame, request_id), READONLY,
     "Dubbo id, Thrift seqid, length-field id; 0 if the protocol has none"},
    {"status", T_OBJECT_EX, offsetof(nmf_frame, status), READONLY,
     "Dubbo status, HTTP status, Thrift message type"},
    {0},
};

PyTypeObject nmf_frame_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "agent.codec.Frame",
    .tp_basicsize = sizeof(nmf_frame),
    .tp_dealloc = (destructor)frame_dealloc,
    .tp_repr = (reprfunc)frame_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "One complete frame. metadata is decoded from spans on first use.",
    .tp_traverse = (traverseproc)frame_traverse,
    .tp_clear = (inquiry)frame_clear,
    .tp_members = frame_members,
    .tp_getset = frame_getset,
};

/* A request decoder's frames: the router reads every one's metadata, so it
 * is decoded with the frame and read through a plain object slot. */
static PyMemberDef eager_members[] = {
    {"metadata", T_OBJECT_EX, offsetof(nmf_frame, metadata), READONLY,
     "dict of str to str, decoded with the frame"},
    {0},
};

PyTypeObject nmf_eager_frame_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "agent.codec.RequestFrame",
    .tp_basicsize = sizeof(nmf_frame),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A Frame whose metadata was decoded with it (request decoders).",
    .tp_dealloc = (destructor)frame_dealloc,
    .tp_repr = (reprfunc)frame_repr,
    .tp_traverse = (traverseproc)frame_traverse,
    .tp_clear = (inquiry)frame_clear,
    .tp_members = eager_members,
    .tp_base = &nmf_frame_type,
};
