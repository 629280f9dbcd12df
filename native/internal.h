/*
 * What the protocol files share: bounds-checked readers, the frame and
 * metadata writers, and the table each protocol fills in.
 *
 * A protocol implements "decode one frame at pos"; codec.c runs the batch
 * loop, the limits common to all, and rolls back a frame that did not fit.
 */
#ifndef NODEMESH_INTERNAL_H
#define NODEMESH_INTERNAL_H

#include <string.h>
#include "codec.h"

/* Where decoded frames and metadata go during one nm_decode() call. */
typedef struct {
    nm_frame *frames;
    uint32_t max_frames, nframes;
    nm_meta *meta;
    uint32_t max_meta, nmeta;
    int meta_overflow;        /* a frame had more entries than fit */
} nm_out;

/*
 * Decode the frame starting at buf[pos]. Fill f (offset, length are set by
 * the caller from the return value) and push metadata with nm_push_meta*.
 * Return the frame's length (> 0), 0 if more bytes are needed (optionally
 * setting d->need to the total frame length when it is known), or a
 * negative nm_status with d->error_reason set.
 */
typedef int (*nm_frame_fn)(nm_decoder *d, const uint8_t *buf, size_t len,
                           size_t pos, nm_frame *f, nm_out *o);

typedef int (*nm_rewrite_fn)(const nm_decoder *d, uint8_t *buf, size_t len,
                             const nm_frame *f, uint64_t new_id);

typedef int64_t (*nm_error_fn)(const nm_decoder *d, const uint8_t *buf,
                               size_t len, const nm_frame *f,
                               const nm_meta *meta, uint32_t reason,
                               const char *msg, size_t msg_len,
                               uint8_t *out, size_t cap);

typedef int64_t (*nm_hb_reply_fn)(const nm_decoder *d, const uint8_t *buf,
                                  size_t len, const nm_frame *f,
                                  uint8_t *out, size_t cap);

typedef int64_t (*nm_hb_fn)(const nm_decoder *d, uint64_t request_id,
                            uint8_t *out, size_t cap);

typedef struct {
    const char *name;
    nm_frame_fn frame;
    nm_rewrite_fn rewrite_id;     /* NULL: big-endian field at id_offset */
    nm_error_fn build_error;
    nm_hb_reply_fn heartbeat_reply; /* NULL: protocol has none */
    nm_hb_fn heartbeat;             /* NULL: protocol has none */
    int (*init)(nm_decoder *d);     /* NULL: nothing to check */
} nm_codec_ops;

extern const nm_codec_ops nm_dubbo_ops;
extern const nm_codec_ops nm_thrift_ops;
extern const nm_codec_ops nm_redis_ops;
extern const nm_codec_ops nm_http1_ops;
extern const nm_codec_ops nm_lengthfield_ops;

/* Record an error and return its code (for `return nm_fail(d, ...)`). */
static inline int nm_fail(nm_decoder *d, int code, const char *reason)
{
    d->error_reason = reason;
    return code;
}

static inline int nm_push_meta(nm_out *o, uint32_t key_id, uint32_t voff,
                               uint32_t vlen)
{
    if (o->nmeta >= o->max_meta) {
        o->meta_overflow = 1;
        return 0;
    }
    nm_meta *m = &o->meta[o->nmeta++];
    m->key_id = key_id;
    m->flags = 0;
    m->key.off = 0;
    m->key.len = 0;
    m->value.off = voff;
    m->value.len = vlen;
    return 1;
}

static inline int nm_push_meta_kv(nm_out *o, uint32_t koff, uint32_t klen,
                                  uint32_t voff, uint32_t vlen, uint32_t flags)
{
    if (!nm_push_meta(o, NM_KEY_CUSTOM, voff, vlen))
        return 0;
    nm_meta *m = &o->meta[o->nmeta - 1];
    m->key.off = koff;
    m->key.len = klen;
    m->flags = flags;
    return 1;
}

/* Big-endian readers; the caller has checked the bounds. */
static inline uint16_t nm_be16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static inline uint32_t nm_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | p[3];
}

static inline uint64_t nm_be64(const uint8_t *p)
{
    return ((uint64_t)nm_be32(p) << 32) | nm_be32(p + 4);
}

static inline void nm_put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void nm_put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline void nm_put_be64(uint8_t *p, uint64_t v)
{
    nm_put_be32(p, (uint32_t)(v >> 32));
    nm_put_be32(p + 4, (uint32_t)v);
}

/* A bounded output writer for the reply builders. */
typedef struct {
    uint8_t *p;
    size_t len, cap;
    int overflow;
} nm_writer;

static inline void nm_w_bytes(nm_writer *w, const void *src, size_t n)
{
    if (w->overflow || n > w->cap - w->len) {
        w->overflow = 1;
        return;
    }
    memcpy(w->p + w->len, src, n);
    w->len += n;
}

static inline void nm_w_byte(nm_writer *w, uint8_t b)
{
    nm_w_bytes(w, &b, 1);
}

static inline void nm_w_str(nm_writer *w, const char *s)
{
    nm_w_bytes(w, s, strlen(s));
}

static inline int64_t nm_w_done(const nm_writer *w)
{
    return w->overflow ? NM_E_BUFFER : (int64_t)w->len;
}

/* The value of a metadata entry of f with this key id, or NULL. */
const nm_meta *nm_find_meta(const nm_frame *f, const nm_meta *meta,
                            uint32_t key_id);

/* Limits with defaults applied (d->opt.limits holds them after init). */
#define NM_LIMIT(d, field) ((d)->opt.limits.field)

#endif
