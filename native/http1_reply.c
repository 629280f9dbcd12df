/*
 * HTTP/1.1 error replies: a complete response with the status for the
 * reason, a text/plain body holding the message, Content-Length, and
 * Connection: close for a bad request (the stream is unusable) or when the
 * request did not keep the connection alive.
 */
#include "http1.h"

static const char *status_line(uint32_t reason, const char **text)
{
    switch (reason) {
    case NM_REPLY_NO_ROUTE:     *text = "Not Found"; return "404";
    case NM_REPLY_NO_UPSTREAM:  *text = "Service Unavailable"; return "503";
    case NM_REPLY_OVERLOADED:   *text = "Service Unavailable"; return "503";
    case NM_REPLY_RATE_LIMITED: *text = "Too Many Requests"; return "429";
    case NM_REPLY_TIMEOUT:      *text = "Gateway Timeout"; return "504";
    case NM_REPLY_BAD_REQUEST:  *text = "Bad Request"; return "400";
    default:                    *text = "Internal Server Error"; return "500";
    }
}

static void w_decimal(nm_writer *w, size_t v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        nm_w_byte(w, (uint8_t)tmp[--n]);
}

int64_t nm_h1_build_error(const nm_decoder *d, const uint8_t *buf, size_t len,
                          const nm_frame *f, const nm_meta *meta,
                          uint32_t reason, const char *msg, size_t msg_len,
                          uint8_t *out, size_t cap)
{
    const char *text;
    const char *code = status_line(reason, &text);
    nm_writer w = { out, 0, cap, 0 };
    int keep = reason != NM_REPLY_BAD_REQUEST && (f->flags & NM_FRAME_KEEPALIVE) &&
               !(f->flags & NM_FRAME_UPGRADE);
    int head = 0;
    const nm_meta *m = nm_find_meta(f, meta, NM_KEY_METHOD);
    if (m && (uint64_t)m->value.off + m->value.len <= len)
        head = m->value.len == 4 && memcmp(buf + m->value.off, "HEAD", 4) == 0;
    if (!msg_len) {
        msg = text;
        msg_len = strlen(text);
    }
    (void)d;
    nm_w_str(&w, "HTTP/1.1 ");
    nm_w_str(&w, code);
    nm_w_byte(&w, ' ');
    nm_w_str(&w, text);
    nm_w_str(&w, "\r\nContent-Type: text/plain\r\nContent-Length: ");
    w_decimal(&w, msg_len);
    nm_w_str(&w, keep ? "\r\nConnection: keep-alive\r\n\r\n" : "\r\nConnection: close\r\n\r\n");
    if (!head)
        nm_w_bytes(&w, msg, msg_len);
    return nm_w_done(&w);
}
