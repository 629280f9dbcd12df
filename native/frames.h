/*
 * agent.codec._frames: the CPython side of the codecs' hot path.
 *
 * The cffi module (agent.codec._native) stays the codec interface; this
 * extension only turns what nm_decode() writes (nm_frame / nm_meta arrays)
 * into Python Frame objects without a Python-level loop. It calls nm_decode
 * through the function pointer the cffi module hands it, so there is one copy
 * of the codecs in the process.
 *
 * Objects:
 *   Batch  - what the frames of one nm_decode() call share: the input bytes
 *            their spans point into and copies of the frame and span arrays.
 *   Frame  - one frame: kind, length, request_id, status as ready objects
 *            (the attributes every consumer reads), the rest read on demand
 *            from its Batch; metadata decoded into a dict on first access.
 *   Reader - one direction of one connection: the unconsumed tail, the
 *            stream offset, and feed().
 */
#ifndef NODEMESH_FRAMES_H
#define NODEMESH_FRAMES_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "codec.h"

/* Key names are looked up by nm_meta.key_id below this bound (the
 * length-field codec's custom fields end at NM_KEY_LF_FIELD0 + 8). */
#define NMF_NAMES (NM_KEY_LF_FIELD0 + NM_LF_MAX_FIELDS)

typedef struct {
    PyObject_HEAD
    PyObject *buf;          /* bytes; spans are relative to buf[start] */
    PyObject *names;        /* tuple: key id -> str or None */
    Py_ssize_t start;
    uint64_t base;          /* stream offset of buf[start] */
    uint32_t nframes, nmeta;
    nm_frame *frames;       /* both arrays live after the struct */
    nm_meta *meta;
} nmf_batch;

typedef struct {
    PyObject_HEAD
    /* Plain object slots: CPython specializes loads of these (LOAD_ATTR_SLOT),
     * which is most of what reading a frame costs. */
    PyObject *kind;
    PyObject *length;
    PyObject *request_id;
    PyObject *status;
    PyObject *metadata;     /* dict, NULL until first read */
    nmf_batch *batch;
    uint32_t index;
    uint32_t tracked;       /* by the GC: done once its dict is handed out */
} nmf_frame;

extern PyTypeObject nmf_batch_type;
extern PyTypeObject nmf_frame_type;
extern PyTypeObject nmf_eager_frame_type;

/* A batch holding copies of frames[0..nframes) and meta[0..nmeta). */
nmf_batch *nmf_batch_new(PyObject *buf, PyObject *names, Py_ssize_t start,
                         uint64_t base, const nm_frame *frames,
                         uint32_t nframes, const nm_meta *meta, uint32_t nmeta);

/* Frame i of batch b; kind is a borrowed str. eager: decode the metadata
 * now (an nmf_eager_frame_type frame), with last as in nmf_metadata();
 * share (eager only, may be NULL): the dict of an earlier frame of the same
 * feed whose spans decode to the same metadata (nmf_same_meta), used as is. */
PyObject *nmf_frame_new(nmf_batch *b, uint32_t i, PyObject *kind, int eager,
                        PyObject **last, PyObject *share);

/* Whether frames a and f of batch b carry byte-for-byte the same metadata
 * spans (same keys, flags and value bytes, in order): their dicts would be
 * equal, so a run of calls to one method decodes one dict. */
int nmf_same_meta(const nmf_batch *b, const nm_frame *a, const nm_frame *f);

/* Set up / free the small ints and the frames kept for reuse (module
 * init and teardown). */
int nmf_frames_init(void);
void nmf_frames_clear(void);

/* The metadata dict of frame f of batch b (new reference). last: where the
 * reader keeps the previous frame's dict (the likely shape of this one), or
 * NULL. */
PyObject *nmf_metadata(const nmf_batch *b, const nm_frame *f, PyObject **last);

/* A frame's dict, given back when the frame dies (kept for reuse when
 * nothing else holds it). */
void nmf_metadata_release(PyObject *dict);

/* Drop the string memo and the kept dicts (module teardown). */
void nmf_strings_clear(void);
void nmf_metadata_clear(void);

#endif
