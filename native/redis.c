/* Redis codec (RESP2/RESP3): the ops table, the frame entry point and the
 * replies the proxy writes itself (-ERR, +PONG, PING). */
#include "redis.h"

static int redis_frame(nm_decoder *d, const uint8_t *buf, size_t len,
                       size_t pos, nm_frame *f, nm_out *o)
{
    if (d->opt.direction == NM_DIR_RESPONSE) {
        int n = nm_redis_reply_simple(d, buf, len, pos, f, o);
        return n > 0 ? n : nm_redis_reply_frame(d, buf, len, pos, f, o);
    }
    nm_redis_request r;
    int n = nm_redis_request_parse(d, buf, len, pos, &r);
    if (n <= 0)
        return n;
    if (r.argc == 0) {      /* "*0", "*-1" or a blank line: no reply comes */
        f->kind = NM_KIND_ONEWAY;
        return n;
    }
    f->kind = NM_KIND_REQUEST;
    f->variant = buf[pos] == '*' ? '*' : 0;
    f->body_offset = r.cmd.off - (uint32_t)pos;
    if (nm_push_meta(o, NM_KEY_COMMAND, r.cmd.off, r.cmd.len))
        o->meta[o->nmeta - 1].flags = NM_META_LOWERCASE_VALUE;
    if (r.has_key)
        nm_push_meta(o, NM_KEY_KEY, r.key.off, r.key.len);
    return n;
}

static const char *reason_text(uint32_t reason)
{
    switch (reason) {
    case NM_REPLY_NO_ROUTE: return "no route";
    case NM_REPLY_NO_UPSTREAM: return "no healthy upstream";
    case NM_REPLY_OVERLOADED: return "overloaded";
    case NM_REPLY_RATE_LIMITED: return "rate limited";
    case NM_REPLY_TIMEOUT: return "timeout";
    case NM_REPLY_BAD_REQUEST: return "bad request";
    default: return "internal error";
    }
}

/* "-ERR <reason>[: <message>]\r\n", CR and LF dropped from the message. */
static int64_t redis_error(const nm_decoder *d, const uint8_t *buf, size_t len,
                           const nm_frame *f, const nm_meta *meta,
                           uint32_t reason, const char *msg, size_t msg_len,
                           uint8_t *out, size_t cap)
{
    (void)d; (void)buf; (void)len; (void)f; (void)meta;
    nm_writer w = { out, 0, cap, 0 };
    nm_w_str(&w, "-ERR ");
    nm_w_str(&w, reason_text(reason));
    if (msg_len) {
        nm_w_str(&w, ": ");
        for (size_t i = 0; i < msg_len; i++)
            if (msg[i] != '\r' && msg[i] != '\n')
                nm_w_byte(&w, (uint8_t)msg[i]);
    }
    nm_w_str(&w, "\r\n");
    return nm_w_done(&w);
}

/* PING -> +PONG; PING <message> -> the message as a bulk string. */
static int64_t redis_heartbeat_reply(const nm_decoder *d, const uint8_t *buf,
                                     size_t len, const nm_frame *f,
                                     uint8_t *out, size_t cap)
{
    nm_decoder tmp = *d;
    nm_redis_request r;
    (void)len;
    size_t end = f->offset + f->length;
    if (d->opt.direction != NM_DIR_REQUEST || f->length == 0)
        return NM_E_ARGUMENT;
    int n = nm_redis_request_parse(&tmp, buf, end, f->offset, &r);
    if (n <= 0 || r.argc == 0 || r.argc > 2 || r.cmd.len != 4)
        return NM_E_ARGUMENT;
    const uint8_t *c = buf + r.cmd.off;
    if ((c[0] | 0x20) != 'p' || (c[1] | 0x20) != 'i' || (c[2] | 0x20) != 'n' ||
        (c[3] | 0x20) != 'g')
        return NM_E_ARGUMENT;
    nm_writer w = { out, 0, cap, 0 };
    if (r.argc == 1) {
        nm_w_str(&w, "+PONG\r\n");
    } else {
        char head[24];
        int hn = 0;
        uint32_t v = r.arg1.len;
        char digits[12];
        int k = 0;
        do {
            digits[k++] = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        head[hn++] = '$';
        while (k)
            head[hn++] = digits[--k];
        head[hn++] = '\r';
        head[hn++] = '\n';
        nm_w_bytes(&w, head, (size_t)hn);
        nm_w_bytes(&w, buf + r.arg1.off, r.arg1.len);
        nm_w_str(&w, "\r\n");
    }
    return nm_w_done(&w);
}

static int64_t redis_heartbeat(const nm_decoder *d, uint64_t request_id,
                               uint8_t *out, size_t cap)
{
    (void)d; (void)request_id;
    nm_writer w = { out, 0, cap, 0 };
    nm_w_str(&w, "*1\r\n$4\r\nPING\r\n");
    return nm_w_done(&w);
}

const nm_codec_ops nm_redis_ops = {
    .name = "redis",
    .frame = redis_frame,
    .build_error = redis_error,
    .heartbeat_reply = redis_heartbeat_reply,
    .heartbeat = redis_heartbeat,
};
