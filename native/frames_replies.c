/*
 * agent.codec._frames.replies: one upstream read's batch replies in one call
 * (agent.proxy.upstream.UpstreamConn._responses_by_id).
 *
 *   replies(frames, inflight, response, error, start, encoding, varint_mask,
 *           code_by, names) -> (groups, stop)
 *
 * From frames[start], each reply (kind `response` or `error`) whose id maps
 * in `inflight` to a batch still waiting for it (count > 1, not done, the id
 * in its `ids`) is popped from both dicts and filed under its batch. It
 * stops (returning the index as `stop`, len(frames) when none) at the first
 * other frame, after GROUPS_MAX batches, or at the first reply of a second
 * batch of one client (replies keep their arrival order on each client's
 * connection). Per batch, in order of first reply: (req, data, frames,
 * rids): data is its replies back to back with the clients' ids restored
 * (the id of the request frame each answers, req.frames[index]); frames are
 * the replies; rids is None unless data is None (an id that does not fit its
 * reply's field: the caller writes them one by one). Each reply is counted in
 * req.codes (made when None) under its code: by kind (code_by 0: "ok" for a
 * response, else the kind) or status (code_by 1: str(status)), names
 * memoized in `names` (at most NAMES_MAX); code_by -1: not counted (the
 * caller counts). The reference is UpstreamConn._response_by_id +
 * _batch_replies.
 */
#include "frames_batch.h"

#define GROUPS_MAX 64           /* batches per replies() call; the caller calls again */
#define NAMES_MAX 4096          /* code names memoized (statuses are few) */

typedef struct {
    PyObject *req;          /* strong: inflight may hold its last reference */
    PyObject *ids;          /* req.ids: an IdRun (claim's) or {upstream id: index} */
    PyObject *sent;         /* req.frames: the request frames, a list */
    PyObject *frames;       /* the replies filed here */
    PyObject *session;      /* req.session: whose output the group goes to */
    uint64_t *rids;         /* the client id of each, PyMem */
    size_t nrids, caprids;
} group;

typedef struct {
    PyObject *k_resp, *k_err, *names;
    int encoding, code_by;
    unsigned mask;
    group g[GROUPS_MAX];
    int ng, last;
} demux_state;

static PyObject *s_count, *s_done, *s_ids, *s_frames, *s_codes, *s_ok, *s_session;

static int names_ready(void)
{
    if (s_ok)
        return 0;
    s_count = PyUnicode_InternFromString("count");
    s_done = PyUnicode_InternFromString("done");
    s_ids = PyUnicode_InternFromString("ids");
    s_frames = PyUnicode_InternFromString("frames");
    s_codes = PyUnicode_InternFromString("codes");
    s_ok = PyUnicode_InternFromString("ok");
    s_session = PyUnicode_InternFromString("session");
    return s_count && s_done && s_ids && s_frames && s_codes && s_ok && s_session ? 0 : -1;
}

static void group_clear(group *g)
{
    Py_CLEAR(g->req);
    Py_CLEAR(g->ids);
    Py_CLEAR(g->sent);
    Py_CLEAR(g->frames);
    Py_CLEAR(g->session);
    PyMem_Free(g->rids);
    g->rids = NULL;
}

/* 1: req is a batch waiting for replies (g filled); 0: not one; -1: error. */
static int batch_group(PyObject *req, group *g)
{
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
    PyObject *ids = PyObject_GetAttr(req, s_ids);
    if (!ids)
        return -1;
    PyObject *sent = PyObject_GetAttr(req, s_frames);
    if (!sent) {
        Py_DECREF(ids);
        return -1;
    }
    if (!(PyDict_CheckExact(ids) || Py_TYPE(ids) == &nmf_idrun_type) ||
        !PyList_CheckExact(sent)) {
        Py_DECREF(ids);
        Py_DECREF(sent);
        return 0;                   /* not the shape _assign_ids makes: the caller's loop */
    }
    g->session = PyObject_GetAttr(req, s_session);
    g->frames = g->session ? PyList_New(0) : NULL;
    if (!g->frames) {
        Py_CLEAR(g->session);
        Py_DECREF(ids);
        Py_DECREF(sent);
        return -1;
    }
    g->req = Py_NewRef(req);
    g->ids = ids;
    g->sent = sent;
    g->rids = NULL;
    g->nrids = g->caprids = 0;
    return 1;
}

/* The group of req, made on its first reply: its index; GROUPS_MAX when
 * req is not a waiting batch, no group is left, or another batch of the same
 * client has a group already (its replies go out group by group: filing on
 * would change their arrival order on that client's connection); -1 on error. */
static int group_of(demux_state *st, PyObject *req)
{
    if (st->last >= 0 && st->g[st->last].req == req)
        return st->last;
    for (int i = 0; i < st->ng; i++)
        if (st->g[i].req == req)
            return st->last = i;
    if (st->ng == GROUPS_MAX)
        return GROUPS_MAX;
    group *g = &st->g[st->ng];
    int rc = batch_group(req, g);
    if (rc <= 0)
        return rc < 0 ? -1 : GROUPS_MAX;
    for (int i = 0; i < st->ng; i++)
        if (st->g[i].session == g->session) {
            group_clear(g);
            return GROUPS_MAX;
        }
    return st->last = st->ng++;
}

/* The client id of the request frame that reply id `up` answers, its entry
 * popped from req.ids: 1; 0 when it cannot be told (nothing popped: the
 * caller's loop takes the frame); -1 on error. */
static int client_id(group *g, PyObject *up, uint64_t *rid)
{
    if (Py_TYPE(g->ids) == &nmf_idrun_type) {              /* claim's: no dict work */
        uint64_t at;
        int rc = nmf_idrun_index(g->ids, up, &at);
        if (rc <= 0)
            return rc;
        PyObject *sent = at < (uint64_t)PyList_GET_SIZE(g->sent)
                         ? PyList_GET_ITEM(g->sent, (Py_ssize_t)at) : NULL;
        if (!sent || !PyObject_TypeCheck(sent, &nmf_frame_type))
            return 0;
        nmf_idrun_drop(g->ids, at);
        *rid = raw_of((nmf_frame *)sent)->request_id;
        return 1;
    }
    PyObject *i = _PyDict_Pop(g->ids, up, Py_None);     /* one lookup, not get + del */
    if (!i || i == Py_None) {
        Py_XDECREF(i);
        return i ? 0 : -1;
    }
    Py_ssize_t at = PyLong_Check(i) ? PyLong_AsSsize_t(i) : -1;
    if (at == -1 && PyErr_Occurred())
        PyErr_Clear();
    PyObject *sent = at >= 0 && at < PyList_GET_SIZE(g->sent) ? PyList_GET_ITEM(g->sent, at)
                                                              : NULL;
    if (!sent || !PyObject_TypeCheck(sent, &nmf_frame_type)) {
        int rc = PyDict_SetItem(g->ids, up, i);        /* not ours after all: put back */
        Py_DECREF(i);
        return rc < 0 ? -1 : 0;
    }
    Py_DECREF(i);
    *rid = raw_of((nmf_frame *)sent)->request_id;
    return 1;
}

static int add_rid(group *g, uint64_t rid)
{
    if (g->nrids == g->caprids) {
        size_t cap = g->caprids ? 2 * g->caprids : 16;
        uint64_t *r = PyMem_Realloc(g->rids, cap * sizeof *r);
        if (!r) {
            PyErr_NoMemory();
            return -1;
        }
        g->rids = r;
        g->caprids = cap;
    }
    g->rids[g->nrids++] = rid;
    return 0;
}

/* One frame: 1 filed, 0 the caller's (stop here), -1 error. */
static int file_reply(demux_state *st, PyObject *item, PyObject *inflight)
{
    if (!PyObject_TypeCheck(item, &nmf_frame_type))
        return 0;
    nmf_frame *fr = (nmf_frame *)item;
    if (fr->kind != st->k_resp && fr->kind != st->k_err &&
        PyUnicode_Compare(fr->kind, st->k_resp) != 0 && PyUnicode_Compare(fr->kind, st->k_err) != 0)
        return PyErr_Occurred() ? -1 : 0;
    PyObject *up = fr->request_id;
    PyObject *req = _PyDict_Pop(inflight, up, Py_None);  /* one lookup; put back on a stop */
    if (!req)
        return -1;
    int rc = 0;
    if (req != Py_None) {
        int gi = group_of(st, req);
        uint64_t rid;
        rc = gi < 0 ? -1 : gi == GROUPS_MAX ? 0 : client_id(&st->g[gi], up, &rid);
        if (rc == 1 && (add_rid(&st->g[gi], rid) < 0 ||
                        PyList_Append(st->g[gi].frames, item) < 0))
            rc = -1;
        if (rc == 0 && PyDict_SetItem(inflight, up, req) < 0)
            rc = -1;
    }
    Py_DECREF(req);                 /* (a filed batch is held by its group) */
    return rc;
}

/* The code name of a raw value (a kind str or a status int), borrowed from
 * the names memo. */
static PyObject *code_name(demux_state *st, PyObject *key)
{
    PyObject *name = PyDict_GetItemWithError(st->names, key);
    if (name || PyErr_Occurred())
        return name;
    if (PyDict_GET_SIZE(st->names) >= NAMES_MAX)
        PyDict_Clear(st->names);
    PyObject *made;
    if (st->code_by)
        made = PyObject_Str(key);
    else
        made = Py_NewRef(PyUnicode_Compare(key, st->k_resp) == 0 ? s_ok : key);
    if (!made || PyErr_Occurred()) {
        Py_XDECREF(made);
        return NULL;
    }
    int rc = PyDict_SetItem(st->names, key, made);
    Py_DECREF(made);
    return rc < 0 ? NULL : PyDict_GetItemWithError(st->names, key);
}

/* req.codes[name] += n for each reply, by runs of equal raw values (the
 * replies of a read mostly share one code). */
static int count_codes(demux_state *st, group *g)
{
    if (st->code_by < 0)
        return 0;
    PyObject *codes = PyObject_GetAttr(g->req, s_codes);
    if (!codes)
        return -1;
    if (codes == Py_None) {
        Py_DECREF(codes);
        codes = PyDict_New();
        if (!codes || PyObject_SetAttr(g->req, s_codes, codes) < 0) {
            Py_XDECREF(codes);
            return -1;
        }
    }
    int rc = PyDict_CheckExact(codes) ? 0 : -1;
    if (rc < 0)
        PyErr_SetString(PyExc_TypeError, "replies: req.codes is not a dict");
    Py_ssize_t n = PyList_GET_SIZE(g->frames), i = 0;
    while (rc == 0 && i < n) {
        nmf_frame *fr = (nmf_frame *)PyList_GET_ITEM(g->frames, i);
        PyObject *key = st->code_by ? fr->status : fr->kind;
        Py_ssize_t run = 1;
        for (; i + run < n; run++) {
            nmf_frame *next = (nmf_frame *)PyList_GET_ITEM(g->frames, i + run);
            if ((st->code_by ? next->status : next->kind) != key)
                break;              /* (an equal value in another object: another run) */
        }
        i += run;
        PyObject *name = code_name(st, key);
        if (!name) {
            rc = -1;
            break;
        }
        Py_INCREF(name);            /* the memo may be cleared by the next name */
        PyObject *had = PyDict_GetItemWithError(codes, name);
        Py_ssize_t total = run + (had && PyLong_Check(had) ? PyLong_AsSsize_t(had) : 0);
        PyObject *value = PyErr_Occurred() ? NULL : PyLong_FromSsize_t(total);
        rc = value ? PyDict_SetItem(codes, name, value) : -1;
        Py_XDECREF(value);
        Py_DECREF(name);
    }
    Py_DECREF(codes);
    return rc;
}

/* (req, data, frames, rids) of one group, its replies counted. */
static PyObject *group_result(demux_state *st, group *g)
{
    Py_ssize_t n = PyList_GET_SIZE(g->frames);
    scratch s;
    if (scratch_init(&s, (size_t)n) < 0)
        return NULL;
    size_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const nmf_frame *fr = (const nmf_frame *)PyList_GET_ITEM(g->frames, i);
        span_of(fr, &s.spans[i]);
        s.encs[i] = (uint8_t)encoding_of(raw_of(fr), st->encoding, st->mask);
        s.ids[i] = g->rids[i];
        total += s.spans[i].length;
    }
    int64_t rc = 0;
    PyObject *data = rewritten(&s, (size_t)n, total, &rc), *rids = NULL, *out = NULL;
    scratch_free(&s);
    if (!data && !rc)
        return NULL;                /* no memory */
    if (!data) {                    /* the caller writes these one by one */
        data = Py_NewRef(Py_None);
        rids = PyList_New(n);
        for (Py_ssize_t i = 0; rids && i < n; i++) {
            PyObject *v = PyLong_FromUnsignedLongLong(g->rids[i]);
            if (!v)
                Py_CLEAR(rids);
            else
                PyList_SET_ITEM(rids, i, v);
        }
    } else {
        rids = Py_NewRef(Py_None);
    }
    if (rids && count_codes(st, g) == 0)
        out = PyTuple_Pack(4, g->req, data, g->frames, rids);
    Py_DECREF(data);
    Py_XDECREF(rids);
    return out;
}

PyObject *nmf_replies(PyObject *module, PyObject *args)
{
    PyObject *frames, *inflight;
    Py_ssize_t start;
    demux_state st = {0};
    if (!PyArg_ParseTuple(args, "OO!UUniIiO!:replies", &frames, &PyDict_Type, &inflight,
                          &st.k_resp, &st.k_err, &start, &st.encoding, &st.mask, &st.code_by,
                          &PyDict_Type, &st.names) || names_ready() < 0)
        return NULL;
    if (st.encoding < NM_ID_BE || st.encoding > NM_ID_VARINT || st.code_by < -1 || st.code_by > 1)
        return PyErr_Format(PyExc_ValueError, "replies: encoding %d, code_by %d",
                            st.encoding, st.code_by);
    PyObject *seq = PySequence_Fast(frames, "replies: frames must be a list or tuple");
    if (!seq)
        return NULL;
    st.last = -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), i = start < 0 ? 0 : start;
    PyObject *groups = NULL;
    int rc = 1;
    /* (only dicts and lists made here change: no Python code runs in the loop,
     * a Request's attributes are slots) */
    for (; i < n; i++) {
        rc = file_reply(&st, PySequence_Fast_GET_ITEM(seq, i), inflight);
        if (rc <= 0)
            break;
    }
    if (rc >= 0)
        groups = PyList_New(0);
    for (int k = 0; groups && k < st.ng; k++) {
        if (!PyList_GET_SIZE(st.g[k].frames))
            continue;               /* made for a reply that then stopped the run */
        PyObject *one = group_result(&st, &st.g[k]);
        if (!one || PyList_Append(groups, one) < 0)
            Py_CLEAR(groups);
        Py_XDECREF(one);
    }
    for (int k = 0; k < st.ng; k++)
        group_clear(&st.g[k]);
    Py_DECREF(seq);
    return groups ? Py_BuildValue("(Nn)", groups, i) : NULL;
}
