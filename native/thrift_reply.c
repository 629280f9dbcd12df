/*
 * Thrift replies and rewrites: the TApplicationException error reply in the
 * request's own protocol and transport, and the in-place seqid rewrite.
 */
#include "thrift.h"

/* TApplicationException.type values (Thrift's TApplicationExceptionType). */
enum {
    TAE_UNKNOWN_METHOD = 1,
    TAE_INTERNAL_ERROR = 6,
    TAE_PROTOCOL_ERROR = 7
};

static uint32_t tae_type(uint32_t reason)
{
    switch (reason) {
    case NM_REPLY_NO_ROUTE: return TAE_UNKNOWN_METHOD;
    case NM_REPLY_BAD_REQUEST: return TAE_PROTOCOL_ERROR;
    default: return TAE_INTERNAL_ERROR;   /* Thrift has no timeout type */
    }
}

static const char *tae_default_message(uint32_t reason)
{
    switch (reason) {
    case NM_REPLY_NO_ROUTE: return "no route for method";
    case NM_REPLY_NO_UPSTREAM: return "no healthy upstream";
    case NM_REPLY_OVERLOADED: return "overloaded";
    case NM_REPLY_RATE_LIMITED: return "rate limited";
    case NM_REPLY_TIMEOUT: return "upstream timeout";
    case NM_REPLY_BAD_REQUEST: return "bad request";
    default: return "internal error";
    }
}

static size_t varint_put(uint8_t *out, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

static void w_varint(nm_writer *w, uint64_t v)
{
    uint8_t tmp[10];
    nm_w_bytes(w, tmp, varint_put(tmp, v));
}

static void w_be32(nm_writer *w, uint32_t v)
{
    uint8_t tmp[4];
    nm_put_be32(tmp, v);
    nm_w_bytes(w, tmp, 4);
}

/*
 * The compact seqid is a varint: a new id is written only if it encodes to
 * the same number of bytes. A different width would shift every byte after
 * it: the frame length of framed transport would have to change, and the
 * caller's spans and offsets into the buffer (metadata, later frames) would
 * all move. Over-long (zero-padded) varints would fit but are not canonical
 * and not every peer accepts them.
 */
int th_rewrite_id(const nm_decoder *d, uint8_t *buf, size_t len,
                  const nm_frame *f, uint64_t new_id)
{
    uint8_t tmp[10];
    (void)d;
    if (f->id_length == 0 || new_id > 0xffffffffu)
        return NM_E_REWRITE;
    if ((uint64_t)f->offset + f->id_offset + f->id_length > len)
        return NM_E_ARGUMENT;
    uint8_t *p = buf + f->offset + f->id_offset;
    if (f->variant & NM_THRIFT_COMPACT) {
        if (varint_put(tmp, new_id) != f->id_length)
            return NM_E_REWRITE;
        memcpy(p, tmp, f->id_length);
        return NM_OK;
    }
    if (f->id_length != 4)
        return NM_E_ARGUMENT;
    nm_put_be32(p, (uint32_t)new_id);
    return NM_OK;
}

int64_t th_build_error(const nm_decoder *d, const uint8_t *buf, size_t len,
                       const nm_frame *f, const nm_meta *meta,
                       uint32_t reason, const char *msg, size_t msg_len,
                       uint8_t *out, size_t cap)
{
    uint32_t v = f->variant;
    uint32_t proto = v & TH_PROTO_MASK;
    (void)d; (void)len; (void)meta;   /* codec.c checked f against len */
    if (f->kind == NM_KIND_ONEWAY)
        return NM_E_UNSUPPORTED;          /* nobody reads a oneway's reply */
    if (f->kind != NM_KIND_REQUEST || !proto || proto == TH_PROTO_MASK)
        return NM_E_ARGUMENT;
    if (msg_len > 0x7fffffff)
        return NM_E_ARGUMENT;
    if (!msg_len) {
        msg = tae_default_message(reason);
        msg_len = strlen(msg);
    }

    /* The method name, re-read from the request itself. */
    size_t start = f->offset + ((v & NM_THRIFT_FRAMED) ? 4 : 0);
    th_cursor c = { .buf = buf, .end = f->offset + f->length, .framed = 1 };
    c.limit = c.end;
    th_header h;
    if (start > c.end || th_read_header(&c, start, proto, &h) <= 0)
        return NM_E_ARGUMENT;
    const uint8_t *name = buf + h.name_off;
    uint32_t seqid = (uint32_t)f->request_id;
    uint32_t type = tae_type(reason);

    nm_writer w = { out, 0, cap, 0 };
    if (v & NM_THRIFT_FRAMED)
        w_be32(&w, 0);                    /* patched below */
    if (proto == NM_THRIFT_COMPACT) {
        nm_w_byte(&w, 0x82);
        nm_w_byte(&w, (uint8_t)(1 | (TH_EXCEPTION << 5)));
        w_varint(&w, seqid);
        w_varint(&w, h.name_len);
        nm_w_bytes(&w, name, h.name_len);
        nm_w_byte(&w, 0x18);              /* field 1 (delta 1), binary */
        w_varint(&w, msg_len);
        nm_w_bytes(&w, msg, msg_len);
        nm_w_byte(&w, 0x15);              /* field 2 (delta 1), i32 */
        w_varint(&w, (uint64_t)type << 1);  /* zigzag of a positive */
        nm_w_byte(&w, 0);
    } else {
        if (v & NM_THRIFT_STRICT) {
            w_be32(&w, 0x80010000u | TH_EXCEPTION);
            w_be32(&w, h.name_len);
            nm_w_bytes(&w, name, h.name_len);
        } else {
            w_be32(&w, h.name_len);
            nm_w_bytes(&w, name, h.name_len);
            nm_w_byte(&w, TH_EXCEPTION);
        }
        w_be32(&w, seqid);
        static const uint8_t f1[3] = { 11, 0, 1 }, f2[3] = { 8, 0, 2 };
        nm_w_bytes(&w, f1, 3);
        w_be32(&w, (uint32_t)msg_len);
        nm_w_bytes(&w, msg, msg_len);
        nm_w_bytes(&w, f2, 3);
        w_be32(&w, type);
        nm_w_byte(&w, 0);
    }
    if (!w.overflow && (v & NM_THRIFT_FRAMED))
        nm_put_be32(out, (uint32_t)(w.len - 4));
    return nm_w_done(&w);
}
