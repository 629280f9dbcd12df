/*
 * Dubbo 2.x framing, with the hessian2 request body read for routing.
 *
 * header (16 bytes): magic 0xdabb | flag | status | request id (8, BE) |
 * body length (4, BE). flag: 0x80 request, 0x40 two-way, 0x20 event, low 5
 * bits the serialization id. Bodies in another serialization are framed
 * only (NM_FRAME_BODY_OPAQUE); f->variant is the serialization id.
 */
#include "hessian2.h"

#define DUBBO_HEADER 16
#define DUBBO_MAGIC 0xdabb
#define FLAG_REQUEST 0x80
#define FLAG_TWOWAY 0x40
#define FLAG_EVENT 0x20
#define SER_MASK 0x1f
#define SER_HESSIAN2 2
#define SER_FASTJSON 6
#define SER_KRYO 8
#define SER_NATIVE_HESSIAN 10
#define SER_GSON 16
#define SER_KRYO2 25

#define STATUS_OK 20
#define STATUS_SERVER_TIMEOUT 31
#define STATUS_BAD_REQUEST 40
#define STATUS_SERVICE_NOT_FOUND 60
#define STATUS_SERVER_ERROR 80
#define STATUS_THREADPOOL_EXHAUSTED 100

/* Counts the parameters of a JVM method descriptor, chunk by chunk. */
typedef struct {
    uint32_t count;
    uint8_t in_class;   /* inside L...; */
    uint8_t in_array;   /* after '[' and before its element type */
    uint8_t bad;
} param_counter;

static void count_params(void *ctx, const uint8_t *p, uint32_t n)
{
    param_counter *pc = ctx;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (pc->in_class) {
            if (c == ';') {
                pc->in_class = 0;
                pc->count++;
            }
            continue;
        }
        switch (c) {
        case 'Z': case 'B': case 'C': case 'S': case 'I': case 'J': case 'F': case 'D':
            pc->in_array = 0;
            pc->count++;
            break;
        case 'L':
            pc->in_class = 1;
            pc->in_array = 0;
            break;
        case '[':
            pc->in_array = 1;
            break;
        default:
            pc->bad = 1;
        }
    }
}

static int body_fail(nm_decoder *d, const nm_h2 *h, int rc)
{
    return nm_fail(d, rc, h->reason ? h->reason : "dubbo: malformed hessian2 body");
}

/* Well-known keys an attachment of the same name would repeat. */
static uint32_t well_known_key(const uint8_t *k, uint32_t n)
{
    if (n == 9 && !memcmp(k, "interface", 9)) return NM_KEY_INTERFACE;
    if (n == 7 && !memcmp(k, "version", 7)) return NM_KEY_VERSION;
    if (n == 6 && !memcmp(k, "method", 6)) return NM_KEY_METHOD;
    return NM_KEY_CUSTOM;
}

/* attachments ::= null | ('H' | 'M' type) (key value)* 'Z' */
static int read_attachments(nm_decoder *d, nm_h2 *h, nm_out *o, uint32_t emitted)
{
    const uint8_t *b = h->buf;
    uint8_t t = b[h->pos++];
    int rc;
    if (t == 'N')
        return NM_OK;
    if (t == 'M') {
        if ((rc = nm_h2_type(h)) < 0)
            return body_fail(d, h, rc);
    } else if (t != 'H') {
        return nm_fail(d, NM_E_PROTOCOL, "dubbo: attachments are not a map");
    }
    h->nrefs++;
    for (uint32_t count = 0;; count++) {
        if (h->pos >= h->end)
            return nm_fail(d, NM_E_PROTOCOL, "dubbo: attachments run past the body");
        if (b[h->pos] == 'Z') {
            h->pos++;
            return NM_OK;
        }
        if (count >= NM_LIMIT(d, max_headers))
            return nm_fail(d, NM_E_TOO_MANY_HEADERS, "dubbo: more attachments than max_headers");
        nm_h2_str key = {0, 0, 1, 0}, val = {0, 0, 1, 0};
        rc = nm_h2_is_string_tag(b[h->pos]) ? nm_h2_string(h, &key, NULL, NULL)
                                              : nm_h2_skip(h, 1);
        if (rc < 0)
            return body_fail(d, h, rc);
        if (h->pos >= h->end)
            return nm_fail(d, NM_E_PROTOCOL, "dubbo: attachments run past the body");
        rc = nm_h2_is_string_tag(b[h->pos]) ? nm_h2_string(h, &val, NULL, NULL)
                                              : nm_h2_skip(h, 1);
        if (rc < 0)
            return body_fail(d, h, rc);
        if (key.is_null || key.chunked || val.is_null || val.chunked)
            continue;
        uint32_t known = well_known_key(b + key.off, key.len);
        if (known && (emitted & (1u << known)))
            continue;   /* the body's own field says it already */
        nm_push_meta_kv(o, key.off, key.len, val.off, val.len, 0);
    }
}

/*
 * Request body: dubbo version, service path, service version, method name,
 * parameter descriptor, one value per parameter, attachments. The body may
 * stop after the method name (Envoy's test messages do) or after the last
 * argument (no attachments); anywhere else it is malformed.
 */
static int read_request(nm_decoder *d, const uint8_t *buf, uint32_t body,
                        uint32_t end, nm_out *o)
{
    static const uint32_t keys[5] = {
        NM_KEY_DUBBO_VERSION, NM_KEY_INTERFACE, NM_KEY_VERSION,
        NM_KEY_METHOD, NM_KEY_PARAM_TYPES,
    };
    nm_h2 h;
    param_counter pc = {0, 0, 0, 0};
    uint32_t emitted = 0;
    int rc;
    nm_h2_init(&h, buf, body, end, &d->opt.limits);
    for (int i = 0; i < 5; i++) {
        if (i == 4 && h.pos == end)
            return NM_OK;
        nm_h2_str s;
        rc = nm_h2_string(&h, &s, i == 4 ? count_params : NULL, &pc);
        if (rc < 0)
            return body_fail(d, &h, rc);
        if (!s.is_null && !s.chunked) {
            nm_push_meta(o, keys[i], s.off, s.len);
            emitted |= 1u << keys[i];
        }
    }
    if (pc.bad || pc.in_class || pc.in_array)
        return nm_fail(d, NM_E_PROTOCOL, "dubbo: bad parameter type descriptor");
    if (pc.count > NM_LIMIT(d, max_elements))
        return nm_fail(d, NM_E_TOO_MANY_ELEMENTS, "dubbo: more parameters than max_elements");
    for (uint32_t i = 0; i < pc.count; i++)
        if ((rc = nm_h2_skip(&h, 0)) < 0)
            return body_fail(d, &h, rc);
    if (h.pos == end)
        return NM_OK;
    if ((rc = read_attachments(d, &h, o, emitted)) < 0)
        return rc;
    if (h.pos != end)
        return nm_fail(d, NM_E_PROTOCOL, "dubbo: bytes after the attachments");
    return NM_OK;
}

/* An event body that is a serialized null is a heartbeat. Other
 * serializations' nulls are recognised where they are one known form. */
static int is_null_body(uint32_t ser, const uint8_t *p, uint32_t n)
{
    if (n == 0)
        return 1;
    switch (ser) {
    case SER_HESSIAN2:
    case SER_NATIVE_HESSIAN:
        return n == 1 && p[0] == 'N';
    case SER_FASTJSON:
    case SER_GSON:
        return (n == 4 || n == 5) && !memcmp(p, "null", 4) && (n == 4 || p[4] == '\n');
    case SER_KRYO:
    case SER_KRYO2:
        return n == 1 && p[0] == 0;
    default:
        return 0;
    }
}

static int dubbo_frame(nm_decoder *d, const uint8_t *buf, size_t len,
                       size_t pos, nm_frame *f, nm_out *o)
{
    const uint8_t *p = buf + pos;
    size_t avail = len - pos;
    if ((avail >= 1 && p[0] != 0xda) || (avail >= 2 && p[1] != 0xbb))
        return nm_fail(d, NM_E_PROTOCOL, "dubbo: bad magic");
    if (avail < DUBBO_HEADER) {
        d->need = DUBBO_HEADER;
        return 0;
    }
    uint32_t body_len = nm_be32(p + 12);
    if (body_len > INT32_MAX - DUBBO_HEADER)
        return nm_fail(d, NM_E_PROTOCOL, "dubbo: negative body length");
    uint32_t total = DUBBO_HEADER + body_len;
    if (total > NM_LIMIT(d, max_frame_size))
        return nm_fail(d, NM_E_FRAME_TOO_LARGE, "dubbo: frame larger than max_frame_size");
    if (avail < total) {
        d->need = total;
        return 0;
    }
    uint8_t flag = p[2];
    uint32_t ser = flag & SER_MASK;
    f->request_id = nm_be64(p + 4);
    f->id_offset = 4;
    f->id_length = 8;
    f->body_offset = DUBBO_HEADER;
    f->variant = ser;
    if (ser != SER_HESSIAN2)
        f->flags |= NM_FRAME_BODY_OPAQUE;
    if (!(flag & FLAG_REQUEST))
        f->status = p[3];
    if (flag & FLAG_EVENT) {
        f->kind = is_null_body(ser, p + DUBBO_HEADER, body_len) ? NM_KIND_HEARTBEAT
                                                                : NM_KIND_EVENT;
    } else if (flag & FLAG_REQUEST) {
        f->kind = flag & FLAG_TWOWAY ? NM_KIND_REQUEST : NM_KIND_ONEWAY;
        if (ser == SER_HESSIAN2) {
            uint32_t body = (uint32_t)pos + DUBBO_HEADER;
            int rc = read_request(d, buf, body, body + body_len, o);
            if (rc < 0)
                return rc;
        }
    } else {
        f->kind = p[3] == STATUS_OK ? NM_KIND_RESPONSE : NM_KIND_ERROR;
    }
    return (int)total;
}

/* The serialization a reply is written in: hessian2 unless the request
 * used a hessian form (Dubbo clients read a reply by its own flag). */
static uint8_t reply_serialization(const nm_frame *f)
{
    return f->variant == SER_NATIVE_HESSIAN ? SER_NATIVE_HESSIAN : SER_HESSIAN2;
}

static void put_header(nm_writer *w, uint8_t flag, uint8_t status, uint64_t id)
{
    uint8_t h[DUBBO_HEADER];
    nm_put_be16(h, DUBBO_MAGIC);
    h[2] = flag;
    h[3] = status;
    nm_put_be64(h + 4, id);
    nm_put_be32(h + 12, 0);     /* body length, set by finish() */
    nm_w_bytes(w, h, sizeof h);
}

static int64_t finish(nm_writer *w)
{
    if (!w->overflow)
        nm_put_be32(w->p + 12, (uint32_t)(w->len - DUBBO_HEADER));
    return nm_w_done(w);
}

static int is_request_frame(const uint8_t *buf, size_t len, const nm_frame *f)
{
    return f->length >= DUBBO_HEADER && f->offset + DUBBO_HEADER <= len &&
           nm_be16(buf + f->offset) == DUBBO_MAGIC &&
           (buf[f->offset + 2] & FLAG_REQUEST);
}

/* A response with an error status whose body is the message (as Dubbo
 * writes a non-OK response). */
static int64_t dubbo_error(const nm_decoder *d, const uint8_t *buf, size_t len,
                           const nm_frame *f, const nm_meta *meta,
                           uint32_t reason, const char *msg, size_t msg_len,
                           uint8_t *out, size_t cap)
{
    static const uint8_t status_for[] = {
        [NM_REPLY_NO_ROUTE] = STATUS_SERVICE_NOT_FOUND,
        [NM_REPLY_NO_UPSTREAM] = STATUS_SERVER_ERROR,
        [NM_REPLY_OVERLOADED] = STATUS_THREADPOOL_EXHAUSTED,
        [NM_REPLY_RATE_LIMITED] = STATUS_THREADPOOL_EXHAUSTED,
        [NM_REPLY_TIMEOUT] = STATUS_SERVER_TIMEOUT,
        [NM_REPLY_BAD_REQUEST] = STATUS_BAD_REQUEST,
        [NM_REPLY_INTERNAL] = STATUS_SERVER_ERROR,
    };
    (void)d; (void)meta;
    if (!is_request_frame(buf, len, f))
        return NM_E_ARGUMENT;
    nm_writer w = { out, 0, cap, 0 };
    put_header(&w, reply_serialization(f), status_for[reason], f->request_id);
    int rc = nm_h2_write_string(&w, (const uint8_t *)msg, msg_len);
    if (rc < 0)
        return rc;
    return finish(&w);
}

static int64_t write_heartbeat(uint8_t flag, uint8_t status, uint64_t id,
                               uint8_t *out, size_t cap)
{
    nm_writer w = { out, 0, cap, 0 };
    put_header(&w, flag, status, id);
    nm_w_byte(&w, 'N');
    return finish(&w);
}

static int64_t dubbo_heartbeat_reply(const nm_decoder *d, const uint8_t *buf,
                                     size_t len, const nm_frame *f,
                                     uint8_t *out, size_t cap)
{
    (void)d;
    if (!is_request_frame(buf, len, f) || !(buf[f->offset + 2] & FLAG_EVENT))
        return NM_E_ARGUMENT;
    return write_heartbeat(FLAG_EVENT | reply_serialization(f), STATUS_OK,
                           f->request_id, out, cap);
}

static int64_t dubbo_heartbeat(const nm_decoder *d, uint64_t request_id,
                               uint8_t *out, size_t cap)
{
    (void)d;
    return write_heartbeat(FLAG_REQUEST | FLAG_TWOWAY | FLAG_EVENT | SER_HESSIAN2, 0,
                           request_id, out, cap);
}

const nm_codec_ops nm_dubbo_ops = {
    .name = "dubbo",
    .frame = dubbo_frame,
    .build_error = dubbo_error,
    .heartbeat_reply = dubbo_heartbeat_reply,
    .heartbeat = dubbo_heartbeat,
};
