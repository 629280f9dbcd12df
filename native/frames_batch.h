/*
 * What the two per-batch calls of multiplexed batches share
 * (frames_claim.c: the way out, frames_replies.c: the way back): a frame's
 * span and id encoding, scratch arrays for a run, and the run rewritten
 * into one new bytes object.
 *
 * A frame's id encoding is `encoding` (NM_ID_*), or varint when its variant
 * has a bit of varint_mask (Thrift compact: agent.proxy.protocols.id_encoding).
 */
#ifndef NODEMESH_FRAMES_BATCH_H
#define NODEMESH_FRAMES_BATCH_H

#include "frames.h"     /* first: Python.h before any system header */
#include "mux.h"

#define STACK 64                /* runs up to this many frames need no allocation */

/* IdRun (frames_ids.c): req.ids of a batch that took consecutive ids. */
typedef struct {
    PyObject_HEAD
    uint64_t first;         /* the id of frame 0 */
    uint32_t n, left;       /* frames; ids still out */
    uint64_t *bits;         /* n bits, 1: still out (inline_bits up to 64) */
    uint64_t inline_bits;
} nmf_idrun;

extern PyTypeObject nmf_idrun_type;

/* All of first .. first + n - 1 out. */
PyObject *nmf_idrun_new(uint64_t first, uint32_t n);

/* 1: id `key` is still out, its index in *at; 0: not; -1: error. */
int nmf_idrun_index(PyObject *run, PyObject *key, uint64_t *at);

/* Index `at` no longer out. */
void nmf_idrun_drop(PyObject *run, uint64_t at);

static inline int encoding_of(const nm_frame *f, int encoding, unsigned mask)
{
    return (f->variant & mask) ? NM_ID_VARINT : encoding;
}

static inline const nm_frame *raw_of(const nmf_frame *fr)
{
    return &fr->batch->frames[fr->index];
}

static inline void span_of(const nmf_frame *fr, nm_mux_span *s)
{
    const nmf_batch *b = fr->batch;
    const nm_frame *f = &b->frames[fr->index];
    s->data = (const uint8_t *)PyBytes_AS_STRING(b->buf) + b->start + f->offset;
    s->length = f->length;
    s->id_offset = f->id_offset;
    s->id_length = f->id_length;
}

static inline PyObject *mux_error(int64_t rc)
{
    return PyErr_Format(PyExc_ValueError, "%s",
                        rc == NM_MUX_E_VALUE ? "an id does not fit its varint field"
                        : rc == NM_MUX_E_FIELD ? "a frame has no usable id field"
                        : "bad argument");
}

/* Scratch arrays for a run of n frames: on the stack up to STACK. */
typedef struct {
    nm_mux_span *spans;
    uint64_t *ids;
    uint8_t *encs;
    PyObject **objs;
    nm_mux_span s_spans[STACK];
    uint64_t s_ids[STACK];
    uint8_t s_encs[STACK];
    PyObject *s_objs[STACK];
} scratch;

static inline int scratch_init(scratch *s, size_t n)
{
    s->spans = s->s_spans;
    s->ids = s->s_ids;
    s->encs = s->s_encs;
    s->objs = s->s_objs;
    if (n <= STACK) {
        memset(s->s_objs, 0, sizeof s->s_objs);
        return 0;
    }
    s->spans = PyMem_Malloc(n * sizeof *s->spans);
    s->ids = PyMem_Malloc(n * sizeof *s->ids);
    s->encs = PyMem_Malloc(n);
    s->objs = PyMem_Calloc(n, sizeof *s->objs);
    if (s->spans && s->ids && s->encs && s->objs)
        return 0;
    PyErr_NoMemory();
    return -1;
}

static inline void scratch_free(scratch *s)
{
    if (s->spans != s->s_spans)
        PyMem_Free(s->spans);
    if (s->ids != s->s_ids)
        PyMem_Free(s->ids);
    if (s->encs != s->s_encs)
        PyMem_Free(s->encs);
    if (s->objs != s->s_objs)
        PyMem_Free(s->objs);
}

/* The frames back to back with ids written (a new bytes), or NULL with rc. */
static inline PyObject *rewritten(scratch *s, size_t n, size_t total, int64_t *rc)
{
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (!out)
        return NULL;
    *rc = nm_mux_rewrite_each(s->spans, n, s->ids, s->encs,
                              (uint8_t *)PyBytes_AS_STRING(out), total);
    if (*rc < 0)
        Py_CLEAR(out);
    return out;
}

#endif
