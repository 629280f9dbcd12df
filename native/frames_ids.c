/*
 * IdRun: the upstream ids of one multiplexed batch that are still out,
 * as agent.codec._frames.claim hands them out (req.ids).
 *
 * A batch takes a run of consecutive ids first .. first + n - 1; id
 * first + i is the batch's frame i. A dict {id: index} says the same with
 * an int object, a hash entry and a delete per frame; this is a bitmap
 * (inline up to 64 frames, MAX_BATCH in agent.proxy.batch). It reads like
 * that dict for the Python code that looks at it (len, in, [id], get, pop,
 * iteration in id order, keys, values, items, == with a dict), and
 * frames_replies.c clears its bits directly.
 */
#include "frames_batch.h"

static inline int has(const nmf_idrun *r, uint64_t i)
{
    return (r->bits[i / 64] >> (i % 64)) & 1;
}

PyObject *nmf_idrun_new(uint64_t first, uint32_t n)
{
    nmf_idrun *r = PyObject_New(nmf_idrun, &nmf_idrun_type);
    if (!r)
        return NULL;
    r->first = first;
    r->n = r->left = n;
    r->bits = n <= 64 ? &r->inline_bits : PyMem_Calloc((n + 63) / 64, sizeof(uint64_t));
    if (!r->bits) {
        r->n = 0;
        Py_DECREF(r);
        return PyErr_NoMemory();
    }
    for (uint32_t i = 0; i < n / 64; i++)
        r->bits[i] = ~0ull;
    if (n % 64)
        r->bits[n / 64] = (1ull << (n % 64)) - 1;
    return (PyObject *)r;
}

/* The index of id `key` when it is still out: 1 (index in *at), 0 not out
 * (or not an int), -1 error. */
static int index_of(const nmf_idrun *r, PyObject *key, uint64_t *at)
{
    if (!PyLong_Check(key))
        return 0;
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(key, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (overflow || v < 0) {        /* (ids above 2**63: the slow way) */
        PyErr_Clear();
        unsigned long long u = PyLong_AsUnsignedLongLong(key);
        if (u == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        v = (long long)u;
    }
    uint64_t i = (uint64_t)v - r->first;
    if ((uint64_t)v < r->first || i >= r->n || !has(r, i))
        return 0;
    *at = i;
    return 1;
}

int nmf_idrun_index(PyObject *run, PyObject *key, uint64_t *at)
{
    return index_of((const nmf_idrun *)run, key, at);
}

void nmf_idrun_drop(PyObject *run, uint64_t at)
{
    nmf_idrun *r = (nmf_idrun *)run;
    if (at < r->n && has(r, at)) {
        r->bits[at / 64] &= ~(1ull << (at % 64));
        r->left--;
    }
}

static void idrun_dealloc(nmf_idrun *r)
{
    if (r->bits && r->bits != &r->inline_bits)
        PyMem_Free(r->bits);
    PyObject_Free(r);
}

static Py_ssize_t idrun_len(nmf_idrun *r)
{
    return r->left;
}

static int idrun_contains(nmf_idrun *r, PyObject *key)
{
    uint64_t at;
    return index_of(r, key, &at);
}

static PyObject *idrun_getitem(nmf_idrun *r, PyObject *key)
{
    uint64_t at;
    int rc = index_of(r, key, &at);
    if (rc == 1)
        return PyLong_FromUnsignedLongLong(at);
    if (rc == 0)
        PyErr_SetObject(PyExc_KeyError, key);
    return NULL;
}

/* The ids still out (what=0), their indexes (1) or (id, index) pairs (2). */
static PyObject *listed(nmf_idrun *r, int what)
{
    PyObject *out = PyList_New(r->left);
    Py_ssize_t k = 0;
    for (uint64_t i = 0; out && i < r->n; i++) {
        if (!has(r, i))
            continue;
        PyObject *id = what != 1 ? PyLong_FromUnsignedLongLong(r->first + i) : NULL;
        PyObject *index = what != 0 ? PyLong_FromUnsignedLongLong(i) : NULL;
        PyObject *item = what == 0 ? id : what == 1 ? index
                         : (id && index ? PyTuple_Pack(2, id, index) : NULL);
        if (what == 2) {
            Py_XDECREF(id);
            Py_XDECREF(index);
        }
        if (!item || k >= r->left) {
            Py_XDECREF(item);
            Py_CLEAR(out);
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_SystemError, "IdRun: count out of step");
            break;
        }
        PyList_SET_ITEM(out, k++, item);
    }
    return out;
}

static PyObject *idrun_keys(nmf_idrun *r, PyObject *unused)
{
    return listed(r, 0);
}

static PyObject *idrun_values(nmf_idrun *r, PyObject *unused)
{
    return listed(r, 1);
}

static PyObject *idrun_items(nmf_idrun *r, PyObject *unused)
{
    return listed(r, 2);
}

static PyObject *idrun_iter(nmf_idrun *r)
{
    PyObject *keys = listed(r, 0);
    if (!keys)
        return NULL;
    PyObject *it = PyObject_GetIter(keys);
    Py_DECREF(keys);
    return it;
}

/* get(key[, default]) and pop(key[, default]) */
static PyObject *lookup(nmf_idrun *r, PyObject *args, int take)
{
    PyObject *key, *dflt = NULL;
    if (!PyArg_UnpackTuple(args, take ? "pop" : "get", 1, 2, &key, &dflt))
        return NULL;
    uint64_t at;
    int rc = index_of(r, key, &at);
    if (rc == 1) {
        if (take)
            nmf_idrun_drop((PyObject *)r, at);
        return PyLong_FromUnsignedLongLong(at);
    }
    if (rc < 0)
        return NULL;
    if (dflt)
        return Py_NewRef(dflt);
    if (take) {
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *idrun_get(nmf_idrun *r, PyObject *args)
{
    return lookup(r, args, 0);
}

static PyObject *idrun_pop(nmf_idrun *r, PyObject *args)
{
    return lookup(r, args, 1);
}

static PyObject *as_dict(nmf_idrun *r)
{
    PyObject *items = listed(r, 2), *d = items ? PyDict_New() : NULL;
    if (d && PyDict_MergeFromSeq2(d, items, 1) < 0)
        Py_CLEAR(d);
    Py_XDECREF(items);
    return d;
}

static PyObject *idrun_richcompare(nmf_idrun *r, PyObject *other, int op)
{
    if ((op != Py_EQ && op != Py_NE) ||
        !(PyDict_Check(other) || PyObject_TypeCheck(other, &nmf_idrun_type)))
        Py_RETURN_NOTIMPLEMENTED;
    PyObject *mine = as_dict(r);
    PyObject *theirs = PyDict_Check(other) ? Py_NewRef(other) : as_dict((nmf_idrun *)other);
    PyObject *out = mine && theirs ? PyObject_RichCompare(mine, theirs, op) : NULL;
    Py_XDECREF(mine);
    Py_XDECREF(theirs);
    return out;
}

static PyObject *idrun_repr(nmf_idrun *r)
{
    PyObject *d = as_dict(r);
    if (!d)
        return NULL;
    PyObject *out = PyUnicode_FromFormat("IdRun(%R)", d);
    Py_DECREF(d);
    return out;
}

static PyMappingMethods idrun_mapping = {
    .mp_length = (lenfunc)idrun_len,
    .mp_subscript = (binaryfunc)idrun_getitem,
};

static PySequenceMethods idrun_sequence = {
    .sq_contains = (objobjproc)idrun_contains,
};

static PyMethodDef idrun_methods[] = {
    {"get", (PyCFunction)idrun_get, METH_VARARGS, "get(id[, default]) -> index"},
    {"pop", (PyCFunction)idrun_pop, METH_VARARGS, "pop(id[, default]) -> index, no longer out"},
    {"keys", (PyCFunction)idrun_keys, METH_NOARGS, "the ids still out, in order"},
    {"values", (PyCFunction)idrun_values, METH_NOARGS, "their indexes in the batch"},
    {"items", (PyCFunction)idrun_items, METH_NOARGS, "(id, index) pairs"},
    {0},
};

PyTypeObject nmf_idrun_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "agent.codec._frames.IdRun",
    .tp_basicsize = sizeof(nmf_idrun),
    .tp_dealloc = (destructor)idrun_dealloc,
    .tp_repr = (reprfunc)idrun_repr,
    .tp_as_mapping = &idrun_mapping,
    .tp_as_sequence = &idrun_sequence,
    .tp_hash = PyObject_HashNotImplemented,
    .tp_richcompare = (richcmpfunc)idrun_richcompare,
    .tp_iter = (getiterfunc)idrun_iter,
    .tp_methods = idrun_methods,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The ids of one batch still out: {id: index} for a run of consecutive ids.",
};
