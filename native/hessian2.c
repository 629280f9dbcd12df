/* hessian2 value reader: skips values, checks every byte it passes. */
#include "hessian2.h"

static int h2_fail(nm_h2 *h, int code, const char *reason)
{
    h->reason = reason;
    return code;
}

#define H2_TRUNCATED "hessian2: value runs past the end of the body"
#define H2_NEED(h, n) \
    do { if ((h)->end - (h)->pos < (uint32_t)(n)) \
             return h2_fail((h), NM_E_PROTOCOL, H2_TRUNCATED); } while (0)

void nm_h2_init(nm_h2 *h, const uint8_t *buf, uint32_t pos, uint32_t end,
                const nm_limits *limits)
{
    h->buf = buf;
    h->pos = pos;
    h->end = end;
    h->max_depth = limits->max_depth < NM_H2_DEPTH_CAP ? limits->max_depth
                                                       : NM_H2_DEPTH_CAP;
    h->max_elements = limits->max_elements;
    h->nrefs = h->ntypes = h->nclasses = 0;
    h->reason = NULL;
}

/* int ::= [x80-xbf] | [xc0-xcf] b0 | [xd0-xd7] b1 b0 | 'I' b3 b2 b1 b0 */
static int h2_int(nm_h2 *h, int32_t *v)
{
    H2_NEED(h, 1);
    uint8_t t = h->buf[h->pos++];
    const uint8_t *p = h->buf + h->pos;
    if (t >= 0x80 && t <= 0xbf) {
        *v = (int32_t)t - 0x90;
    } else if (t >= 0xc0 && t <= 0xcf) {
        H2_NEED(h, 1);
        *v = ((int32_t)t - 0xc8) * 256 + p[0];
        h->pos += 1;
    } else if (t >= 0xd0 && t <= 0xd7) {
        H2_NEED(h, 2);
        *v = ((int32_t)t - 0xd4) * 65536 + p[0] * 256 + p[1];
        h->pos += 2;
    } else if (t == 'I') {
        H2_NEED(h, 4);
        *v = (int32_t)nm_be32(p);
        h->pos += 4;
    } else {
        return h2_fail(h, NM_E_PROTOCOL, "hessian2: expected an int");
    }
    return NM_OK;
}

/* A length or index: an int that is not negative. */
static int h2_count(nm_h2 *h, uint32_t *n)
{
    int32_t v;
    int rc = h2_int(h, &v);
    if (rc < 0)
        return rc;
    if (v < 0)
        return h2_fail(h, NM_E_PROTOCOL, "hessian2: negative length or index");
    *n = (uint32_t)v;
    return NM_OK;
}

/* Pass n characters of UTF-8 as Java counts them: one per 1-3 byte
 * sequence (a surrogate written alone is one), two per 4-byte sequence
 * (a surrogate pair), which may not straddle the end of a chunk. */
static int h2_chars(nm_h2 *h, uint32_t n)
{
    const uint8_t *b = h->buf;
    uint32_t i = h->pos, end = h->end;
    while (n) {
        while (n >= 8 && end - i >= 8) {
            uint64_t w;
            memcpy(&w, b + i, 8);
            if (w & 0x8080808080808080ull)
                break;
            i += 8;
            n -= 8;
        }
        if (!n)
            break;
        if (i >= end)
            return h2_fail(h, NM_E_PROTOCOL, H2_TRUNCATED);
        uint8_t c = b[i];
        if (c < 0x80) {
            i++;
            n--;
            continue;
        }
        uint32_t k, chars = 1;
        if (c >= 0xc0 && c < 0xe0)
            k = 2;
        else if (c >= 0xe0 && c < 0xf0)
            k = 3;
        else if (c >= 0xf0 && c < 0xf8)
            k = 4, chars = 2;
        else
            return h2_fail(h, NM_E_PROTOCOL, "hessian2: bad UTF-8 lead byte");
        if (end - i < k)
            return h2_fail(h, NM_E_PROTOCOL, H2_TRUNCATED);
        for (uint32_t j = 1; j < k; j++)
            if ((b[i + j] & 0xc0) != 0x80)
                return h2_fail(h, NM_E_PROTOCOL, "hessian2: bad UTF-8 continuation byte");
        if (chars > n)
            return h2_fail(h, NM_E_PROTOCOL, "hessian2: surrogate pair split by a chunk end");
        i += k;
        n -= chars;
    }
    h->pos = i;
    return NM_OK;
}

/*
 * string ::= x52 b1 b0 <utf8-data> string   # non-final chunk
 *        ::= 'S' b1 b0 <utf8-data>          # final chunk
 *        ::= [x00-x1f] <utf8-data>          # 0-31 chars
 *        ::= [x30-x33] b0 <utf8-data>       # 0-1023 chars
 */
int nm_h2_string(nm_h2 *h, nm_h2_str *s, nm_h2_chunk_fn fn, void *ctx)
{
    s->off = s->len = 0;
    s->is_null = s->chunked = 0;
    H2_NEED(h, 1);
    if (h->buf[h->pos] == 'N') {
        h->pos++;
        s->is_null = 1;
        return NM_OK;
    }
    for (int first = 1;; first = 0) {
        H2_NEED(h, 1);
        uint8_t t = h->buf[h->pos++];
        const uint8_t *p = h->buf + h->pos;
        uint32_t n;
        int final = 1;
        if (t <= 0x1f) {
            n = t;
        } else if (t >= 0x30 && t <= 0x33) {
            H2_NEED(h, 1);
            n = ((uint32_t)(t - 0x30) << 8) | p[0];
            h->pos += 1;
        } else if (t == 'S' || t == 'R') {
            H2_NEED(h, 2);
            n = nm_be16(p);
            h->pos += 2;
            final = t == 'S';
        } else {
            return h2_fail(h, NM_E_PROTOCOL, first ? "hessian2: expected a string"
                                                   : "hessian2: bad string chunk");
        }
        uint32_t start = h->pos;
        int rc = h2_chars(h, n);
        if (rc < 0)
            return rc;
        if (fn)
            fn(ctx, h->buf + start, h->pos - start);
        if (first && final) {
            s->off = start;
            s->len = h->pos - start;
        } else {
            s->chunked = 1;
        }
        if (final)
            return NM_OK;
    }
}

/*
 * binary ::= x41 b1 b0 <data> binary   # non-final chunk
 *        ::= 'B' b1 b0 <data>          # final chunk
 *        ::= [x20-x2f] <data>          # 0-15 bytes
 *        ::= [x34-x37] b0 <data>       # 0-1023 bytes
 */
static int h2_binary(nm_h2 *h)
{
    for (int first = 1;; first = 0) {
        H2_NEED(h, 1);
        uint8_t t = h->buf[h->pos++];
        const uint8_t *p = h->buf + h->pos;
        uint32_t n;
        int final = 1;
        if (t >= 0x20 && t <= 0x2f) {
            n = t - 0x20u;
        } else if (t >= 0x34 && t <= 0x37) {
            H2_NEED(h, 1);
            n = ((uint32_t)(t - 0x34) << 8) | p[0];
            h->pos += 1;
        } else if (t == 'B' || t == 'A') {
            H2_NEED(h, 2);
            n = nm_be16(p);
            h->pos += 2;
            final = t == 'B';
        } else {
            (void)first;
            return h2_fail(h, NM_E_PROTOCOL, "hessian2: bad binary chunk");
        }
        H2_NEED(h, n);
        h->pos += n;
        if (final)
            return NM_OK;
    }
}

int nm_h2_type(nm_h2 *h)
{
    H2_NEED(h, 1);
    if (nm_h2_is_string_tag(h->buf[h->pos])) {
        nm_h2_str s;
        int rc = nm_h2_string(h, &s, NULL, NULL);
        if (rc < 0)
            return rc;
        h->ntypes++;
        return NM_OK;
    }
    uint32_t ref;
    int rc = h2_count(h, &ref);
    if (rc < 0)
        return rc;
    if (ref >= h->ntypes)
        return h2_fail(h, NM_E_PROTOCOL, "hessian2: reference to an undefined type");
    return NM_OK;
}

/* class-def ::= 'C' string int string* (the 'C' already read) */
static int h2_class_def(nm_h2 *h)
{
    nm_h2_str s;
    uint32_t nfields;
    int rc = nm_h2_string(h, &s, NULL, NULL);
    if (rc < 0)
        return rc;
    if (s.is_null)
        return h2_fail(h, NM_E_PROTOCOL, "hessian2: class definition without a name");
    if ((rc = h2_count(h, &nfields)) < 0)
        return rc;
    if (nfields > h->max_elements)
        return h2_fail(h, NM_E_TOO_MANY_ELEMENTS, "hessian2: class with more fields than max_elements");
    if (h->nclasses >= NM_H2_MAX_CLASSES)
        return h2_fail(h, NM_E_TOO_MANY_ELEMENTS, "hessian2: more class definitions than kept");
    for (uint32_t i = 0; i < nfields; i++) {
        if ((rc = nm_h2_string(h, &s, NULL, NULL)) < 0)
            return rc;
        if (s.is_null)
            return h2_fail(h, NM_E_PROTOCOL, "hessian2: null field name");
    }
    h->class_fields[h->nclasses++] = nfields;
    return NM_OK;
}

/* n values, each inside one more container. */
static int h2_values(nm_h2 *h, uint32_t n, uint32_t depth)
{
    if (n > h->max_elements)
        return h2_fail(h, NM_E_TOO_MANY_ELEMENTS, "hessian2: more elements than max_elements");
    if (n > h->end - h->pos)
        return h2_fail(h, NM_E_PROTOCOL, "hessian2: more elements than bytes left");
    for (uint32_t i = 0; i < n; i++) {
        int rc = nm_h2_skip(h, depth);
        if (rc < 0)
            return rc;
    }
    return NM_OK;
}

/* Values up to 'Z', in pairs for a map. */
static int h2_until_z(nm_h2 *h, uint32_t per_entry, uint32_t depth)
{
    for (uint32_t count = 0;; count++) {
        H2_NEED(h, 1);
        if (h->buf[h->pos] == 'Z') {
            h->pos++;
            return NM_OK;
        }
        if (count >= h->max_elements)
            return h2_fail(h, NM_E_TOO_MANY_ELEMENTS, "hessian2: more elements than max_elements");
        for (uint32_t k = 0; k < per_entry; k++) {
            int rc = nm_h2_skip(h, depth);
            if (rc < 0)
                return rc;
        }
    }
}

int nm_h2_skip(nm_h2 *h, uint32_t depth)
{
    uint32_t n;
    int rc;
again:
    H2_NEED(h, 1);
    uint8_t t = h->buf[h->pos];
    if (nm_h2_is_string_tag(t)) {
        nm_h2_str s;
        return nm_h2_string(h, &s, NULL, NULL);
    }
    if ((t >= 0x20 && t <= 0x2f) || (t >= 0x34 && t <= 0x37) || t == 'A' || t == 'B')
        return h2_binary(h);
    /* fixed-size scalars: the tag and the bytes after it */
    uint32_t size = 0;
    if (t >= 0x80 && t <= 0xbf) size = 1;          /* int, one octet */
    else if (t >= 0xc0 && t <= 0xcf) size = 2;     /* int, two octets */
    else if (t >= 0xd0 && t <= 0xd7) size = 3;     /* int, three octets */
    else if (t >= 0xd8 && t <= 0xef) size = 1;     /* long, one octet */
    else if (t >= 0xf0) size = 2;                  /* long, two octets */
    else if (t >= 0x38 && t <= 0x3f) size = 3;     /* long, three octets */
    else switch (t) {
    case 'N': case 'T': case 'F': case 0x5b: case 0x5c: size = 1; break;
    case 0x5d: size = 2; break;                    /* double as byte */
    case 0x5e: size = 3; break;                    /* double as short */
    case 'I': case 'Y': case 0x5f: case 'K': size = 5; break;
    case 'L': case 'D': case 'J': size = 9; break;
    default: break;
    }
    if (size) {
        H2_NEED(h, size);
        h->pos += size;
        return NM_OK;
    }
    if (t == 'C') {                                 /* a definition, then the value */
        h->pos++;
        if ((rc = h2_class_def(h)) < 0)
            return rc;
        goto again;
    }
    if (t == 'Q') {
        h->pos++;
        if ((rc = h2_count(h, &n)) < 0)
            return rc;
        if (n >= h->nrefs)
            return h2_fail(h, NM_E_PROTOCOL, "hessian2: reference to an undefined value");
        return NM_OK;
    }
    if (depth >= h->max_depth)
        return h2_fail(h, NM_E_TOO_DEEP, "hessian2: nesting deeper than max_depth");
    h->pos++;
    h->nrefs++;        /* every list, map and object can be referred to */
    if (t == 'O' || (t >= 0x60 && t <= 0x6f)) {
        if (t == 'O') {
            if ((rc = h2_count(h, &n)) < 0)
                return rc;
        } else {
            n = t - 0x60u;
        }
        if (n >= h->nclasses)
            return h2_fail(h, NM_E_PROTOCOL, "hessian2: object of an undefined class");
        return h2_values(h, h->class_fields[n], depth + 1);
    }
    switch (t) {
    case 'H':                                       /* untyped map */
        return h2_until_z(h, 2, depth + 1);
    case 'M':                                       /* typed map */
        if ((rc = nm_h2_type(h)) < 0)
            return rc;
        return h2_until_z(h, 2, depth + 1);
    case 0x55:                                      /* typed, variable length */
        if ((rc = nm_h2_type(h)) < 0)
            return rc;
        return h2_until_z(h, 1, depth + 1);
    case 'V':                                       /* typed, fixed length */
        if ((rc = nm_h2_type(h)) < 0 || (rc = h2_count(h, &n)) < 0)
            return rc;
        return h2_values(h, n, depth + 1);
    case 0x57:                                      /* untyped, variable length */
        return h2_until_z(h, 1, depth + 1);
    case 0x58:                                      /* untyped, fixed length */
        if ((rc = h2_count(h, &n)) < 0)
            return rc;
        return h2_values(h, n, depth + 1);
    default:
        break;
    }
    if (t >= 0x70 && t <= 0x77) {                   /* typed, short fixed length */
        if ((rc = nm_h2_type(h)) < 0)
            return rc;
        return h2_values(h, t - 0x70u, depth + 1);
    }
    if (t >= 0x78 && t <= 0x7f)                     /* untyped, short fixed length */
        return h2_values(h, t - 0x78u, depth + 1);
    h->pos--;
    return h2_fail(h, NM_E_PROTOCOL, "hessian2: unknown tag");
}

/* Write a UTF-8 message as a hessian2 string, in chunks of at most 0x8000
 * chars that never split a character, each char beyond U+FFFF as the
 * surrogate pair Java's writer emits (every hessian2 reader takes that).
 * NM_E_ARGUMENT if it is not UTF-8. */
int nm_h2_write_string(nm_writer *w, const uint8_t *s, size_t len)
{
    size_t i = 0;
    do {
        size_t start = i;
        uint32_t chars = 0;
        while (i < len) {
            uint8_t c = s[i];
            size_t k = c < 0x80 ? 1 : c >= 0xc2 && c < 0xe0 ? 2 : c >= 0xe0 && c < 0xf0 ? 3
                     : c >= 0xf0 && c < 0xf5 ? 4 : 0;
            uint32_t cc = k == 4 ? 2 : 1;
            if (!k || len - i < k)
                return NM_E_ARGUMENT;
            for (size_t j = 1; j < k; j++)
                if ((s[i + j] & 0xc0) != 0x80)
                    return NM_E_ARGUMENT;
            if (chars + cc > 0x8000)
                break;
            chars += cc;
            i += k;
        }
        if (i < len) {                      /* non-final chunk */
            nm_w_byte(w, 'R');
            nm_w_byte(w, (uint8_t)(chars >> 8));
            nm_w_byte(w, (uint8_t)chars);
        } else if (chars <= 31) {
            nm_w_byte(w, (uint8_t)chars);
        } else if (chars <= 1023) {
            nm_w_byte(w, (uint8_t)(0x30 + (chars >> 8)));
            nm_w_byte(w, (uint8_t)chars);
        } else {
            nm_w_byte(w, 'S');
            nm_w_byte(w, (uint8_t)(chars >> 8));
            nm_w_byte(w, (uint8_t)chars);
        }
        while (start < i) {   /* a 4-byte char goes out as Java writes it: */
            size_t run = start;   /* two 3-byte surrogates */
            while (run < i && s[run] < 0xf0)
                run++;
            nm_w_bytes(w, s + start, run - start);
            if (run < i) {
                uint32_t cp = ((uint32_t)(s[run] & 0x07) << 18) | ((uint32_t)(s[run + 1] & 0x3f) << 12)
                            | ((uint32_t)(s[run + 2] & 0x3f) << 6) | (s[run + 3] & 0x3f);
                uint32_t hi = 0xd800 + ((cp - 0x10000) >> 10), lo = 0xdc00 + (cp & 0x3ff);
                uint8_t cesu[6] = {
                    (uint8_t)(0xe0 | (hi >> 12)), (uint8_t)(0x80 | ((hi >> 6) & 0x3f)),
                    (uint8_t)(0x80 | (hi & 0x3f)), (uint8_t)(0xe0 | (lo >> 12)),
                    (uint8_t)(0x80 | ((lo >> 6) & 0x3f)), (uint8_t)(0x80 | (lo & 0x3f)) };
                nm_w_bytes(w, cesu, sizeof cesu);
                run += 4;
            }
            start = run;
        }
    } while (i < len);
    return NM_OK;
}
