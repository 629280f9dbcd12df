/*
 * The configurable length-field codec: private RPC protocols described by
 * d->opt.lengthfield (Netty LengthFieldBasedFrameDecoder terms), no C per
 * protocol. Decoding and configuration checks live here; the replies built
 * from a request's header are in lengthfield_reply.c.
 *
 * Frame length (Netty semantics):
 *   length_includes_header = 0: length_offset + length_size + value + adjustment
 *   length_includes_header = 1: value + adjustment
 * The fixed header (header_length bytes) holds the magic, request id, kind
 * byte and metadata fields; a frame shorter than it is malformed.
 */
#include "lengthfield.h"

uint64_t nm_lf_read(const uint8_t *p, uint32_t n, int little)
{
    uint64_t v = 0;
    for (uint32_t i = 0; i < n; i++)
        v |= (uint64_t)(little ? p[i] : p[n - 1 - i]) << (8 * i);
    return v;
}

void nm_lf_write(uint8_t *p, uint32_t n, int little, uint64_t v)
{
    for (uint32_t i = 0; i < n; i++)
        p[little ? i : n - 1 - i] = (uint8_t)(v >> (8 * i));
}

/* Does a field of n bytes at off lie within the fixed header? */
static int within(uint64_t off, uint64_t n, uint64_t header)
{
    return off + n <= header;
}

/* Do two byte ranges stay apart (an empty one always does)? */
static int apart(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return !alen || !blen || a + alen <= b || b + blen <= a;
}

static int bad(nm_decoder *d, const char *reason)
{
    return nm_fail(d, NM_E_ARGUMENT, reason);
}

static int lf_init(nm_decoder *d)
{
    const nm_lengthfield_config *c = &d->opt.lengthfield;
    uint32_t ls = c->length_size;
    if (ls != 1 && ls != 2 && ls != 3 && ls != 4 && ls != 8)
        return bad(d, "length_size must be 1, 2, 3, 4 or 8");
    if (c->length_offset > 65536 || c->header_length > 65536 || c->kv_offset > 65536)
        return bad(d, "offsets and header_length must be at most 65536");
    uint64_t header = c->header_length;
    if (header == 0)
        header = (uint64_t)c->length_offset + ls;
    if (!within(c->length_offset, ls, header))
        return bad(d, "length field lies past header_length");
    if (c->magic_size > 4)
        return bad(d, "magic_size must be 0..4");
    if (c->magic_size && !within(0, c->magic_size, header))
        return bad(d, "magic lies past header_length");
    if (c->magic_size < 4 && (c->magic >> (8 * c->magic_size)) != 0)
        return bad(d, "magic does not fit magic_size bytes");
    if (c->id_size > 8)
        return bad(d, "id_size must be 0..8");
    if (c->id_size && !within(c->id_offset, c->id_size, header))
        return bad(d, "request id field lies past header_length");
    uint32_t masks = c->kind_response_mask | c->kind_oneway_mask | c->kind_heartbeat_mask;
    if (masks > 0xff)
        return bad(d, "kind masks are bits of one byte");
    if (masks && !c->kind_present)
        return bad(d, "kind masks need kind_offset");
    if (c->kind_present && !within(c->kind_offset, 1, header))
        return bad(d, "kind byte lies past header_length");
    if (c->nfields > NM_LF_MAX_FIELDS)
        return bad(d, "too many metadata fields");
    d->state[NM_LF_STATUS_FIELD] = 0;
    for (uint32_t i = 0; i < c->nfields; i++) {
        const nm_lf_field *fl = &c->fields[i];
        if (fl->offset >= header || !within(fl->offset, fl->length, header))
            return bad(d, "metadata field lies past header_length");
        if (fl->is_integer && (fl->length == 0 || fl->length > 8))
            return bad(d, "integer field length must be 1..8");
        if (fl->key_id >= NM_KEY_LF_FIELD0)
            return bad(d, "unknown metadata key id");
        if (!memchr(fl->name, 0, sizeof(fl->name)))
            return bad(d, "field name not NUL-terminated");
        if (fl->key_id == NM_KEY_CUSTOM && !fl->name[0])
            return bad(d, "custom field without a name");
        if (fl->is_integer && strcmp(fl->name, "status") == 0)
            d->state[NM_LF_STATUS_FIELD] = i + 1;
    }
    if (c->kv_offset) {
        if (c->kv_length_size < 1 || c->kv_length_size > 4)
            return bad(d, "kv_length_size must be 1..4");
        if (!c->kv_pair_sep || !c->kv_sep || c->kv_pair_sep == c->kv_sep)
            return bad(d, "kv_pair_sep and kv_sep must be set and differ");
    } else if (c->kv_length_size || c->kv_pair_sep || c->kv_sep) {
        return bad(d, "kv options need kv_offset");
    }
    /* Replies and rewrites write these ranges: none may touch another or the
     * magic. Slots: length, "status" field, id, kind byte, kv length. */
    uint64_t off[5] = {c->length_offset, 0, c->id_offset, c->kind_offset, c->kv_offset};
    uint64_t len[5] = {ls, 0, c->id_size, c->kind_present, c->kv_offset ? c->kv_length_size : 0};
    if (d->state[NM_LF_STATUS_FIELD]) {
        off[1] = c->fields[d->state[NM_LF_STATUS_FIELD] - 1].offset;
        len[1] = c->fields[d->state[NM_LF_STATUS_FIELD] - 1].length;
    }
    for (int i = 0; i < 5; i++) {
        if (!apart(0, c->magic_size, off[i], len[i]))
            return bad(d, "a length, status, id, kind or kv length field overlaps the magic");
        for (int j = i + 1; j < 5; j++)
            if (!apart(off[i], len[i], off[j], len[j]))
                return bad(d, "length, status, id, kind and kv length fields overlap");
    }
    d->state[NM_LF_HEADER] = header;
    return NM_OK;
}

/* Frame length from the length field, or a negative status. */
static int64_t frame_length(nm_decoder *d, const uint8_t *p)
{
    const nm_lengthfield_config *c = &d->opt.lengthfield;
    uint64_t value = nm_lf_read(p + c->length_offset, c->length_size, c->little_endian);
    uint64_t max = NM_LIMIT(d, max_frame_size);
    if (value > max + (uint64_t)0x80000000u)   /* beyond any adjustment */
        return nm_fail(d, NM_E_FRAME_TOO_LARGE, "length field exceeds max_frame_size");
    int64_t total = (int64_t)value + c->length_adjustment;
    if (!c->length_includes_header)
        total += (int64_t)c->length_offset + c->length_size;
    if (total > (int64_t)max)
        return nm_fail(d, NM_E_FRAME_TOO_LARGE, "frame larger than max_frame_size");
    if (total < (int64_t)d->state[NM_LF_HEADER] || total <= 0)
        return nm_fail(d, NM_E_PROTOCOL, "frame length shorter than the header");
    return total;
}

static nm_kind kind_of(const nm_lengthfield_config *c, uint8_t b)
{
    if (c->kind_heartbeat_mask && (b & c->kind_heartbeat_mask))
        return NM_KIND_HEARTBEAT;
    if (c->kind_response_mask && (b & c->kind_response_mask))
        return NM_KIND_RESPONSE;
    if (c->kind_oneway_mask && (b & c->kind_oneway_mask))
        return NM_KIND_ONEWAY;
    return NM_KIND_REQUEST;
}

static void push_fields(nm_decoder *d, const uint8_t *fp, size_t pos, nm_frame *f, nm_out *o)
{
    const nm_lengthfield_config *c = &d->opt.lengthfield;
    uint32_t header = (uint32_t)d->state[NM_LF_HEADER];
    for (uint32_t i = 0; i < c->nfields; i++) {
        const nm_lf_field *fl = &c->fields[i];
        uint32_t key = fl->key_id ? fl->key_id : NM_KEY_LF_FIELD0 + i;
        uint32_t n = fl->length ? fl->length : header - fl->offset;
        if (fl->is_integer) {
            if (i + 1 == d->state[NM_LF_STATUS_FIELD])
                f->status = (int32_t)nm_lf_read(fp + fl->offset, n, c->little_endian);
            if (nm_push_meta(o, key, (uint32_t)(pos + fl->offset), n))
                o->meta[o->nmeta - 1].flags =
                    c->little_endian ? NM_META_INTEGER_LE : NM_META_INTEGER_BE;
            continue;
        }
        const uint8_t *nul = memchr(fp + fl->offset, 0, n);   /* NUL padding */
        if (nul)
            n = (uint32_t)(nul - (fp + fl->offset));
        nm_push_meta(o, key, (uint32_t)(pos + fl->offset), n);
    }
}

/* The "k=v" pairs of the kv section; returns its end (frame-relative) or < 0. */
static int64_t push_kv(nm_decoder *d, const uint8_t *fp, uint32_t flen, size_t pos, nm_out *o)
{
    const nm_lengthfield_config *c = &d->opt.lengthfield;
    uint64_t at = c->kv_offset, ks = c->kv_length_size;
    if (at + ks > flen)
        return nm_fail(d, NM_E_PROTOCOL, "kv section length past the frame end");
    uint64_t n = nm_lf_read(fp + at, (uint32_t)ks, c->little_endian);
    uint64_t start = at + ks, end = start + n;
    if (end > flen)
        return nm_fail(d, NM_E_PROTOCOL, "kv section past the frame end");
    uint32_t pairs = 0;
    for (uint64_t i = start; i < end;) {
        const uint8_t *sep = memchr(fp + i, c->kv_pair_sep, end - i);
        uint64_t stop = sep ? (uint64_t)(sep - fp) : end;
        if (stop > i) {   /* empty pairs (a trailing separator) are skipped */
            const uint8_t *eq = memchr(fp + i, c->kv_sep, stop - i);
            if (!eq || eq == fp + i)
                return nm_fail(d, NM_E_PROTOCOL, "kv pair without a key and separator");
            if (++pairs > NM_LIMIT(d, max_headers))
                return nm_fail(d, NM_E_TOO_MANY_HEADERS, "more kv pairs than max_headers");
            uint64_t k = i, klen = (uint64_t)(eq - fp) - i, v = k + klen + 1;
            nm_push_meta_kv(o, (uint32_t)(pos + k), (uint32_t)klen,
                            (uint32_t)(pos + v), (uint32_t)(stop - v), 0);
        }
        i = stop + 1;
    }
    return (int64_t)end;
}

static int lf_frame(nm_decoder *d, const uint8_t *buf, size_t len, size_t pos,
                    nm_frame *f, nm_out *o)
{
    const nm_lengthfield_config *c = &d->opt.lengthfield;
    const uint8_t *fp = buf + pos;
    size_t avail = len - pos;
    for (uint32_t i = 0; i < c->magic_size && i < avail; i++)
        if (fp[i] != (uint8_t)(c->magic >> (8 * (c->magic_size - 1 - i))))
            return nm_fail(d, NM_E_PROTOCOL, "bad magic");
    size_t need = (size_t)c->length_offset + c->length_size;
    if (avail < need) {
        if (avail >= c->magic_size)   /* else recheck the magic as bytes come */
            d->need = (uint32_t)need;
        return 0;
    }
    int64_t total = frame_length(d, fp);
    if (total < 0)
        return (int)total;
    if (avail < (uint64_t)total) {
        d->need = (uint32_t)total;
        return 0;
    }
    uint32_t flen = (uint32_t)total, header = (uint32_t)d->state[NM_LF_HEADER];
    f->kind = NM_KIND_REQUEST;
    if (c->kind_present) {
        f->variant = fp[c->kind_offset];
        f->kind = kind_of(c, fp[c->kind_offset]);
    }
    if (c->id_size) {
        f->request_id = nm_lf_read(fp + c->id_offset, c->id_size, c->little_endian);
        f->id_offset = c->id_offset;
        f->id_length = c->id_size;
    }
    push_fields(d, fp, pos, f, o);
    f->body_offset = header;
    if (c->kv_offset) {
        int64_t end = push_kv(d, fp, flen, pos, o);
        if (end < 0)
            return (int)end;
        if ((uint64_t)end > header)
            f->body_offset = (uint32_t)end;
    }
    return (int)flen;
}

const nm_codec_ops nm_lengthfield_ops = {
    .name = "lengthfield",
    .frame = lf_frame,
    .rewrite_id = nm_lf_rewrite_id,
    .build_error = nm_lf_build_error,
    .heartbeat_reply = nm_lf_heartbeat_reply,
    .heartbeat = nm_lf_heartbeat,
    .init = lf_init,
};
