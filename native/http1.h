/*
 * HTTP/1.1 codec, private to native/http1*.c: character classes, the
 * decoder's scratch state, and the pieces each file provides.
 */
#ifndef NODEMESH_HTTP1_H
#define NODEMESH_HTTP1_H

#include "internal.h"

/* Character classes (RFC 9110 5.6.2 tchar, 5.5 field-vchar, RFC 3986). */
#define H1_TCHAR   1   /* token character                             */
#define H1_VALUE   2   /* field value: VCHAR, SP, HTAB, obs-text      */
#define H1_TARGET  4   /* request-target: VCHAR, obs-text (no SP/CTL) */
#define H1_HEX     8

extern const uint8_t nm_h1_class[256];

#define H1_IS(c, cls) (nm_h1_class[(uint8_t)(c)] & (cls))

/* d->state[] slots. */
#define H1_ST_FLAGS    0   /* H1_STOPPED                                  */
#define H1_ST_QUEUE    1   /* 2 bits per expected response, oldest lowest */
#define H1_ST_QLEN     2   /* entries in the queue                        */
#define H1_ST_SCAN     3   /* incomplete head: next line to validate      */
#define H1_ST_RESUME   4   /* chunked: next chunk line, from frame start  */
#define H1_ST_HEAD     5   /* header section length once known (0: not yet) */
#define H1_ST_EARLY    6   /* incomplete head: lines seen, last was framing */

#define H1_STOPPED     1   /* after an upgrade / until-close frame        */

#define H1_CHUNK_LINE_MAX 4096  /* chunk-size line incl. extensions */

static inline int h1_lenient(const nm_decoder *d, uint32_t flag)
{
    return (d->opt.http_lenient & flag) != 0;
}

/* ASCII case-insensitive compare of p[0..n) with a lower-case literal. */
static inline int h1_ieq(const uint8_t *p, size_t n, const char *lit, size_t litn)
{
    if (n != litn)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((p[i] | 0x20) != (uint8_t)lit[i])
            return 0;
    return 1;
}

#define H1_IEQ(p, n, lit) h1_ieq((p), (n), lit, sizeof(lit) - 1)

/*
 * Scan a chunked body starting at buf[b] (absolute); the frame starts at
 * buf[start]. Returns the absolute end of the message (> b), 0 when more
 * bytes are needed (d->need / d->state[H1_ST_RESUME] updated), or a
 * negative nm_status.
 */
int64_t nm_h1_chunked(nm_decoder *d, const uint8_t *buf, size_t len,
                      size_t start, size_t b);

/* Validate one header/trailer line's name and value (see http1.c). */
int nm_h1_header_line(nm_decoder *d, const uint8_t *buf, size_t ls, size_t le,
                      size_t *name_end, size_t *vs, size_t *ve);

/* Start line and line-end checks (http1.c). */
int nm_h1_value_error(nm_decoder *d, uint8_t c);
int nm_h1_line_end(nm_decoder *d, const uint8_t *buf, size_t ls, size_t nl, size_t *ce);
int nm_h1_version(nm_decoder *d, const uint8_t *p, size_t n);
int nm_h1_request_line(nm_decoder *d, const uint8_t *buf, size_t p, size_t ce,
                       nm_out *o, int *is_connect, size_t *target, size_t *target_end);
int nm_h1_status_line(nm_decoder *d, const uint8_t *buf, size_t p, size_t ce,
                      nm_out *o, int *status);

/* Content-Length digits (empty, non-digits: NM_E_SMUGGLING; above
 * max_frame_size: NM_E_FRAME_TOO_LARGE, found as soon as it is exceeded). */
int nm_h1_cl_value(nm_decoder *d, const uint8_t *p, size_t n, uint64_t *v);

/* 1: Content-Length, 2: Transfer-Encoding, 0: another field name. */
static inline int nm_h1_framing_field(const uint8_t *name, size_t n)
{
    return H1_IEQ(name, n, "content-length") ? 1 : H1_IEQ(name, n, "transfer-encoding") ? 2 : 0;
}

/* Line-local checks of the field line at buf[ls] ending in the LF at
 * buf[nl], the same for a complete and an incomplete header section (so
 * errors do not depend on how the bytes were split): 0 for a field line
 * (*ne, *vs, *ve: name end, value span), H1_FOLD for an obs-fold line
 * (*ve: its content end), or an error. *seen: count and framing bit. */
#define H1_FOLD 1
int nm_h1_field_line(nm_decoder *d, const uint8_t *buf, size_t ls, size_t nl, int first,
                     uint64_t *seen, size_t *ne, size_t *vs, size_t *ve);

/* The start line at buf[p] ending in the LF at buf[nl]: minor version or error. */
int nm_h1_start_line(nm_decoder *d, const uint8_t *buf, size_t p, size_t nl, nm_out *o,
                     int *is_connect, size_t *target, size_t *target_end, int *status);

/* Incomplete header section at buf[p..len) (frame at pos): validate what
 * is there so bad input fails before the rest arrives. 0 or an error. */
int nm_h1_early(nm_decoder *d, const uint8_t *buf, size_t len, size_t pos, size_t p);

int64_t nm_h1_build_error(const nm_decoder *d, const uint8_t *buf, size_t len,
                          const nm_frame *f, const nm_meta *meta,
                          uint32_t reason, const char *msg, size_t msg_len,
                          uint8_t *out, size_t cap);

#endif
