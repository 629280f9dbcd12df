/*
 * Thrift codec internals shared by thrift.c (transport detection, framing),
 * thrift_skip.c (message header and struct skipping, both protocols) and
 * thrift_reply.c (TApplicationException replies, seqid rewrite).
 */
#ifndef NODEMESH_THRIFT_H
#define NODEMESH_THRIFT_H

#include "internal.h"

/* The skip stack lives on the C stack: max_depth above this acts as this. */
#define TH_STACK_MAX 256

#define TH_PROTO_MASK     (NM_THRIFT_BINARY | NM_THRIFT_COMPACT)
#define TH_TRANSPORT_MASK (NM_THRIFT_FRAMED | NM_THRIFT_UNFRAMED)
/* d->state[0] only: binary connection pinned to the non-strict header. */
#define TH_PIN_LOOSE      128

/* Message types (TMessageType). */
enum { TH_CALL = 1, TH_REPLY = 2, TH_EXCEPTION = 3, TH_ONEWAY = 4 };

/* A bounded read window over one message; positions are absolute. */
typedef struct {
    const uint8_t *buf;
    size_t end;          /* readable up to here: min(input end, limit) */
    size_t limit;        /* the message may not extend past this */
    int framed;          /* 1: end is the frame end; running out is malformed */
    uint32_t max_depth;
    uint32_t max_elements;
    size_t need;         /* incomplete: this position must become readable */
    const char *reason;  /* error: short static reason */
    int want_message;    /* capture field 1 (string) of the top struct */
    uint32_t msg_off, msg_len, has_msg;
} th_cursor;

/* A parsed message header (positions absolute). */
typedef struct {
    uint32_t type;
    uint32_t seqid;
    uint32_t name_off, name_len;
    uint32_t id_off, id_len;
    uint32_t strict;     /* binary: versioned header */
    size_t body;         /* where the argument/result struct starts */
} th_header;

/* Not enough bytes for n at p: incomplete, too large, or overrun. */
static inline int th_short(th_cursor *c, size_t p, uint64_t n)
{
    if (c->framed) {
        c->reason = "message overruns its frame";
        return NM_E_PROTOCOL;
    }
    if (n > (uint64_t)(c->limit - p)) {
        c->reason = "message larger than max_frame_size";
        return NM_E_FRAME_TOO_LARGE;
    }
    c->need = p + (size_t)n;
    return 0;
}

/* Make n bytes at p readable or return (0 / error) from the caller. */
#define TH_NEED(c, p, n)                                          \
    do {                                                          \
        if ((uint64_t)(n) > (uint64_t)((c)->end - (p)))           \
            return th_short((c), (p), (uint64_t)(n));             \
    } while (0)

/* All return 1 when done, 0 when incomplete (c->need), < 0 nm_status. */
int th_read_header(th_cursor *c, size_t p, uint32_t proto, th_header *h);
int th_skip_binary(th_cursor *c, size_t *pos);
int th_skip_compact(th_cursor *c, size_t *pos);

int th_rewrite_id(const nm_decoder *d, uint8_t *buf, size_t len,
                  const nm_frame *f, uint64_t new_id);
int64_t th_build_error(const nm_decoder *d, const uint8_t *buf, size_t len,
                       const nm_frame *f, const nm_meta *meta,
                       uint32_t reason, const char *msg, size_t msg_len,
                       uint8_t *out, size_t cap);

#endif
