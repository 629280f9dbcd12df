/*
 * HTTP/1.1 chunked transfer coding (RFC 9112 7.1): find where a chunked
 * body ends, validating chunk sizes, extensions, the CRLF after each
 * chunk's data, and the trailer section. Resumable: on partial input it
 * remembers the last chunk boundary (d->state[H1_ST_RESUME]) and, inside
 * chunk data, asks for the bytes it needs (d->need).
 */
#include "http1.h"

static int hexval(uint8_t c)
{
    return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

static size_t skip_ws(const uint8_t *p, size_t i, size_t n)
{
    while (i < n && (p[i] == ' ' || p[i] == '\t'))
        i++;
    return i;
}

/* chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] ) */
static int chunk_ext_valid(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        i = skip_ws(p, i, n);
        if (i >= n || p[i] != ';')
            return 0;
        i = skip_ws(p, i + 1, n);
        size_t s = i;
        while (i < n && H1_IS(p[i], H1_TCHAR))
            i++;
        if (i == s)
            return 0;
        size_t j = skip_ws(p, i, n);
        if (j >= n || p[j] != '=')
            continue;               /* next extension (or trailing BWS: refused above) */
        i = skip_ws(p, j + 1, n);
        if (i < n && p[i] == '"') {
            for (i++;; i++) {
                if (i >= n)
                    return 0;
                if (p[i] == '"')
                    break;
                if (p[i] == '\\' && ++i >= n)
                    return 0;
                if (!H1_IS(p[i], H1_VALUE))
                    return 0;
            }
            i++;
        } else {
            s = i;
            while (i < n && H1_IS(p[i], H1_TCHAR))
                i++;
            if (i == s)
                return 0;
        }
    }
    return 1;
}

/* Wait for more bytes; resume later at the chunk line starting at ls. */
static int64_t more(nm_decoder *d, size_t start, size_t ls, size_t need)
{
    d->state[H1_ST_RESUME] = ls - start;
    if (need)
        d->need = (uint32_t)(need - start);
    return 0;
}

static int64_t trailers(nm_decoder *d, const uint8_t *buf, size_t len,
                        size_t start, size_t ls, size_t ts)
{
    size_t i = ts, maxh = NM_LIMIT(d, max_header_bytes);
    for (;;) {
        if (i - ts > maxh)
            return nm_fail(d, NM_E_FRAME_TOO_LARGE, "trailer section larger than max_header_bytes");
        const uint8_t *nlp = memchr(buf + i, '\n', len - i);
        if (!nlp) {
            if (len - ts > maxh)
                return nm_fail(d, NM_E_FRAME_TOO_LARGE, "trailer section larger than max_header_bytes");
            return more(d, start, ls, 0);
        }
        size_t nl = (size_t)(nlp - buf), le = nl, ne, vs, ve;
        if (nl - ts > maxh)       /* as if it had arrived byte by byte */
            return nm_fail(d, NM_E_FRAME_TOO_LARGE, "trailer section larger than max_header_bytes");
        if (nl > i && buf[nl - 1] == '\r')
            le = nl - 1;
        else if (!h1_lenient(d, NM_HTTP_LENIENT_LF_ONLY))
            return nm_fail(d, NM_E_PROTOCOL, "bare LF line ending");
        if (le == i)
            return (int64_t)(nl + 1);        /* end of the message */
        if (buf[i] == ' ' || buf[i] == '\t') {
            if (i == ts || !h1_lenient(d, NM_HTTP_LENIENT_OBS_FOLD))
                return nm_fail(d, NM_E_PROTOCOL, "obs-fold (folded trailer line)");
            for (size_t k = i; k < le; k++)
                if (!H1_IS(buf[k], H1_VALUE))
                    return nm_fail(d, NM_E_PROTOCOL, "invalid character in trailer");
        } else {
            int rc = nm_h1_header_line(d, buf, i, le, &ne, &vs, &ve);
            if (rc)
                return rc;
        }
        i = nl + 1;
    }
}

int64_t nm_h1_chunked(nm_decoder *d, const uint8_t *buf, size_t len,
                      size_t start, size_t b)
{
    uint64_t maxf = NM_LIMIT(d, max_frame_size);
    size_t resume = (size_t)d->state[H1_ST_RESUME];
    size_t i = resume && start + resume > b ? start + resume : b;
    for (;;) {
        size_t ls = i;
        uint64_t size = 0;
        if (ls - start > maxf)
            return nm_fail(d, NM_E_FRAME_TOO_LARGE, "message larger than max_frame_size");
        while (i < len && H1_IS(buf[i], H1_HEX)) {
            size = size * 16 + (uint64_t)hexval(buf[i]);
            if (size > maxf)
                return nm_fail(d, NM_E_FRAME_TOO_LARGE, "chunk larger than max_frame_size");
            if (++i - ls > H1_CHUNK_LINE_MAX)
                return nm_fail(d, NM_E_PROTOCOL, "chunk line too long");
        }
        if (i >= len)
            return more(d, start, ls, 0);
        if (i == ls)
            return nm_fail(d, NM_E_PROTOCOL, "invalid chunk size");
        size_t lim = len - ls > H1_CHUNK_LINE_MAX ? ls + H1_CHUNK_LINE_MAX : len;
        const uint8_t *nlp = memchr(buf + i, '\n', lim - i);
        if (!nlp) {
            if (lim < len)
                return nm_fail(d, NM_E_PROTOCOL, "chunk line too long");
            for (size_t k = i; k < len; k++)   /* fail early on garbage */
                if (!H1_IS(buf[k], H1_VALUE) && !(buf[k] == '\r' && k + 1 == len))
                    return nm_fail(d, NM_E_PROTOCOL, "invalid chunk extension");
            return more(d, start, ls, 0);
        }
        size_t nl = (size_t)(nlp - buf), ce = nl;
        if (nl > i && buf[nl - 1] == '\r')
            ce = nl - 1;
        else if (!h1_lenient(d, NM_HTTP_LENIENT_LF_ONLY))
            return nm_fail(d, NM_E_PROTOCOL, "bare LF after chunk size");
        if (ce > i) {
            int ok;
            if (h1_lenient(d, NM_HTTP_LENIENT_CHUNK_EXT)) {
                ok = 1;
                for (size_t k = i; k < ce; k++)
                    ok &= H1_IS(buf[k], H1_VALUE) != 0;
            } else {
                ok = chunk_ext_valid(buf + i, ce - i);
            }
            if (!ok)
                return nm_fail(d, NM_E_PROTOCOL, "invalid chunk extension");
        }
        i = nl + 1;
        if (size == 0)
            return trailers(d, buf, len, start, ls, i);
        size_t data_end = i + (size_t)size;
        if ((uint64_t)(data_end + 2 - start) > maxf)
            return nm_fail(d, NM_E_FRAME_TOO_LARGE, "message larger than max_frame_size");
        if (data_end + 2 > len) {
            if (data_end >= len)      /* the byte after the data decides: ask for it */
                return more(d, start, ls, data_end + 1);
            if (buf[data_end] == '\r')
                return more(d, start, ls, data_end + 2);
            if (buf[data_end] != '\n' || !h1_lenient(d, NM_HTTP_LENIENT_LF_ONLY))
                return nm_fail(d, NM_E_PROTOCOL, "missing CRLF after chunk data");
            i = data_end + 1;
        } else if (buf[data_end] == '\r' && buf[data_end + 1] == '\n') {
            i = data_end + 2;
        } else if (buf[data_end] == '\n' && h1_lenient(d, NM_HTTP_LENIENT_LF_ONLY)) {
            i = data_end + 1;
        } else {
            return nm_fail(d, NM_E_PROTOCOL, "missing CRLF after chunk data");
        }
    }
}
