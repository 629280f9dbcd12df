/*
 * Redis replies (server -> client): every RESP2 and RESP3 type, nested
 * aggregates without recursion (an explicit stack of remaining counts),
 * streamed strings and aggregates, attributes folded into the reply they
 * annotate.
 */
#include "redis.h"

#define STREAMED 0x80       /* level flag: "*?", "%?", "~?" (count = seen) */

static int resp3_only(uint8_t t)
{
    switch (t) {
    case '_': case '#': case ',': case '(': case '!': case '=':
    case '%': case '~': case '|': case '>': case '.':
        return 1;
    default:
        return 0;
    }
}

static int digits(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++;
    return (int)i;
}

/* ,[+-]digits[.digits][(e|E)[+-]digits] or [+-]inf / nan (any case). */
static int valid_double(const uint8_t *s, size_t n)
{
    size_t i = (n && (s[0] == '+' || s[0] == '-')) ? 1 : 0;
    if (n - i == 3) {
        char w[3];
        for (int k = 0; k < 3; k++)
            w[k] = (char)(s[i + k] | 0x20);
        if (!memcmp(w, "inf", 3) || !memcmp(w, "nan", 3))
            return 1;
    }
    int k = digits(s + i, n - i);
    if (k == 0)
        return 0;
    i += (size_t)k;
    if (i < n && s[i] == '.') {
        k = digits(s + i + 1, n - i - 1);
        if (k == 0)
            return 0;
        i += 1 + (size_t)k;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        k = digits(s + i, n - i);
        if (k == 0)
            return 0;
        i += (size_t)k;
    }
    return i == n;
}

static int valid_bignum(const uint8_t *s, size_t n)
{
    size_t i = (n && (s[0] == '+' || s[0] == '-')) ? 1 : 0;
    return i < n && digits(s + i, n - i) == (int)(n - i);
}

/* One of "+-:$*_#,(!=%~>|." (a lookup, not memchr: this runs per value). */
static int known_type(uint8_t t)
{
    switch (t) {
    case '+': case '-': case ':': case '$': case '*': case '_': case '#': case ',':
    case '(': case '!': case '=': case '%': case '~': case '>': case '|': case '.':
        return 1;
    default:
        return 0;
    }
}

/* The length/count line of a type whose line is a number. */
static int numeric_line(uint8_t t)
{
    return t == '$' || t == '*' || t == '!' || t == '=' || t == '%' ||
           t == '~' || t == '>' || t == '|' || t == ';';
}

/*
 * The common replies - a top-level integer, simple string, error or bulk
 * string - complete and well formed: the frame's length, or 0 for anything
 * else (incomplete, malformed, another type), which nm_redis_reply_frame()
 * then decodes from the start. Whatever it accepts, the general decoder
 * gives the same frame, metadata and state for (checked on 3M generated
 * replies when it was written); the tests and the fuzz target meet both
 * paths, as feeds split a reply (incomplete: general) or not (this one).
 */
int nm_redis_reply_simple(const nm_decoder *d, const uint8_t *buf, size_t len,
                          size_t pos, nm_frame *f, nm_out *o)
{
    uint64_t max_frame = NM_LIMIT(d, max_frame_size);
    if (max_frame > INT32_MAX)
        max_frame = INT32_MAX;
    if (len - pos > max_frame)
        len = pos + (size_t)max_frame;
    const uint8_t t = buf[pos];
    if (t != ':' && t != '$' && t != '+' && t != '-')
        return 0;
    long cr = resp_line_end(buf, pos + 1, len);
    if (cr < 0)
        return 0;
    const size_t s = pos + 1, n = (size_t)cr - s;
    size_t next = (size_t)cr + 2;
    int64_t v;
    if (t == ':') {
        if (!resp_parse_i64(buf + s, n, &v))
            return 0;
    } else if (t == '$') {
        if (!resp_parse_i64(buf + s, n, &v) || v < -1)
            return 0;
        if (v >= 0) {
            if ((uint64_t)v > max_frame || next - pos + (uint64_t)v + 2 > max_frame)
                return 0;
            size_t end = next + (size_t)v;
            if (end + 2 > len || buf[end] != '\r' || buf[end + 1] != '\n')
                return 0;
            next = end + 2;
        }
    } else if (memchr(buf + s, '\r', n)) {
        return 0;
    }
    if (next - pos > max_frame)
        return 0;
    f->kind = t == '-' ? NM_KIND_ERROR : NM_KIND_RESPONSE;
    f->variant = t;
    f->body_offset = (uint32_t)((size_t)cr + 2 - pos);
    if (t == '-')
        nm_push_meta(o, NM_KEY_MESSAGE, (uint32_t)s, (uint32_t)n);
    return (int)(next - pos);
}

int nm_redis_reply_frame(nm_decoder *d, const uint8_t *buf, size_t len,
                         size_t pos, nm_frame *f, nm_out *o)
{
    uint64_t left[RESP_DEPTH_CAP];   /* items still due (or seen, streamed) */
    uint8_t ltype[RESP_DEPTH_CAP];
    uint32_t depth = 0;
    uint32_t max_depth = NM_LIMIT(d, max_depth);
    uint64_t max_frame = NM_LIMIT(d, max_frame_size);
    uint64_t max_elems = NM_LIMIT(d, max_elements);
    const int resp3 = d->opt.redis_resp3 != 0;
    size_t p = pos, body = 0;
    uint8_t top = 0;
    int attr_pending = 0, want_push_cmd = 0;
    uint32_t msg_off = 0, msg_len = 0, cmd_off = 0, cmd_len = 0;
    int has_msg = 0, has_cmd = 0;

    if (max_depth > RESP_DEPTH_CAP)
        max_depth = RESP_DEPTH_CAP;
    if (max_frame > INT32_MAX)
        max_frame = INT32_MAX;
    /* Read no further than the largest frame allowed: an error then depends
     * only on the bytes a byte-by-byte feeder would have seen first, so every
     * split of the input fails the same way. */
    if (len - pos > max_frame)
        len = pos + (size_t)max_frame;

    for (;;) {
        if (p >= len)
            goto incomplete;
        const uint8_t t = buf[p];
        if (!known_type(t))   /* fail on the first byte */
            return nm_fail(d, NM_E_PROTOCOL, "unknown reply type");
        long cr = resp_line_end(buf, p + 1, len);
        if (cr == RESP_LINE_INCOMPLETE) {
            if (numeric_line(t) && len - p > RESP_MAX_NUMBER_LINE)
                return nm_fail(d, NM_E_PROTOCOL, "length line too long");
            goto incomplete;
        }
        if (cr == RESP_LINE_BAD)
            return nm_fail(d, NM_E_PROTOCOL, "line ends in a bare LF");
        const size_t s = p + 1, n = (size_t)cr - s;
        size_t next = (size_t)cr + 2;
        const uint32_t d0 = depth;
        int done = 1;   /* a value (not an opening aggregate) ends at next */
        int64_t v;

        if (!resp3 && resp3_only(t))
            return nm_fail(d, NM_E_PROTOCOL, "RESP3 type with resp3 off");
        if (t != '|' && t != '.')
            attr_pending = 0;
        if (d0 == 0 && t != '|' && !top) {
            top = t;
            body = next - pos;
        }
        switch (t) {
        case '+':
        case '-':
            if (memchr(buf + s, '\r', n))
                return nm_fail(d, NM_E_PROTOCOL, "CR inside a simple string");
            if (t == '-' && d0 == 0) {
                has_msg = 1;
                msg_off = (uint32_t)s;
                msg_len = (uint32_t)n;
            }
            break;
        case ':':
            if (!resp_parse_i64(buf + s, n, &v))
                return nm_fail(d, NM_E_PROTOCOL, "bad integer");
            break;
        case '_':
            if (n != 0)
                return nm_fail(d, NM_E_PROTOCOL, "bad null");
            break;
        case '#':
            if (n != 1 || (buf[s] != 't' && buf[s] != 'f'))
                return nm_fail(d, NM_E_PROTOCOL, "bad boolean");
            break;
        case ',':
            if (!valid_double(buf + s, n))
                return nm_fail(d, NM_E_PROTOCOL, "bad double");
            break;
        case '(':
            if (!valid_bignum(buf + s, n))
                return nm_fail(d, NM_E_PROTOCOL, "bad big number");
            break;
        case '$':
        case '!':
        case '=':
            if (t == '$' && n == 1 && buf[s] == '?') {
                if (!resp3)
                    return nm_fail(d, NM_E_PROTOCOL, "RESP3 type with resp3 off");
                if (d0 == 0)
                    f->flags |= NM_FRAME_CHUNKED;
                for (;;) {      /* ";len\r\n<data>\r\n" ... ";0\r\n" */
                    if (next - pos > max_frame)
                        return nm_fail(d, NM_E_FRAME_TOO_LARGE, "reply larger than max_frame_size");
                    if (next >= len)
                        goto incomplete;
                    if (buf[next] != ';')
                        return nm_fail(d, NM_E_PROTOCOL, "expected ';' chunk");
                    long c2 = resp_line_end(buf, next + 1, len);
                    if (c2 == RESP_LINE_INCOMPLETE) {
                        if (len - next > RESP_MAX_NUMBER_LINE)
                            return nm_fail(d, NM_E_PROTOCOL, "length line too long");
                        goto incomplete;
                    }
                    if (c2 == RESP_LINE_BAD)
                        return nm_fail(d, NM_E_PROTOCOL, "line ends in a bare LF");
                    if (!resp_parse_i64(buf + next + 1, (size_t)c2 - next - 1, &v) || v < 0)
                        return nm_fail(d, NM_E_PROTOCOL, "bad chunk length");
                    next = (size_t)c2 + 2;
                    if (v == 0)
                        break;
                    if ((uint64_t)v > max_frame || next - pos + (uint64_t)v + 2 > max_frame)
                        return nm_fail(d, NM_E_FRAME_TOO_LARGE, "reply larger than max_frame_size");
                    size_t end = next + (size_t)v;
                    if (end + 2 > len) {
                        d->need = (uint32_t)(end + 2 - pos);
                        return 0;
                    }
                    if (buf[end] != '\r' || buf[end + 1] != '\n')
                        return nm_fail(d, NM_E_PROTOCOL, "chunk not followed by CRLF");
                    next = end + 2;
                }
                break;
            }
            if (!resp_parse_i64(buf + s, n, &v) || v < (t == '$' ? -1 : 0))
                return nm_fail(d, NM_E_PROTOCOL, "bad bulk length");
            if (v == -1)
                break;
            if ((uint64_t)v > max_frame || next - pos + (uint64_t)v + 2 > max_frame)
                return nm_fail(d, NM_E_FRAME_TOO_LARGE, "reply larger than max_frame_size");
            {
                size_t end = next + (size_t)v;
                if (end + 2 > len) {
                    d->need = (uint32_t)(end + 2 - pos);
                    return 0;
                }
                if (buf[end] != '\r' || buf[end + 1] != '\n')
                    return nm_fail(d, NM_E_PROTOCOL, "bulk string not followed by CRLF");
                if (t == '=' && (v < 4 || buf[next + 3] != ':'))
                    return nm_fail(d, NM_E_PROTOCOL, "verbatim string without a format");
                if (t == '!' && d0 == 0) {
                    has_msg = 1;
                    msg_off = (uint32_t)next;
                    msg_len = (uint32_t)v;
                }
                if (want_push_cmd && d0 == 1 && t == '$') {
                    has_cmd = 1;
                    cmd_off = (uint32_t)next;
                    cmd_len = (uint32_t)v;
                }
                next = end + 2;
            }
            break;
        case '*':
        case '%':
        case '~':
        case '>':
        case '|': {
            if (n == 1 && buf[s] == '?' && (t == '*' || t == '%' || t == '~')) {
                if (!resp3)
                    return nm_fail(d, NM_E_PROTOCOL, "RESP3 type with resp3 off");
                if (depth >= max_depth)
                    return nm_fail(d, NM_E_TOO_DEEP, "reply nested deeper than max_depth");
                if (d0 == 0)
                    f->flags |= NM_FRAME_CHUNKED;
                left[depth] = 0;
                ltype[depth++] = (uint8_t)(t | STREAMED);
                done = 0;
                break;
            }
            if (!resp_parse_i64(buf + s, n, &v) || v < (t == '*' ? -1 : 0))
                return nm_fail(d, NM_E_PROTOCOL, "bad aggregate length");
            if (v == -1)
                break;
            if ((uint64_t)v > max_elems)
                return nm_fail(d, NM_E_TOO_MANY_ELEMENTS, "aggregate longer than max_elements");
            if (t == '>' && d0 != 0)
                return nm_fail(d, NM_E_PROTOCOL, "push inside an aggregate");
            uint64_t items = (uint64_t)v * ((t == '%' || t == '|') ? 2 : 1);
            if (next - pos + 3 * items > max_frame)   /* each item >= 3 bytes */
                return nm_fail(d, NM_E_FRAME_TOO_LARGE, "reply larger than max_frame_size");
            if (items == 0) {
                if (t == '|') {
                    attr_pending = 1;
                    done = 0;
                }
                break;
            }
            if (depth >= max_depth)
                return nm_fail(d, NM_E_TOO_DEEP, "reply nested deeper than max_depth");
            if (t == '>')
                want_push_cmd = 1;
            left[depth] = items;
            ltype[depth++] = t;
            done = 0;
            break;
        }
        case '.':
            if (n != 0 || depth == 0 || !(ltype[depth - 1] & STREAMED) || attr_pending)
                return nm_fail(d, NM_E_PROTOCOL, "unexpected end marker");
            if ((ltype[depth - 1] & 0x7f) == '%' && (left[depth - 1] & 1))
                return nm_fail(d, NM_E_PROTOCOL, "streamed map with a key and no value");
            depth--;
            break;
        default:
            return nm_fail(d, NM_E_PROTOCOL, "unknown reply type");
        }
        if (t == '+' && want_push_cmd && d0 == 1) {
            has_cmd = 1;
            cmd_off = (uint32_t)s;
            cmd_len = (uint32_t)n;
        }
        if (d0 == 1 && t != '|')
            want_push_cmd = 0;
        p = next;
        if (p - pos > max_frame)
            return nm_fail(d, NM_E_FRAME_TOO_LARGE, "reply larger than max_frame_size");
        if (!done)
            continue;
        /* A value ended: count it against the aggregates it closes. */
        while (depth > 0) {
            uint32_t k = depth - 1;
            if (ltype[k] & STREAMED) {
                uint64_t cap = (ltype[k] & 0x7f) == '%' ? 2 * max_elems : max_elems;
                if (++left[k] > cap)
                    return nm_fail(d, NM_E_TOO_MANY_ELEMENTS, "aggregate longer than max_elements");
                break;
            }
            if (--left[k] > 0)
                break;
            depth--;
            if (ltype[k] == '|') {   /* the annotated value follows */
                attr_pending = 1;
                break;
            }
        }
        if (depth == 0 && !attr_pending)
            break;
    }

    f->kind = (top == '-' || top == '!') ? NM_KIND_ERROR
            : top == '>' ? NM_KIND_EVENT : NM_KIND_RESPONSE;
    f->variant = top;
    f->body_offset = (uint32_t)body;
    if (has_msg)
        nm_push_meta(o, NM_KEY_MESSAGE, msg_off, msg_len);
    if (has_cmd && nm_push_meta(o, NM_KEY_COMMAND, cmd_off, cmd_len))
        o->meta[o->nmeta - 1].flags = NM_META_LOWERCASE_VALUE;
    return (int)(p - pos);

incomplete:
    if (len - pos >= max_frame)
        return nm_fail(d, NM_E_FRAME_TOO_LARGE, "reply larger than max_frame_size");
    d->need = (uint32_t)(len - pos + 1);
    return 0;
}
