/*
 * Redis (RESP2/RESP3) codec, private: the two directions share the line and
 * integer readers; redis.c holds the ops table and the reply builders.
 */
#ifndef NODEMESH_REDIS_H
#define NODEMESH_REDIS_H

#include "internal.h"

/* Scan result for a CRLF-terminated line. */
#define RESP_LINE_INCOMPLETE (-1)
#define RESP_LINE_BAD        (-2)

/* Index of the '\r' of the first CRLF at or after start, RESP_LINE_INCOMPLETE
 * if no '\n' is buffered yet, RESP_LINE_BAD for a bare LF. */
static inline long resp_line_end(const uint8_t *buf, size_t start, size_t len)
{
    if (start >= len)
        return RESP_LINE_INCOMPLETE;
    /* Most lines are a few bytes ("$10", ":1234"): scan those inline; a
     * libc memchr call costs more than it saves below ~16 bytes. */
    size_t i = start, stop = len - start > 16 ? start + 16 : len;
    while (i < stop && buf[i] != '\n')
        i++;
    if (i == stop) {
        if (stop == len)
            return RESP_LINE_INCOMPLETE;
        const uint8_t *nl = memchr(buf + stop, '\n', len - stop);
        if (!nl)
            return RESP_LINE_INCOMPLETE;
        i = (size_t)(nl - buf);
    }
    if (i == start || buf[i - 1] != '\r')
        return RESP_LINE_BAD;
    return (long)(i - 1);
}

/* Redis's string2ll rules: optional '-', no '+', no leading zeros, no
 * "-0", no overflow. Returns 1 and sets *out, or 0. */
static inline int resp_parse_i64(const uint8_t *s, size_t n, int64_t *out)
{
    size_t i = 0;
    int neg = 0;
    uint64_t v = 0;
    if (n == 0 || n > 20)
        return 0;
    if (n == 1 && s[0] == '0') {
        *out = 0;
        return 1;
    }
    if (s[0] == '-') {
        neg = 1;
        i = 1;
    }
    if (i >= n || s[i] < '1' || s[i] > '9')
        return 0;
    /* 19 digits cannot overflow 64 bits: check overflow only past them */
    size_t safe = n - i > 19 ? i + 19 : n;
    for (; i < safe; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    if (neg) {
        if (v > (uint64_t)INT64_MAX + 1)
            return 0;
        *out = (int64_t)(0 - v);
    } else {
        if (v > (uint64_t)INT64_MAX)
            return 0;
        *out = (int64_t)v;
    }
    return 1;
}

/* Longest length/count header line we read before calling it malformed
 * ("$" + sign + 19 digits + CRLF, with room to spare). */
#define RESP_MAX_NUMBER_LINE 32

/* Deepest nesting the reply parser tracks (its stack lives on the C stack);
 * max_depth above this is clamped to it. */
#define RESP_DEPTH_CAP 128

int nm_redis_reply_frame(nm_decoder *d, const uint8_t *buf, size_t len,
                         size_t pos, nm_frame *f, nm_out *o);

/* Fast path for a complete top-level :, $, + or - reply (0: use the above). */
int nm_redis_reply_simple(const nm_decoder *d, const uint8_t *buf, size_t len,
                          size_t pos, nm_frame *f, nm_out *o);

/* A decoded request: enough of it for metadata and the reply builders. */
typedef struct {
    uint32_t argc;
    nm_span cmd;
    nm_span key;
    nm_span arg1;           /* PING's message */
    int has_key;
} nm_redis_request;

int nm_redis_request_parse(nm_decoder *d, const uint8_t *buf, size_t len,
                           size_t pos, nm_redis_request *r);

#endif
