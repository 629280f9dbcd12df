/*
 * hessian2: a bounds-checked reader that skips values of one message and
 * hands out strings as spans. Nothing is decoded into memory: the reader
 * keeps only the counts that later values refer to (class definitions' field
 * counts, types, references), for the message it reads.
 *
 * Spec: hessian 2.0 serialization (caucho), as Dubbo's hessian-lite writes
 * it. Every function returns NM_OK or a negative nm_status with h->reason set.
 */
#ifndef NODEMESH_HESSIAN2_H
#define NODEMESH_HESSIAN2_H
#include "internal.h"

/* Class definitions kept per message; one more is NM_E_TOO_MANY_ELEMENTS. */
#define NM_H2_MAX_CLASSES 256
/* Recursion bound whatever max_depth says (keeps the C stack small). */
#define NM_H2_DEPTH_CAP 512

typedef struct {
    const uint8_t *buf;     /* the caller's input; spans are offsets into it */
    uint32_t pos, end;      /* cursor, and the end of the message */
    uint32_t max_depth, max_elements;
    uint32_t nrefs;         /* lists, maps and objects read so far ('Q') */
    uint32_t ntypes;        /* type strings read so far (type refs) */
    uint32_t nclasses;
    const char *reason;     /* why the last call failed (static string) */
    uint32_t class_fields[NM_H2_MAX_CLASSES];
} nm_h2;

/* A string value: one chunk is a span; a chunked string or null is not. */
typedef struct {
    uint32_t off, len;      /* UTF-8 bytes of a single-chunk string */
    uint8_t is_null;
    uint8_t chunked;
} nm_h2_str;

/* Called with the bytes of each chunk of a string, in order. */
typedef void (*nm_h2_chunk_fn)(void *ctx, const uint8_t *p, uint32_t n);

void nm_h2_init(nm_h2 *h, const uint8_t *buf, uint32_t pos, uint32_t end,
                const nm_limits *limits);

/* Skip one value (with any class definitions before it). depth is the
 * number of containers around it. */
int nm_h2_skip(nm_h2 *h, uint32_t depth);

/* Read a string or null; fn (may be NULL) sees every chunk. */
int nm_h2_string(nm_h2 *h, nm_h2_str *s, nm_h2_chunk_fn fn, void *ctx);

/* Skip a type (a string, or an int naming an earlier one). */
int nm_h2_type(nm_h2 *h);

/* Append s (UTF-8) as a hessian2 string; NM_E_ARGUMENT if not UTF-8. */
int nm_h2_write_string(nm_writer *w, const uint8_t *s, size_t len);

/* True when the tag at the cursor starts a string. */
static inline int nm_h2_is_string_tag(uint8_t t)
{
    return t <= 0x1f || (t >= 0x30 && t <= 0x33) || t == 'R' || t == 'S';
}

#endif
