/* redis codec: placeholder until the protocol lands. */
#include "internal.h"

static int redis_frame(nm_decoder *d, const uint8_t *buf, size_t len,
                      size_t pos, nm_frame *f, nm_out *o)
{
    (void)buf; (void)len; (void)pos; (void)f; (void)o;
    return nm_fail(d, NM_E_UNSUPPORTED, "redis codec not built yet");
}

static int64_t redis_error(const nm_decoder *d, const uint8_t *buf, size_t len,
                          const nm_frame *f, const nm_meta *meta,
                          uint32_t reason, const char *msg, size_t msg_len,
                          uint8_t *out, size_t cap)
{
    (void)d; (void)buf; (void)len; (void)f; (void)meta; (void)reason;
    (void)msg; (void)msg_len; (void)out; (void)cap;
    return NM_E_UNSUPPORTED;
}

const nm_codec_ops nm_redis_ops = {
    .name = "redis",
    .frame = redis_frame,
    .build_error = redis_error,
};
