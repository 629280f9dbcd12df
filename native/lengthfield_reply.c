/*
 * Length-field codec replies, all built from the request's own header layout
 * (the codec knows no error body format in general):
 *
 * - error reply: the request's fixed header copied, the kind byte's oneway
 *   and heartbeat bits cleared and its response bit set (when configured),
 *   the integer field named "status" (when configured) set to the
 *   nm_reply_reason code, an empty kv section (when configured), no body;
 *   the length field says exactly that.
 * - heartbeat reply: the same, but the heartbeat bit kept and the status
 *   field left as the request had it.
 * - heartbeat probe: a zeroed header with the magic, length, request id and
 *   the kind byte set to kind_heartbeat_mask.
 * - request id rewrite: in place, in the length field's byte order.
 */
#include "lengthfield.h"

/* Bytes of a header-only frame: the fixed header plus an empty kv section. */
static uint64_t reply_length(const nm_decoder *d)
{
    const nm_lengthfield_config *c = &d->opt.lengthfield;
    uint64_t n = d->state[NM_LF_HEADER];
    if (c->kv_offset && (uint64_t)c->kv_offset + c->kv_length_size > n)
        n = (uint64_t)c->kv_offset + c->kv_length_size;
    return n;
}

/* Write the length field (and the empty kv section) of an n-byte frame at p. */
static int finish(const nm_decoder *d, uint8_t *p, uint64_t n)
{
    const nm_lengthfield_config *c = &d->opt.lengthfield;
    int64_t value = (int64_t)n - c->length_adjustment;
    if (!c->length_includes_header)
        value -= (int64_t)c->length_offset + c->length_size;
    if (value < 0 || (c->length_size < 8 && (uint64_t)value >> (8 * c->length_size)))
        return NM_E_UNSUPPORTED;   /* the layout cannot say "header only" */
    nm_lf_write(p + c->length_offset, c->length_size, c->little_endian, (uint64_t)value);
    if (c->kv_offset)
        nm_lf_write(p + c->kv_offset, c->kv_length_size, c->little_endian, 0);
    return NM_OK;
}

/* Copy the request's header into out and turn it into a header-only reply. */
static int64_t reply_from(const nm_decoder *d, const uint8_t *buf, const nm_frame *f,
                          uint8_t keep_bits, uint8_t *out, size_t cap)
{
    const nm_lengthfield_config *c = &d->opt.lengthfield;
    uint64_t header = d->state[NM_LF_HEADER], n = reply_length(d);
    if (f->length < header)
        return NM_E_ARGUMENT;
    if (n > cap)
        return NM_E_BUFFER;
    memcpy(out, buf + f->offset, header);
    memset(out + header, 0, n - header);
    if (c->kind_present) {
        uint8_t clear = (uint8_t)((c->kind_oneway_mask | c->kind_heartbeat_mask) & ~keep_bits);
        out[c->kind_offset] = (uint8_t)((out[c->kind_offset] & ~clear) | c->kind_response_mask);
    }
    int rc = finish(d, out, n);
    return rc < 0 ? rc : (int64_t)n;
}

int64_t nm_lf_build_error(const nm_decoder *d, const uint8_t *buf, size_t len,
                          const nm_frame *f, const nm_meta *meta, uint32_t reason,
                          const char *msg, size_t msg_len, uint8_t *out, size_t cap)
{
    (void)len; (void)meta; (void)msg; (void)msg_len;
    int64_t n = reply_from(d, buf, f, 0, out, cap);
    uint64_t status = d->state[NM_LF_STATUS_FIELD];
    if (n > 0 && status) {
        const nm_lf_field *fl = &d->opt.lengthfield.fields[status - 1];
        nm_lf_write(out + fl->offset, fl->length, d->opt.lengthfield.little_endian, reason);
    }
    return n;
}

int64_t nm_lf_heartbeat_reply(const nm_decoder *d, const uint8_t *buf, size_t len,
                              const nm_frame *f, uint8_t *out, size_t cap)
{
    const nm_lengthfield_config *c = &d->opt.lengthfield;
    (void)len;
    if (!c->kind_heartbeat_mask)
        return NM_E_UNSUPPORTED;
    if (f->kind != NM_KIND_HEARTBEAT)
        return NM_E_ARGUMENT;
    return reply_from(d, buf, f, (uint8_t)c->kind_heartbeat_mask, out, cap);
}

int64_t nm_lf_heartbeat(const nm_decoder *d, uint64_t request_id, uint8_t *out, size_t cap)
{
    const nm_lengthfield_config *c = &d->opt.lengthfield;
    uint64_t n = reply_length(d);
    if (!c->kind_heartbeat_mask)
        return NM_E_UNSUPPORTED;
    if (c->id_size < 8 && (request_id >> (8 * c->id_size)))
        return NM_E_REWRITE;
    if (n > cap)
        return NM_E_BUFFER;
    memset(out, 0, n);
    nm_lf_write(out, c->magic_size, 0, c->magic);
    out[c->kind_offset] = (uint8_t)c->kind_heartbeat_mask;
    if (c->id_size)
        nm_lf_write(out + c->id_offset, c->id_size, c->little_endian, request_id);
    int rc = finish(d, out, n);
    return rc < 0 ? rc : (int64_t)n;
}

int nm_lf_rewrite_id(const nm_decoder *d, uint8_t *buf, size_t len,
                     const nm_frame *f, uint64_t new_id)
{
    uint32_t n = f->id_length;
    if (n == 0 || n > 8)
        return NM_E_REWRITE;
    if (f->offset + f->id_offset + n > len)
        return NM_E_ARGUMENT;
    if (n < 8 && (new_id >> (8 * n)) != 0)
        return NM_E_REWRITE;
    nm_lf_write(buf + f->offset + f->id_offset, n, d->opt.lengthfield.little_endian, new_id);
    return NM_OK;
}
