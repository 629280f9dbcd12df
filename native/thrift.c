/*
 * Thrift codec: transport (framed / unframed) and protocol (binary strict
 * or not / compact) detection, one message per frame, metadata.
 *
 * d->state[0] holds the connection's pinned variant: the NM_THRIFT_* bits
 * given in the options, completed by detection from the first bytes, plus
 * NM_THRIFT_STRICT or TH_PIN_LOOSE once a binary connection has shown which
 * header it uses (unless the options accept both: NM_THRIFT_BINARY alone).
 */
#include "thrift.h"

static int th_init(nm_decoder *d)
{
    uint32_t v = d->opt.thrift;
    if (v & ~(uint32_t)(TH_PROTO_MASK | TH_TRANSPORT_MASK | NM_THRIFT_STRICT))
        return NM_E_ARGUMENT;
    if ((v & TH_PROTO_MASK) == TH_PROTO_MASK ||
        (v & TH_TRANSPORT_MASK) == TH_TRANSPORT_MASK)
        return NM_E_ARGUMENT;
    if ((v & NM_THRIFT_STRICT) && (v & NM_THRIFT_COMPACT))
        return NM_E_ARGUMENT;
    if (v & NM_THRIFT_STRICT)
        v |= NM_THRIFT_BINARY;
    d->state[0] = v;
    return NM_OK;
}

/* A frame length that can never be right fails before the frame is here. */
static int th_frame_length(nm_decoder *d, const uint8_t *p)
{
    uint32_t n = nm_be32(p);
    if (n & 0x80000000u)
        return nm_fail(d, NM_E_PROTOCOL, "negative thrift frame length");
    if (n == 0)
        return nm_fail(d, NM_E_PROTOCOL, "empty thrift frame");
    if ((uint64_t)n + 4 > NM_LIMIT(d, max_frame_size))
        return nm_fail(d, NM_E_FRAME_TOO_LARGE, "thrift frame larger than max_frame_size");
    return 1;
}

/* Fill in the transport and protocol bits still unknown from the first
 * bytes at p. Decides only on bytes 0..5, so any split gives the same. */
static int th_detect(nm_decoder *d, const uint8_t *p, size_t avail,
                     uint32_t *v)
{
    if (avail < 1)
        return 0;
    if (!(*v & TH_TRANSPORT_MASK)) {
        if (p[0] == 0x80 || p[0] == 0x82) {
            *v |= NM_THRIFT_UNFRAMED;
        } else if (p[0] & 0x80) {
            return nm_fail(d, NM_E_PROTOCOL, "not a thrift message");
        } else if (*v & NM_THRIFT_COMPACT) {
            *v |= NM_THRIFT_FRAMED;       /* unframed compact starts 0x82 */
        } else {
            if (avail < 6) {
                d->need = 6;
                return 0;
            }
            /* 0x80 / 0x82 / THeader magic after a length: framed. Else a
             * non-strict binary header: framed when the name length after
             * the frame length starts with a zero byte, unframed when the
             * method name itself starts there. */
            if (p[4] >= 0x80 || p[4] == 0x0f || p[4] == 0)
                *v |= NM_THRIFT_FRAMED;
            else
                *v |= NM_THRIFT_UNFRAMED;
        }
    }
    if (!(*v & TH_PROTO_MASK)) {
        size_t at = (*v & NM_THRIFT_FRAMED) ? 4 : 0;
        int rc;
        if (at && avail >= 4 && (rc = th_frame_length(d, p)) < 0)
            return rc;
        if (avail <= at) {
            d->need = avail < 4 ? (uint32_t)at : (uint32_t)at + 1;
            return 0;
        }
        *v |= p[at] == 0x82 ? NM_THRIFT_COMPACT : NM_THRIFT_BINARY;
    }
    return 1;
}

/* Binary strictness: pinned by the first message unless accepted both. */
static int th_check_strict(nm_decoder *d, uint32_t *v, uint32_t strict)
{
    if ((*v & NM_THRIFT_STRICT) && !strict)
        return nm_fail(d, NM_E_PROTOCOL, "non-strict thrift header on a strict connection");
    if ((*v & TH_PIN_LOOSE) && strict)
        return nm_fail(d, NM_E_PROTOCOL, "strict thrift header on a non-strict connection");
    if (!(d->opt.thrift & TH_PROTO_MASK))
        *v |= strict ? NM_THRIFT_STRICT : TH_PIN_LOOSE;
    return 1;
}

static const uint32_t th_kinds[5] = {
    0, NM_KIND_REQUEST, NM_KIND_RESPONSE, NM_KIND_ERROR, NM_KIND_ONEWAY
};

/* Framed: the length prefix, validated before the frame is all here. */
static int th_frame_prefix(nm_decoder *d, const uint8_t *p, size_t avail,
                           uint32_t v, uint32_t *total)
{
    if (avail < 4)
        return 0;
    uint32_t n = nm_be32(p);
    int rc;
    if (avail >= 6 && p[4] == 0x0f && p[5] == 0xff)
        return nm_fail(d, NM_E_UNSUPPORTED, "thrift THeader transport");
    if ((rc = th_frame_length(d, p)) < 0)
        return rc;
    if (avail >= 5) {
        if ((v & NM_THRIFT_COMPACT) && p[4] != 0x82)
            return nm_fail(d, NM_E_PROTOCOL, "bad thrift compact protocol id");
        if ((v & NM_THRIFT_BINARY) && p[4] > 0x80)
            return nm_fail(d, NM_E_PROTOCOL, "bad thrift binary version");
    }
    *total = n + 4;
    if (avail < *total) {
        d->need = *total;
        return 0;
    }
    return 1;
}

static int th_frame(nm_decoder *d, const uint8_t *buf, size_t len,
                    size_t pos, nm_frame *f, nm_out *o)
{
    uint32_t v = (uint32_t)d->state[0];
    size_t avail = len - pos;
    int rc;
    if (!(v & TH_PROTO_MASK) || !(v & TH_TRANSPORT_MASK)) {
        if ((rc = th_detect(d, buf + pos, avail, &v)) <= 0)
            return rc;
        d->state[0] = v;
    }
    uint64_t max = NM_LIMIT(d, max_frame_size);
    th_cursor c = { .buf = buf, .max_elements = NM_LIMIT(d, max_elements) };
    c.max_depth = NM_LIMIT(d, max_depth) < TH_STACK_MAX ?
                  NM_LIMIT(d, max_depth) : TH_STACK_MAX;
    size_t start = pos;
    if (v & NM_THRIFT_FRAMED) {
        uint32_t total;
        if ((rc = th_frame_prefix(d, buf + pos, avail, v, &total)) <= 0)
            return rc;
        start = pos + 4;
        c.end = c.limit = pos + total;
        c.framed = 1;
    } else {
        c.limit = pos + (size_t)max;
        c.end = c.limit < len ? c.limit : len;
    }
    uint32_t proto = v & TH_PROTO_MASK;
    th_header h;
    rc = th_read_header(&c, start, proto, &h);
    if (rc > 0 && proto == NM_THRIFT_BINARY &&
        (rc = th_check_strict(d, &v, h.strict)) < 0)
        return rc;
    if (rc > 0) {
        size_t p = h.body;
        c.want_message = h.type == TH_EXCEPTION;
        rc = proto == NM_THRIFT_COMPACT ? th_skip_compact(&c, &p)
                                        : th_skip_binary(&c, &p);
        if (rc > 0 && c.framed && p != c.end)
            return nm_fail(d, NM_E_PROTOCOL, "thrift frame length does not match message");
        if (rc > 0)
            c.end = p;
    }
    if (rc == 0) {
        if (!c.framed)
            d->need = (uint32_t)(c.need - pos);
        return 0;
    }
    if (rc < 0)
        return nm_fail(d, rc, c.reason);
    d->state[0] = v;

    f->kind = th_kinds[h.type];
    f->status = (int32_t)h.type;
    f->request_id = h.seqid;
    f->body_offset = (uint32_t)(h.body - pos);
    f->id_offset = h.id_off - (uint32_t)pos;
    f->id_length = h.id_len;
    f->variant = (v & (TH_PROTO_MASK | TH_TRANSPORT_MASK)) |
                 (h.strict ? NM_THRIFT_STRICT : 0);
    nm_push_meta(o, NM_KEY_METHOD, h.name_off, h.name_len);
    if (c.has_msg)
        nm_push_meta(o, NM_KEY_MESSAGE, c.msg_off, c.msg_len);
    return (int)(c.end - pos);
}

const nm_codec_ops nm_thrift_ops = {
    .name = "thrift",
    .frame = th_frame,
    .rewrite_id = th_rewrite_id,
    .build_error = th_build_error,
    .init = th_init,
};
