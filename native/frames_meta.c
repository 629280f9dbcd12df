/*
 * Metadata spans -> dict of str, as agent/codec/pyframes.py does it:
 *   key:   the name of key_id, or the key span as latin-1 (lower-cased with
 *          NM_META_LOWERCASE_KEY);
 *   value: the span as UTF-8 with errors replaced (lower-cased with
 *          NM_META_LOWERCASE_VALUE), or an integer field in decimal;
 *   a repeated key joins its values with "," (as Envoy joins headers).
 *
 * Strings that repeat from frame to frame - header names, and the routing
 * identifiers (method, interface, command, authority...) - come from a small
 * memo instead of being decoded again: a hit is a hash of a few words and a
 * memcmp, and the str's own hash is already cached for the dict insert.
 * Values that differ per request (paths, keys, header values) are decoded.
 */
#include "frames.h"

#define MEMO_SIZE 1024          /* entries, a power of two */
#define MEMO_RAW 40             /* longest span memoized */

enum { AS_KEY = 1, AS_LOWER_KEY = 2, AS_VALUE = 3, AS_LOWER_VALUE = 4 };

typedef struct {
    PyObject *str;
    uint32_t len;
    uint32_t mode;
    uint8_t raw[MEMO_RAW];
} memo_entry;

/* Process-wide: the mapping bytes -> str is the same for every decoder,
 * and names repeat across connections. The GIL serializes access. */
static memo_entry memo[MEMO_SIZE];

/* Small values in decimal, made once: integer fields (versions, flags,
 * header lengths) mostly hold a few small values. */
#define SMALL_DECIMALS 1024
static PyObject *small_decimals[SMALL_DECIMALS];

void nmf_strings_clear(void)
{
    for (size_t i = 0; i < MEMO_SIZE; i++)
        Py_CLEAR(memo[i].str);
    for (size_t i = 0; i < SMALL_DECIMALS; i++)
        Py_CLEAR(small_decimals[i]);
}

/* Constant-time hash over length, head and tail; collisions only evict. */
static uint32_t memo_slot(const uint8_t *p, size_t n, uint32_t mode)
{
    uint64_t a = 0, b = 0;
    if (n >= 8) {
        memcpy(&a, p, 8);
        memcpy(&b, p + n - 8, 8);
    } else if (n >= 4) {
        uint32_t x, y;
        memcpy(&x, p, 4);
        memcpy(&y, p + n - 4, 4);
        a = x;
        b = y;
    } else if (n > 0) {
        a = (uint64_t)p[0] | (uint64_t)p[n / 2] << 8 | (uint64_t)p[n - 1] << 16;
    }
    uint64_t h = a * 0x9E3779B97F4A7C15ull ^ (b + n * 8 + mode) * 0xC2B2AE3D27D4EB4Full;
    h ^= h >> 31;
    return (uint32_t)(h ^ (h >> 17)) & (MEMO_SIZE - 1);
}

/* memcmp(a, b, n) == 0 for the short strings met here, without a call. */
static inline int eq_bytes(const uint8_t *a, const uint8_t *b, size_t n)
{
    uint64_t x, y;
    if (n >= 8) {
        for (size_t i = 0; i + 8 < n; i += 8) {
            memcpy(&x, a + i, 8);
            memcpy(&y, b + i, 8);
            if (x != y)
                return 0;
        }
        memcpy(&x, a + n - 8, 8);   /* the last 8, overlapping */
        memcpy(&y, b + n - 8, 8);
        return x == y;
    }
    if (n >= 4) {
        uint32_t u, v;
        memcpy(&u, a, 4);
        memcpy(&v, b, 4);
        if (u != v)
            return 0;
        memcpy(&u, a + n - 4, 4);
        memcpy(&v, b + n - 4, 4);
        return u == v;
    }
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return 0;
    return 1;
}

static int is_ascii(const uint8_t *p, size_t n)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= p[i];
    return acc < 0x80;
}

/* ASCII bytes lower-cased into a new compact str. */
static PyObject *ascii_lower(const uint8_t *p, size_t n)
{
    PyObject *s = PyUnicode_New((Py_ssize_t)n, 127);
    if (!s)
        return NULL;
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(s);
    for (size_t i = 0; i < n; i++)
        out[i] = (p[i] >= 'A' && p[i] <= 'Z') ? (Py_UCS1)(p[i] | 0x20) : p[i];
    return s;
}

/* str.lower() of a str (non-ASCII: Unicode rules, as Python has them). */
static PyObject *lower_of(PyObject *s)
{
    if (!s)
        return NULL;
    PyObject *low = PyObject_CallMethod(s, "lower", NULL);
    Py_DECREF(s);
    return low;
}

static PyObject *make_str(const uint8_t *p, size_t n, uint32_t mode)
{
    switch (mode) {
    case AS_KEY:
        return PyUnicode_DecodeLatin1((const char *)p, (Py_ssize_t)n, NULL);
    case AS_LOWER_KEY:
        if (is_ascii(p, n))
            return ascii_lower(p, n);
        return lower_of(PyUnicode_DecodeLatin1((const char *)p, (Py_ssize_t)n, NULL));
    case AS_LOWER_VALUE:
        if (is_ascii(p, n))
            return ascii_lower(p, n);
        return lower_of(PyUnicode_DecodeUTF8((const char *)p, (Py_ssize_t)n, "replace"));
    default:
        return PyUnicode_DecodeUTF8((const char *)p, (Py_ssize_t)n, "replace");
    }
}

static PyObject *memo_str(const uint8_t *p, size_t n, uint32_t mode)
{
    if (n > MEMO_RAW)
        return make_str(p, n, mode);
    memo_entry *e = &memo[memo_slot(p, n, mode)];
    if (e->str && e->len == n && e->mode == mode && eq_bytes(e->raw, p, n)) {
        Py_INCREF(e->str);
        return e->str;
    }
    PyObject *s = make_str(p, n, mode);
    if (!s)
        return NULL;
    PyObject *old = e->str;
    Py_INCREF(s);
    e->str = s;
    e->len = (uint32_t)n;
    e->mode = mode;
    memcpy(e->raw, p, n);
    Py_XDECREF(old);    /* a str: its dealloc runs no Python code */
    return s;
}

/* Values worth memoizing: identifiers a connection repeats. */
static int repeats(uint32_t key_id)
{
    switch (key_id) {
    case NM_KEY_INTERFACE: case NM_KEY_METHOD: case NM_KEY_VERSION:
    case NM_KEY_DUBBO_VERSION: case NM_KEY_COMMAND: case NM_KEY_AUTHORITY:
    case NM_KEY_STATUS: case NM_KEY_SERIALIZATION: case NM_KEY_PARAM_TYPES:
        return 1;
    default:
        return 0;
    }
}

/* An integer field of at most 8 bytes (big- or little-endian). */
static uint64_t field_value(const uint8_t *p, size_t n, int little)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[little ? n - 1 - i : i];
    return v;
}

/* v in decimal into out[20] (no NUL); returns the digit count. */
static size_t decimal(uint64_t v, char *out)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

/* An integer field (big- or little-endian) in decimal. The length-field
 * codec refuses integer fields wider than 8 bytes at init. */
static PyObject *integer_str(const uint8_t *p, size_t n, int little)
{
    if (n > 8) {
        PyErr_SetString(PyExc_SystemError, "codec integer field wider than 8 bytes");
        return NULL;
    }
    uint64_t v = field_value(p, n, little);
    PyObject **slot = v < SMALL_DECIMALS ? &small_decimals[v] : NULL;
    if (slot && *slot) {
        Py_INCREF(*slot);
        return *slot;
    }
    char text[20];
    size_t len = decimal(v, text);
    PyObject *s = PyUnicode_FromStringAndSize(text, (Py_ssize_t)len);
    if (s && slot) {
        Py_INCREF(s);
        *slot = s;
    }
    return s;
}

static PyObject *key_of(const nmf_batch *b, const uint8_t *base, const nm_meta *m)
{
    if (m->key_id == NM_KEY_CUSTOM)
        return memo_str(base + m->key.off, m->key.len,
                        (m->flags & NM_META_LOWERCASE_KEY) ? AS_LOWER_KEY : AS_KEY);
    if (m->key_id < NMF_NAMES) {
        PyObject *name = PyTuple_GET_ITEM(b->names, m->key_id);
        if (name != Py_None) {
            Py_INCREF(name);
            return name;
        }
    }
    return PyUnicode_FromFormat("%u", (unsigned)m->key_id);
}

static PyObject *value_of(const uint8_t *base, const nm_meta *m)
{
    const uint8_t *p = base + m->value.off;
    if (m->flags & (NM_META_INTEGER_BE | NM_META_INTEGER_LE)) {
        PyObject *s = integer_str(p, m->value.len, (m->flags & NM_META_INTEGER_LE) != 0);
        return (m->flags & NM_META_LOWERCASE_VALUE) ? lower_of(s) : s;
    }
    uint32_t mode = (m->flags & NM_META_LOWERCASE_VALUE) ? AS_LOWER_VALUE : AS_VALUE;
    if (m->key_id != NM_KEY_CUSTOM && repeats(m->key_id))
        return memo_str(p, m->value.len, mode);
    return make_str(p, m->value.len, mode);
}

/* dict[key] = value, or "old,value" when the key is there already. */
static int put(PyObject *dict, PyObject *key, PyObject *value)
{
    Py_ssize_t before = PyDict_GET_SIZE(dict);
    PyObject *cur = PyDict_SetDefault(dict, key, value);
    if (!cur)
        return -1;
    if (PyDict_GET_SIZE(dict) != before)
        return 0;
    PyObject *joined = PyUnicode_FromFormat("%U,%U", cur, value);
    if (!joined)
        return -1;
    int rc = PyDict_SetItem(dict, key, joined);
    Py_DECREF(joined);
    return rc;
}

static int span_inside(const nm_span *s, size_t len)
{
    return (size_t)s->off + s->len <= len;
}

/* The checks every span passes before it is read. */
static int spans_inside(const nmf_batch *b, const nm_meta *m)
{
    size_t len = (size_t)(PyBytes_GET_SIZE(b->buf) - b->start);
    if (span_inside(&m->value, len) && (m->key_id != NM_KEY_CUSTOM || span_inside(&m->key, len)))
        return 1;
    PyErr_SetString(PyExc_SystemError, "codec metadata span outside its input");
    return 0;
}

int nmf_same_meta(const nmf_batch *b, const nm_frame *a, const nm_frame *f)
{
    if (a->meta_count != f->meta_count)
        return 0;
    const uint8_t *base = (const uint8_t *)PyBytes_AS_STRING(b->buf) + b->start;
    size_t len = (size_t)(PyBytes_GET_SIZE(b->buf) - b->start);
    const nm_meta *x = &b->meta[a->meta_start], *y = &b->meta[f->meta_start];
    for (uint32_t i = 0; i < f->meta_count; i++, x++, y++) {
        if (x->key_id != y->key_id || x->flags != y->flags || x->value.len != y->value.len ||
            !span_inside(&x->value, len) || !span_inside(&y->value, len))
            return 0;
        if (x->key_id == NM_KEY_CUSTOM &&
            (x->key.len != y->key.len || !span_inside(&x->key, len) ||
             !span_inside(&y->key, len) ||
             memcmp(base + x->key.off, base + y->key.off, x->key.len) != 0))
            return 0;
        if (memcmp(base + x->value.off, base + y->value.off, x->value.len) != 0)
            return 0;
    }
    return 1;
}

/* Dicts of dead frames, kept for the next frames of the same shape: a frame
 * whose keys match a recycled dict's, in order, only replaces its values -
 * no dict or key table is allocated. Only dicts nothing else references and
 * that hold no container (untracked) come here, so reuse is invisible and
 * dropping their old values runs no Python code. */
#define POOL_MAX 1024
static PyObject *pool[POOL_MAX];
static int npool;

static int reusable(PyObject *dict);

void nmf_metadata_release(PyObject *dict)
{
    if (dict && npool < POOL_MAX && reusable(dict)) {
        pool[npool++] = dict;
        return;
    }
    Py_XDECREF(dict);
}

void nmf_metadata_clear(void)
{
    while (npool)
        Py_DECREF(pool[--npool]);
}

/* Whether str s is what the span at p decodes to (ASCII only: the common
 * case, and the one where comparing bytes is comparing strings). */
static int same_text(PyObject *s, const uint8_t *p, size_t n, int lower)
{
    if (!PyUnicode_CheckExact(s) || !PyUnicode_IS_COMPACT_ASCII(s) ||
        (size_t)PyUnicode_GET_LENGTH(s) != n)
        return 0;
    const Py_UCS1 *d = PyUnicode_1BYTE_DATA(s);
    if (!lower)
        return eq_bytes(d, p, n);
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (p[i] >= 'A' && p[i] <= 'Z') ? (uint8_t)(p[i] | 0x20) : p[i];
        if (c != d[i])
            return 0;
    }
    return 1;
}

static int same_key(const nmf_batch *b, PyObject *k, const uint8_t *base, const nm_meta *m)
{
    if (m->key_id == NM_KEY_CUSTOM)
        return same_text(k, base + m->key.off, m->key.len, m->flags & NM_META_LOWERCASE_KEY);
    return m->key_id < NMF_NAMES && k == PyTuple_GET_ITEM(b->names, m->key_id);
}

static int same_value(PyObject *v, const uint8_t *base, const nm_meta *m)
{
    if (m->flags & (NM_META_INTEGER_BE | NM_META_INTEGER_LE)) {
        if (m->value.len > 8)
            return 0;
        char text[20];
        size_t n = decimal(field_value(base + m->value.off, m->value.len,
                                       (m->flags & NM_META_INTEGER_LE) != 0), text);
        return same_text(v, (const uint8_t *)text, n, 0);
    }
    return same_text(v, base + m->value.off, m->value.len, m->flags & NM_META_LOWERCASE_VALUE);
}

/* Make a recycled dict this frame's metadata when it has the same keys, in
 * order: values that differ are replaced, equal ones kept (a connection
 * repeats most of them). 1: done; 0: different keys (the dict is then
 * half-written and must be cleared); -1: error. */
static int refill(PyObject *dict, const nmf_batch *b, const nm_frame *f, const uint8_t *base)
{
    if (PyDict_GET_SIZE(dict) != (Py_ssize_t)f->meta_count)
        return 0;
    Py_ssize_t at = 0;
    PyObject *k, *v;
    for (uint32_t i = f->meta_start; i < f->meta_start + f->meta_count; i++) {
        const nm_meta *m = &b->meta[i];
        if (!spans_inside(b, m))
            return -1;
        if (!PyDict_Next(dict, &at, &k, &v) || !same_key(b, k, base, m))
            return 0;
        if (same_value(v, base, m))
            continue;
        PyObject *value = value_of(base, m);
        if (!value)
            return -1;
        Py_INCREF(k);   /* borrowed from the dict whose value changes */
        int rc = PyDict_SetItem(dict, k, value);
        Py_DECREF(k);
        Py_DECREF(value);
        if (rc < 0)
            return -1;
    }
    return 1;
}

static int fill(PyObject *dict, const nmf_batch *b, const nm_frame *f, const uint8_t *base)
{
    for (uint32_t i = f->meta_start; i < f->meta_start + f->meta_count; i++) {
        const nm_meta *m = &b->meta[i];
        if (!spans_inside(b, m))
            return -1;
        PyObject *key = key_of(b, base, m);
        if (!key)
            return -1;
        PyObject *value = value_of(base, m);
        int rc = value ? put(dict, key, value) : -1;
        Py_DECREF(key);
        Py_XDECREF(value);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* A dict only this code holds, with nothing but atomic values in it. */
static int reusable(PyObject *dict)
{
    return Py_REFCNT(dict) == 1 && PyDict_CheckExact(dict) && !PyObject_GC_IsTracked(dict);
}

#define COPY_MIN 3

/* A new dict with the keys and values of last (the previous frame's), whose
 * shape a connection's next frame most likely has. */
static PyObject *copy_of(PyObject *last, const nm_frame *f)
{
    /* below a few entries, building is as cheap as copying */
    if (!last || f->meta_count < COPY_MIN || PyDict_GET_SIZE(last) != (Py_ssize_t)f->meta_count)
        return NULL;
    PyObject *dict = PyDict_Copy(last);
    if (!dict)
        PyErr_Clear();      /* a fresh dict is built instead */
    return dict;
}

PyObject *nmf_metadata(const nmf_batch *b, const nm_frame *f, PyObject **last)
{
    const uint8_t *base = (const uint8_t *)PyBytes_AS_STRING(b->buf) + b->start;
    PyObject *dict = NULL;
    if (last && *last && reusable(*last)) {     /* the previous frame is gone */
        dict = *last;
        *last = NULL;
    } else if (npool) {
        dict = pool[--npool];
    } else {
        dict = copy_of(last ? *last : NULL, f);
    }
    if (dict) {
        int rc = refill(dict, b, f, base);
        if (rc == 0) {
            PyDict_Clear(dict);
            rc = fill(dict, b, f, base) == 0 ? 1 : -1;
        }
        if (rc < 0)
            goto fail;
    } else {
        /* presized: a header block would otherwise grow the table twice */
        dict = f->meta_count > 5 ? _PyDict_NewPresized(f->meta_count) : PyDict_New();
        if (!dict)
            return NULL;
        if (fill(dict, b, f, base) < 0)
            goto fail;
    }
    if (last) {             /* the model for the next frame */
        Py_INCREF(dict);
        PyObject *old = *last;
        *last = dict;
        nmf_metadata_release(old);
    }
    return dict;
fail:
    Py_DECREF(dict);
    return NULL;
}
