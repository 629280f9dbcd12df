/*
 * HTTP/1.1 codec (RFC 9110 / 9112): one frame = one whole message (start
 * line, header section, body). Strict by default; every leniency is an
 * NM_HTTP_LENIENT_* flag. Chunked bodies: http1_chunked.c; error replies:
 * http1_reply.c. See docs/codecs/http1.md.
 */
#include "http1.h"

/* What the header section said about framing and the connection. */
typedef struct {
    uint64_t cl;             /* Content-Length (saturated)          */
    int has_cl, has_te, te_last_chunked, te_chunked;
    int conn_close, conn_keepalive, conn_upgrade, has_upgrade;
    int has_host;
    uint32_t host_off, host_len;
} h1_head;

/* Find the end of the header section from buf[from]; 0 if not there yet. */
static size_t h1_head_end(const uint8_t *buf, size_t len, size_t from)
{
    size_t i = from;
    while (i < len) {
        const uint8_t *nl = memchr(buf + i, '\n', len - i);
        if (!nl)
            break;
        size_t k = (size_t)(nl - buf);
        if (k + 1 >= len || (buf[k + 1] == '\r' && k + 2 >= len))
            return 0;
        if (buf[k + 1] == '\n')
            return k + 2;
        if (buf[k + 1] == '\r' && buf[k + 2] == '\n')
            return k + 3;
        i = k + 1;
    }
    return 0;
}

/* Comma-separated list elements of a field value, OWS (and folds) trimmed. */
static int h1_next_elem(const uint8_t *buf, size_t *i, size_t end, size_t *es, size_t *ee)
{
    while (*i < end) {
        size_t s = *i, e;
        while (*i < end && buf[*i] != ',')
            (*i)++;
        e = *i;
        if (*i < end)
            (*i)++;
        while (s < e && (buf[s] == ' ' || buf[s] == '\t' || buf[s] == '\r' || buf[s] == '\n'))
            s++;
        while (e > s && (buf[e - 1] == ' ' || buf[e - 1] == '\t' || buf[e - 1] == '\r' ||
                         buf[e - 1] == '\n'))
            e--;
        if (e > s) {
            *es = s;
            *ee = e;
            return 1;
        }
    }
    return 0;
}

static int h1_content_length(nm_decoder *d, h1_head *h, const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    int rc = nm_h1_cl_value(d, p, n, &v);     /* checked line by line already */
    if (rc)
        return rc;
    if (h->has_cl && h->cl != v)
        return nm_fail(d, NM_E_SMUGGLING, "conflicting Content-Length values");
    h->has_cl = 1;
    h->cl = v;
    return 0;
}

static int h1_transfer_encoding(nm_decoder *d, h1_head *h, const uint8_t *buf,
                                size_t vs, size_t ve)
{
    size_t i = vs, es, ee;
    h->has_te = 1;
    while (h1_next_elem(buf, &i, ve, &es, &ee)) {
        for (size_t k = es; k < ee; k++)
            if (!H1_IS(buf[k], H1_TCHAR))
                return nm_fail(d, NM_E_SMUGGLING, "invalid Transfer-Encoding");
        h->te_last_chunked = H1_IEQ(buf + es, ee - es, "chunked");
        h->te_chunked += h->te_last_chunked;
    }
    if (i == vs)    /* empty value: no coding at all */
        h->te_last_chunked = 0;
    return 0;
}

static void h1_connection(h1_head *h, const uint8_t *buf, size_t vs, size_t ve)
{
    size_t i = vs, es, ee;
    while (h1_next_elem(buf, &i, ve, &es, &ee)) {
        if (H1_IEQ(buf + es, ee - es, "close"))
            h->conn_close = 1;
        else if (H1_IEQ(buf + es, ee - es, "keep-alive"))
            h->conn_keepalive = 1;
        else if (H1_IEQ(buf + es, ee - es, "upgrade"))
            h->conn_upgrade = 1;
    }
}

/* Note a header that affects framing, routing or the connection. */
static int h1_special(nm_decoder *d, h1_head *h, const uint8_t *buf, size_t ls,
                      size_t ne, size_t vs, size_t ve)
{
    const uint8_t *n = buf + ls;
    size_t nl = ne - ls;
    switch (nl) {
    case 4:
        if (H1_IEQ(n, nl, "host")) {
            if (h->has_host && d->opt.direction == NM_DIR_REQUEST)
                return nm_fail(d, NM_E_PROTOCOL, "more than one Host header");
            h->has_host = 1;
            h->host_off = (uint32_t)vs;
            h->host_len = (uint32_t)(ve - vs);
        }
        return 0;
    case 7:
        if (H1_IEQ(n, nl, "upgrade") && ve > vs)
            h->has_upgrade = 1;
        return 0;
    case 10:
        if (H1_IEQ(n, nl, "connection"))
            h1_connection(h, buf, vs, ve);
        return 0;
    case 14:
        if (H1_IEQ(n, nl, "content-length"))
            return h1_content_length(d, h, buf + vs, ve - vs);
        return 0;
    case 17:
        if (H1_IEQ(n, nl, "transfer-encoding"))
            return h1_transfer_encoding(d, h, buf, vs, ve);
        return 0;
    default:
        return 0;
    }
}

/* Parse the header lines in buf[ls..he) (he: past the empty line). */
static int h1_headers(nm_decoder *d, const uint8_t *buf, size_t ls, size_t he,
                      h1_head *h, nm_out *o)
{
    uint64_t seen = 0;
    int deferred = 0;                 /* first cross-line error, reported after */
    const char *why = NULL;           /* every line-local check, as nm_h1_early */
    size_t first = ls;
    for (;;) {
        const uint8_t *nlp = memchr(buf + ls, '\n', he - ls);
        size_t nl = (size_t)(nlp - buf), ce, ne, vs, ve;   /* found: he ends in LF */
        int rc;
        if (nl == ls || (nl == ls + 1 && buf[ls] == '\r')) {   /* the empty line */
            if ((rc = nm_h1_line_end(d, buf, ls, nl, &ce)))
                return rc;
            break;
        }
        if ((rc = nm_h1_field_line(d, buf, ls, nl, ls == first, &seen, &ne, &vs, &ve)))
            return rc;                /* no obs-fold here: folds are read below */
        size_t next = nl + 1;
        while (buf[next] == ' ' || buf[next] == '\t') {    /* obs-fold (lenient) */
            size_t fe;
            nlp = memchr(buf + next, '\n', he - next);
            nl = (size_t)(nlp - buf);
            if ((rc = nm_h1_field_line(d, buf, next, nl, 0, &seen, &ne, &vs, &fe)) < 0)
                return rc;
            while (fe > next && (buf[fe - 1] == ' ' || buf[fe - 1] == '\t'))
                fe--;
            if (fe > next)
                ve = fe;
            next = nl + 1;
        }
        nm_push_meta_kv(o, (uint32_t)ls, (uint32_t)(ne - ls), (uint32_t)vs,
                        (uint32_t)(ve - vs), NM_META_LOWERCASE_KEY);
        if (!deferred && (rc = h1_special(d, h, buf, ls, ne, vs, ve))) {
            deferred = rc;
            why = d->error_reason;
        }
        ls = next;
    }
    if (deferred)
        return nm_fail(d, deferred, why);
    return 0;
}

/* Absolute-form target: its authority wins over Host (RFC 9112 3.2.2). */
static int h1_absolute_authority(const uint8_t *buf, size_t t, size_t te,
                                 size_t *as, size_t *ae)
{
    size_t i = t;
    while (i < te && ((buf[i] | 0x20) >= 'a' && (buf[i] | 0x20) <= 'z'))
        i++;
    if (i == t || te - i < 3 || memcmp(buf + i, "://", 3) != 0)
        return 0;
    *as = i += 3;
    while (i < te && buf[i] != '/' && buf[i] != '?' && buf[i] != '#')
        i++;
    *ae = i;
    return 1;
}

enum { H1_BODY_NONE, H1_BODY_LENGTH, H1_BODY_CHUNKED, H1_BODY_CLOSE };

static int h1_frame(nm_decoder *d, const uint8_t *buf, size_t len, size_t pos,
                    nm_frame *f, nm_out *o)
{
    uint64_t *st = d->state;
    size_t maxh = NM_LIMIT(d, max_header_bytes), p = pos;
    int req = d->opt.direction == NM_DIR_REQUEST;

    if (st[H1_ST_FLAGS] & H1_STOPPED) {
        d->need = UINT32_MAX;        /* the rest of the stream is not HTTP */
        return 0;
    }
    while (req && p < len && (buf[p] == '\r' || buf[p] == '\n')) {  /* RFC 9112 2.2 */
        if (buf[p] == '\n' && !h1_lenient(d, NM_HTTP_LENIENT_LF_ONLY))
            return nm_fail(d, NM_E_PROTOCOL, "bare LF line ending");
        if (buf[p] == '\r') {
            if (p + 1 >= len)
                return 0;
            if (buf[p + 1] != '\n')
                return nm_fail(d, NM_E_PROTOCOL, "bare CR");
            p++;
        }
        if (++p - pos > maxh)
            return nm_fail(d, NM_E_FRAME_TOO_LARGE, "header section larger than max_header_bytes");
    }
    if (p >= len)
        return 0;
    if (req ? !H1_IS(buf[p], H1_TCHAR) : buf[p] != 'H')
        return nm_fail(d, NM_E_PROTOCOL, req ? "invalid method" : "invalid status line");

    size_t he = st[H1_ST_HEAD] ? pos + st[H1_ST_HEAD] : 0;
    if (!he) {
        size_t from = st[H1_ST_SCAN] ? pos + st[H1_ST_SCAN] - 1 : p;
        he = h1_head_end(buf, len, from);
    }
    if (!he || he - pos > maxh) {
        /* Validate what is there (up to the limit) so bad input fails before
         * the rest arrives, and the same way however the bytes were split. */
        int rc = nm_h1_early(d, buf, len - pos > maxh ? pos + maxh : len, pos, p);
        if (rc || (he ? he : len) - pos <= maxh)
            return rc;
        return nm_fail(d, NM_E_FRAME_TOO_LARGE, "header section larger than max_header_bytes");
    }

    /* Start line. */
    const uint8_t *nlp = memchr(buf + p, '\n', he - p);
    size_t nl = (size_t)(nlp - buf), target = 0, target_end = 0;
    int rc, status = 0, is_connect = 0;
    int minor = nm_h1_start_line(d, buf, p, nl, o, &is_connect, &target, &target_end, &status);
    if (minor < 0)
        return minor;

    h1_head h;
    memset(&h, 0, sizeof(h));
    if ((rc = h1_headers(d, buf, nl + 1, he, &h, o)))
        return rc;
    size_t as, ae;
    if (req && h1_absolute_authority(buf, target, target_end, &as, &ae))
        nm_push_meta(o, NM_KEY_AUTHORITY, (uint32_t)as, (uint32_t)(ae - as));
    else if (req && is_connect)
        nm_push_meta(o, NM_KEY_AUTHORITY, (uint32_t)target, (uint32_t)(target_end - target));
    else if (h.has_host)
        nm_push_meta(o, NM_KEY_AUTHORITY, h.host_off, h.host_len);

    /* Message length (RFC 9112 6.3), refusing anything ambiguous. */
    int keepalive = minor == 1 ? !h.conn_close : (h.conn_keepalive && !h.conn_close);
    if (h.has_te && h.has_cl) {
        if (!h1_lenient(d, NM_HTTP_LENIENT_TE_CL))
            return nm_fail(d, NM_E_SMUGGLING, "Transfer-Encoding with Content-Length");
        h.has_cl = 0;
        keepalive = 0;
    }
    if (h.has_te && minor == 0)
        return nm_fail(d, NM_E_SMUGGLING, "Transfer-Encoding in an HTTP/1.0 message");
    if (h.te_chunked > 1)
        return nm_fail(d, NM_E_SMUGGLING, "chunked applied more than once");
    if (req && h.has_te && !h.te_last_chunked)
        return nm_fail(d, NM_E_SMUGGLING, "request Transfer-Encoding not ending in chunked");

    uint32_t expect = (uint32_t)(st[H1_ST_QUEUE] & 3);
    int upgrade = 0, body;
    if (req) {
        upgrade = is_connect || (h.has_upgrade && h.conn_upgrade);
        body = h.has_te ? H1_BODY_CHUNKED : h.has_cl ? H1_BODY_LENGTH : H1_BODY_NONE;
    } else {
        upgrade = status == 101 ||
                  (expect == NM_HTTP1_EXPECT_CONNECT && status >= 200 && status < 300);
        if (status < 200 || status == 204 || status == 304 || upgrade ||
            (st[H1_ST_QLEN] && expect == NM_HTTP1_EXPECT_HEAD))
            body = H1_BODY_NONE;
        else if (h.has_te)
            body = h.te_last_chunked ? H1_BODY_CHUNKED : H1_BODY_CLOSE;
        else
            body = h.has_cl ? H1_BODY_LENGTH : H1_BODY_CLOSE;
    }

    size_t end = he;
    uint64_t maxf = NM_LIMIT(d, max_frame_size);
    if (body == H1_BODY_LENGTH) {
        if (h.cl > maxf || (he - pos) + h.cl > maxf)
            return nm_fail(d, NM_E_FRAME_TOO_LARGE, "Content-Length larger than max_frame_size");
        end = he + (size_t)h.cl;
        if (end > len) {
            d->need = (uint32_t)(end - pos);
            st[H1_ST_HEAD] = he - pos;
            return 0;
        }
    } else if (body == H1_BODY_CHUNKED) {
        int64_t r = nm_h1_chunked(d, buf, len, pos, he);
        if (r <= 0) {
            st[H1_ST_HEAD] = he - pos;
            return (int)r;
        }
        end = (size_t)r;
    }
    if ((uint64_t)(end - pos) > maxf)
        return nm_fail(d, NM_E_FRAME_TOO_LARGE, "message larger than max_frame_size");

    f->kind = req ? NM_KIND_REQUEST : status < 200 ? NM_KIND_EVENT : NM_KIND_RESPONSE;
    f->status = status;
    f->variant = (uint32_t)minor;
    f->body_offset = (uint32_t)(he - pos);
    f->flags = (keepalive && body != H1_BODY_CLOSE ? NM_FRAME_KEEPALIVE : 0) |
               (body == H1_BODY_CHUNKED ? NM_FRAME_CHUNKED : 0) |
               (upgrade ? NM_FRAME_UPGRADE : 0) |
               (body == H1_BODY_CLOSE ? NM_FRAME_UNTIL_CLOSE : 0);

    /* codec.c drops (and retries) a frame whose metadata overflowed when
     * frames precede it: only commit state for a frame that is kept. */
    if (!(o->meta_overflow && o->nframes > 0)) {
        st[H1_ST_SCAN] = st[H1_ST_HEAD] = st[H1_ST_RESUME] = st[H1_ST_EARLY] = 0;
        if (!req && status >= 200 && st[H1_ST_QLEN]) {
            st[H1_ST_QUEUE] >>= 2;
            st[H1_ST_QLEN]--;
        }
        if (upgrade || body == H1_BODY_CLOSE)
            st[H1_ST_FLAGS] |= H1_STOPPED;
    }
    return (int)(end - pos);
}

int nm_http1_expect(nm_decoder *d, uint32_t what)
{
    if (!d || d->protocol != NM_PROTO_HTTP1 || d->opt.direction != NM_DIR_RESPONSE ||
        what > NM_HTTP1_EXPECT_CONNECT)
        return NM_E_ARGUMENT;
    if (d->state[H1_ST_QLEN] >= 32)
        return NM_E_BUFFER;
    d->state[H1_ST_QUEUE] |= (uint64_t)what << (2 * d->state[H1_ST_QLEN]);
    d->state[H1_ST_QLEN]++;
    return NM_OK;
}

const nm_codec_ops nm_http1_ops = {
    .name = "http1",
    .frame = h1_frame,
    .build_error = nm_h1_build_error,
};
