/* The protocol-independent half of the codecs: dispatch, the batch loop,
 * limits, and the generic request-id rewrite. */
#include "internal.h"

_Static_assert(sizeof(nm_frame) % 8 == 0, "nm_frame packs into arrays");

static const nm_codec_ops *ops_for(uint32_t protocol)
{
    switch (protocol) {
    case NM_PROTO_DUBBO: return &nm_dubbo_ops;
    case NM_PROTO_THRIFT: return &nm_thrift_ops;
    case NM_PROTO_REDIS: return &nm_redis_ops;
    case NM_PROTO_HTTP1: return &nm_http1_ops;
    case NM_PROTO_LENGTHFIELD: return &nm_lengthfield_ops;
    default: return NULL;
    }
}

static void apply_default_limits(nm_limits *l)
{
    if (!l->max_frame_size) l->max_frame_size = NM_DEFAULT_MAX_FRAME_SIZE;
    if (!l->max_headers) l->max_headers = NM_DEFAULT_MAX_HEADERS;
    if (!l->max_depth) l->max_depth = NM_DEFAULT_MAX_DEPTH;
    if (!l->max_elements) l->max_elements = NM_DEFAULT_MAX_ELEMENTS;
    if (!l->max_pipelined) l->max_pipelined = NM_DEFAULT_MAX_PIPELINED;
    if (!l->max_header_bytes) l->max_header_bytes = NM_DEFAULT_MAX_HEADER_BYTES;
}

size_t nm_decoder_size(void)
{
    return sizeof(nm_decoder);
}

int nm_decoder_init(nm_decoder *d, uint32_t protocol, const nm_options *opt)
{
    const nm_codec_ops *ops = ops_for(protocol);
    if (!d || !ops)
        return NM_E_ARGUMENT;
    memset(d, 0, sizeof(*d));
    d->protocol = protocol;
    if (opt)
        d->opt = *opt;
    else
        d->opt.redis_resp3 = 1;
    if (d->opt.direction > NM_DIR_RESPONSE)
        return NM_E_ARGUMENT;
    apply_default_limits(&d->opt.limits);
    return ops->init ? ops->init(d) : NM_OK;
}

int nm_decode(nm_decoder *d, const uint8_t *buf, size_t len,
              nm_frame *frames, uint32_t max_frames,
              nm_meta *meta, uint32_t max_meta, size_t *consumed)
{
    const nm_codec_ops *ops = ops_for(d ? d->protocol : 0);
    size_t pos = 0;
    *consumed = 0;
    if (!ops)
        return NM_E_ARGUMENT;
    if (d->error)
        return d->error;
    if (len > UINT32_MAX)
        len = UINT32_MAX;   /* spans are 32-bit; the rest waits */
    if (max_frames > NM_LIMIT(d, max_pipelined))
        max_frames = NM_LIMIT(d, max_pipelined);

    nm_out o = { frames, max_frames, 0, meta, max_meta, 0, 0 };
    while (o.nframes < o.max_frames && pos < len) {
        /* d->need is a hint for the caller (how much to buffer before the
         * next call); the protocol is still called, so an error in bytes
         * already here is reported now, however the stream was split. */
        uint32_t meta_mark = o.nmeta;
        nm_frame *f = &frames[o.nframes];
        memset(f, 0, sizeof(*f));
        f->meta_start = meta_mark;
        o.meta_overflow = 0;
        int n = ops->frame(d, buf, len, pos, f, &o);
        if (n < 0) {
            d->error = n;
            d->error_offset = (uint32_t)pos;
            if (!d->error_reason)
                d->error_reason = nm_strerror(n);
            break;
        }
        if (n == 0) {
            o.nmeta = meta_mark;
            break;
        }
        if (o.meta_overflow && o.nframes > 0) {
            o.nmeta = meta_mark;   /* retry this frame with empty arrays */
            break;
        }
        f->offset = pos;
        f->length = (uint32_t)n;
        f->meta_start = meta_mark;
        f->meta_count = o.nmeta - meta_mark;
        d->need = 0;
        pos += (size_t)n;
        o.nframes++;
    }
    *consumed = pos;
    if (o.nframes == 0 && d->error)
        return d->error;
    return (int)o.nframes;
}

int nm_rewrite_request_id(const nm_decoder *d, uint8_t *buf, size_t len,
                          const nm_frame *f, uint64_t new_id)
{
    const nm_codec_ops *ops = ops_for(d ? d->protocol : 0);
    if (!ops || !f)
        return NM_E_ARGUMENT;
    if (ops->rewrite_id)
        return ops->rewrite_id(d, buf, len, f, new_id);
    uint32_t n = f->id_length;
    if (n == 0 || n > 8)
        return NM_E_REWRITE;
    if (f->offset + f->id_offset + n > len)
        return NM_E_ARGUMENT;
    if (n < 8 && (new_id >> (8 * n)) != 0)
        return NM_E_REWRITE;
    uint8_t *p = buf + f->offset + f->id_offset;
    for (uint32_t i = 0; i < n; i++)
        p[i] = (uint8_t)(new_id >> (8 * (n - 1 - i)));
    return NM_OK;
}

int64_t nm_build_error(const nm_decoder *d, const uint8_t *buf, size_t len,
                       const nm_frame *f, const nm_meta *meta,
                       uint32_t reason, const char *message, size_t message_len,
                       uint8_t *out, size_t cap)
{
    const nm_codec_ops *ops = ops_for(d ? d->protocol : 0);
    if (!ops || !f || reason < NM_REPLY_NO_ROUTE || reason > NM_REPLY_INTERNAL)
        return NM_E_ARGUMENT;
    if (f->offset + f->length > len)
        return NM_E_ARGUMENT;
    return ops->build_error(d, buf, len, f, meta, reason, message,
                            message ? message_len : 0, out, cap);
}

int64_t nm_build_heartbeat_reply(const nm_decoder *d, const uint8_t *buf,
                                 size_t len, const nm_frame *f,
                                 uint8_t *out, size_t cap)
{
    const nm_codec_ops *ops = ops_for(d ? d->protocol : 0);
    if (!ops || !f)
        return NM_E_ARGUMENT;
    if (!ops->heartbeat_reply)
        return NM_E_UNSUPPORTED;
    if (f->offset + f->length > len)
        return NM_E_ARGUMENT;
    return ops->heartbeat_reply(d, buf, len, f, out, cap);
}

int64_t nm_build_heartbeat(const nm_decoder *d, uint64_t request_id,
                           uint8_t *out, size_t cap)
{
    const nm_codec_ops *ops = ops_for(d ? d->protocol : 0);
    if (!ops)
        return NM_E_ARGUMENT;
    if (!ops->heartbeat)
        return NM_E_UNSUPPORTED;
    return ops->heartbeat(d, request_id, out, cap);
}

const nm_meta *nm_find_meta(const nm_frame *f, const nm_meta *meta,
                            uint32_t key_id)
{
    if (!meta)
        return NULL;
    for (uint32_t i = 0; i < f->meta_count; i++)
        if (meta[f->meta_start + i].key_id == key_id)
            return &meta[f->meta_start + i];
    return NULL;
}

const char *nm_strerror(int status)
{
    switch (status) {
    case NM_OK: return "ok";
    case NM_E_PROTOCOL: return "malformed frame";
    case NM_E_FRAME_TOO_LARGE: return "frame larger than max_frame_size";
    case NM_E_TOO_MANY_HEADERS: return "more headers than max_headers";
    case NM_E_TOO_DEEP: return "nesting deeper than max_depth";
    case NM_E_TOO_MANY_ELEMENTS: return "more elements than max_elements";
    case NM_E_UNSUPPORTED: return "unsupported protocol feature";
    case NM_E_SMUGGLING: return "ambiguous message length";
    case NM_E_BUFFER: return "output buffer too small";
    case NM_E_ARGUMENT: return "invalid argument";
    case NM_E_REWRITE: return "request id cannot be rewritten in place";
    default: return "unknown error";
    }
}
