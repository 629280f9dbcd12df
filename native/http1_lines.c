/*
 * HTTP/1.1 line syntax (RFC 9112 2-5): character classes, line ends, the
 * start line, field lines, and early validation of a header section that
 * has not fully arrived yet.
 */
#include "http1.h"

const uint8_t nm_h1_class[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    2, 7, 6, 7, 7, 7, 7, 7, 6, 6, 7, 7, 6, 7, 7, 6,
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 6, 6, 6, 6, 6, 6,
    6, 15, 15, 15, 15, 15, 15, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 7, 7,
    7, 15, 15, 15, 15, 15, 15, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 7, 6, 7, 0,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
};

/* Content end of the line whose LF is at buf[nl] (line starts at ls):
 * strips the CR; a bare LF is an error unless LF_ONLY. */
int nm_h1_line_end(nm_decoder *d, const uint8_t *buf, size_t ls, size_t nl,
                       size_t *ce)
{
    if (nl > ls && buf[nl - 1] == '\r') {
        *ce = nl - 1;
        return 0;
    }
    if (!h1_lenient(d, NM_HTTP_LENIENT_LF_ONLY))
        return nm_fail(d, NM_E_PROTOCOL, "bare LF line ending");
    *ce = nl;
    return 0;
}

int nm_h1_value_error(nm_decoder *d, uint8_t c)
{
    return nm_fail(d, NM_E_PROTOCOL, c == '\r' ? "bare CR in header line"
                                               : "invalid character in header value");
}

int nm_h1_header_line(nm_decoder *d, const uint8_t *buf, size_t ls, size_t le,
                      size_t *name_end, size_t *vs, size_t *ve)
{
    size_t i = ls;
    while (i < le && H1_IS(buf[i], H1_TCHAR))
        i++;
    if (i == ls)
        return nm_fail(d, NM_E_PROTOCOL, "invalid header name");
    *name_end = i;
    if (i < le && (buf[i] == ' ' || buf[i] == '\t')) {
        if (!h1_lenient(d, NM_HTTP_LENIENT_HEADER_SPACE))
            return nm_fail(d, NM_E_PROTOCOL, "whitespace between header name and colon");
        while (i < le && (buf[i] == ' ' || buf[i] == '\t'))
            i++;
    }
    if (i >= le || buf[i] != ':')
        return nm_fail(d, NM_E_PROTOCOL, "invalid character in header name");
    i++;
    while (i < le && (buf[i] == ' ' || buf[i] == '\t'))
        i++;
    *vs = i;
    while (i < le && H1_IS(buf[i], H1_VALUE))
        i++;
    if (i < le)
        return nm_h1_value_error(d, buf[i]);
    while (i > *vs && (buf[i - 1] == ' ' || buf[i - 1] == '\t'))
        i--;
    *ve = i;
    return 0;
}

/* "HTTP/1.x" at p: the minor version, or a negative status. */
int nm_h1_version(nm_decoder *d, const uint8_t *p, size_t n)
{
    static const char shape[] = "HTTP/d.d";
    for (size_t k = 0; k < n && k < 8; k++) {
        int ok = shape[k] == 'd' ? (p[k] >= '0' && p[k] <= '9') : p[k] == (uint8_t)shape[k];
        if (!ok)
            return nm_fail(d, NM_E_PROTOCOL, "invalid HTTP version");
    }
    if (n < 8)
        return nm_fail(d, NM_E_PROTOCOL, "invalid HTTP version");
    if (p[5] != '1' || (p[7] != '0' && p[7] != '1'))
        return nm_fail(d, NM_E_UNSUPPORTED, "HTTP version other than 1.0 or 1.1");
    if (n != 8)
        return nm_fail(d, NM_E_PROTOCOL, "invalid HTTP version");
    return p[7] - '0';
}

/* Request line at buf[p..ce); returns the minor version or an error. */
int nm_h1_request_line(nm_decoder *d, const uint8_t *buf, size_t p, size_t ce,
                           nm_out *o, int *is_connect, size_t *target, size_t *target_end)
{
    size_t i = p;
    while (i < ce && H1_IS(buf[i], H1_TCHAR))
        i++;
    if (i == p || i >= ce || buf[i] != ' ')
        return nm_fail(d, NM_E_PROTOCOL, "invalid method");
    *is_connect = (i - p == 7 && memcmp(buf + p, "CONNECT", 7) == 0);
    nm_push_meta(o, NM_KEY_METHOD, (uint32_t)p, (uint32_t)(i - p));
    size_t t = ++i;
    while (i < ce && H1_IS(buf[i], H1_TARGET))
        i++;
    if (i == t || i >= ce || buf[i] != ' ')
        return nm_fail(d, NM_E_PROTOCOL, "invalid request-target");
    nm_push_meta(o, NM_KEY_PATH, (uint32_t)t, (uint32_t)(i - t));
    *target = t;
    *target_end = i;
    return nm_h1_version(d, buf + i + 1, ce - i - 1);
}

/* Status line at buf[p..ce); returns the minor version or an error. */
int nm_h1_status_line(nm_decoder *d, const uint8_t *buf, size_t p, size_t ce,
                          nm_out *o, int *status)
{
    int minor = nm_h1_version(d, buf + p, ce - p < 8 ? ce - p : 8);
    if (minor < 0)
        return minor;
    if (ce - p < 12 || buf[p + 8] != ' ')
        return nm_fail(d, NM_E_PROTOCOL, "invalid status line");
    const uint8_t *s = buf + p + 9;
    for (int k = 0; k < 3; k++)
        if (s[k] < '0' || s[k] > '9')
            return nm_fail(d, NM_E_PROTOCOL, "invalid status code");
    *status = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
    if (*status < 100)
        return nm_fail(d, NM_E_PROTOCOL, "invalid status code");
    size_t i = p + 12;
    if (i < ce) {
        if (buf[i] != ' ')
            return nm_fail(d, NM_E_PROTOCOL, "invalid status line");
        while (++i < ce)
            if (!H1_IS(buf[i], H1_VALUE))
                return nm_h1_value_error(d, buf[i]);
    }
    nm_push_meta(o, NM_KEY_STATUS, (uint32_t)(p + 9), 3);
    return minor;
}


/* A version that has only partly arrived: what is there must fit. */
static int early_version(nm_decoder *d, const uint8_t *v, size_t n)
{
    static const char shape[] = "HTTP/d.d";
    if (n >= 8) {
        int rc = nm_h1_version(d, v, 8);
        return rc < 0 ? rc : 0;
    }
    for (size_t k = 0; k < n; k++)
        if (shape[k] == 'd' ? (v[k] < '0' || v[k] > '9') : v[k] != (uint8_t)shape[k])
            return nm_fail(d, NM_E_PROTOCOL, "invalid HTTP version");
    return 0;
}

/* The start line up to len, with no LF yet. */
static int early_start_line(nm_decoder *d, const uint8_t *buf, size_t len, size_t p)
{
    size_t i = p;
    if (d->opt.direction == NM_DIR_RESPONSE) {
        int rc = early_version(d, buf + p, len - p);
        if (rc || len - p <= 8)
            return rc;
        if (buf[p + 8] != ' ')
            return nm_fail(d, NM_E_PROTOCOL, "invalid status line");
        for (i = p + 9; i < len && i < p + 12; i++)
            if (buf[i] < '0' || buf[i] > '9')
                return nm_fail(d, NM_E_PROTOCOL, "invalid status code");
        if (i < len && buf[i] != ' ' && buf[i] != '\r')
            return nm_fail(d, NM_E_PROTOCOL, "invalid status line");
        for (; i < len; i++)
            if (!H1_IS(buf[i], H1_VALUE) && !(buf[i] == '\r' && i + 1 == len))
                return nm_h1_value_error(d, buf[i]);
        return 0;
    }
    while (i < len && H1_IS(buf[i], H1_TCHAR))
        i++;
    if (i == len)
        return 0;
    if (i == p || buf[i] != ' ')
        return nm_fail(d, NM_E_PROTOCOL, "invalid method");
    size_t t = ++i;
    while (i < len && H1_IS(buf[i], H1_TARGET))
        i++;
    if (i == len)
        return 0;
    if (i == t || buf[i] != ' ')
        return nm_fail(d, NM_E_PROTOCOL, "invalid request-target");
    size_t v = i + 1;
    int rc = early_version(d, buf + v, len - v);
    if (rc || len - v <= 8)
        return rc;
    if (buf[v + 8] != '\r' || len - v > 9)
        return nm_fail(d, NM_E_PROTOCOL, "invalid HTTP version");
    return 0;
}

/* A field line up to len, with no LF yet. */
static int early_field_line(nm_decoder *d, const uint8_t *buf, size_t ls, size_t len,
                            int first)
{
    if (ls >= len)
        return 0;   /* nothing of this line yet */
    uint8_t c = buf[ls];
    if (c == '\r')
        return len - ls > 1 ? nm_fail(d, NM_E_PROTOCOL, "bare CR") : 0;
    if (c == ' ' || c == '\t') {
        if (first)
            return nm_fail(d, NM_E_PROTOCOL, "whitespace after the start line");
        if (!h1_lenient(d, NM_HTTP_LENIENT_OBS_FOLD))
            return nm_fail(d, NM_E_PROTOCOL, "obs-fold (folded header line)");
        return 0;
    }
    size_t i = ls;
    while (i < len && H1_IS(buf[i], H1_TCHAR))
        i++;
    if (i == len || buf[i] == ':')
        return 0;
    if ((buf[i] == ' ' || buf[i] == '\t') && i > ls) {
        if (h1_lenient(d, NM_HTTP_LENIENT_HEADER_SPACE))
            return 0;
        return nm_fail(d, NM_E_PROTOCOL, "whitespace between header name and colon");
    }
    return nm_fail(d, NM_E_PROTOCOL, i == ls ? "invalid header name"
                                            : "invalid character in header name");
}

int nm_h1_cl_value(nm_decoder *d, const uint8_t *p, size_t n, uint64_t *v)
{
    uint64_t max = NM_LIMIT(d, max_frame_size);
    *v = 0;
    if (n == 0)
        return nm_fail(d, NM_E_SMUGGLING, "empty Content-Length");
    for (size_t k = 0; k < n; k++) {
        if (p[k] < '0' || p[k] > '9')
            return nm_fail(d, NM_E_SMUGGLING, "invalid Content-Length");
        *v = *v * 10 + (uint64_t)(p[k] - '0');
        if (*v > max)
            return nm_fail(d, NM_E_FRAME_TOO_LARGE, "Content-Length larger than max_frame_size");
    }
    return 0;
}

int nm_h1_field_line(nm_decoder *d, const uint8_t *buf, size_t ls, size_t nl, int first,
                     uint64_t *seen, size_t *ne, size_t *vs, size_t *ve)
{
    size_t ce = nl > ls && buf[nl - 1] == '\r' ? nl - 1 : nl;
    uint64_t cl;
    int rc;
    if (buf[ls] == ' ' || buf[ls] == '\t') {
        if ((rc = early_field_line(d, buf, ls, ce, first)))
            return rc;
        for (size_t k = ls; k < ce; k++)
            if (!H1_IS(buf[k], H1_VALUE))
                return nm_h1_value_error(d, buf[k]);
        if ((rc = nm_h1_line_end(d, buf, ls, nl, &ce)))
            return rc;
        if (*seen & 1)
            return nm_fail(d, NM_E_SMUGGLING, "folded Content-Length or Transfer-Encoding");
        *ve = ce;
        return H1_FOLD;
    }
    if ((rc = nm_h1_header_line(d, buf, ls, ce, ne, vs, ve)))
        return rc;
    *seen = ((*seen >> 1) + 1) << 1;              /* header count, bit 0: framing */
    if ((*seen >> 1) > NM_LIMIT(d, max_headers))
        return nm_fail(d, NM_E_TOO_MANY_HEADERS, "more headers than max_headers");
    int framing = nm_h1_framing_field(buf + ls, *ne - ls);
    if (framing == 1 && (rc = nm_h1_cl_value(d, buf + *vs, *ve - *vs, &cl)))
        return rc;
    *seen |= framing ? 1 : 0;
    return nm_h1_line_end(d, buf, ls, nl, &ce);
}

int nm_h1_start_line(nm_decoder *d, const uint8_t *buf, size_t p, size_t nl, nm_out *o,
                     int *is_connect, size_t *target, size_t *target_end, int *status)
{
    size_t ce = nl > p && buf[nl - 1] == '\r' ? nl - 1 : nl;
    int minor = d->opt.direction == NM_DIR_REQUEST
                    ? nm_h1_request_line(d, buf, p, ce, o, is_connect, target, target_end)
                    : nm_h1_status_line(d, buf, p, ce, o, status);
    if (minor < 0)
        return minor;
    int rc = nm_h1_line_end(d, buf, p, nl, &ce);
    return rc ? rc : minor;
}

int nm_h1_early(nm_decoder *d, const uint8_t *buf, size_t len, size_t pos, size_t p)
{
    uint64_t *scan = &d->state[H1_ST_SCAN], *seen = &d->state[H1_ST_EARLY];
    size_t ls = *scan ? pos + *scan : p;
    const uint8_t *first_nl = memchr(buf + p, '\n', len - p);
    size_t first = first_nl ? (size_t)(first_nl - buf) + 1 : 0;
    for (;;) {
        if (ls >= len)
            return 0;
        const uint8_t *nlp = memchr(buf + ls, '\n', len - ls);
        if (!nlp)
            return ls == p ? early_start_line(d, buf, len, p)
                           : early_field_line(d, buf, ls, len, ls == first);
        size_t nl = (size_t)(nlp - buf), ne, vs, ve, t, te;
        int rc, x;
        if (ls == p) {
            nm_meta none;
            nm_out o = { NULL, 0, 0, &none, 0, 0, 0 };
            rc = nm_h1_start_line(d, buf, p, nl, &o, &x, &t, &te, &x);
        } else {
            rc = nm_h1_field_line(d, buf, ls, nl, ls == first, seen, &ne, &vs, &ve);
        }
        if (rc < 0)
            return rc;
        ls = nl + 1;
        *scan = ls - pos;
    }
}
