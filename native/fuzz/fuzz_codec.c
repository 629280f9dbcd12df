/*
 * One libFuzzer target for every codec, compiled once per protocol:
 *   clang -DFUZZ_PROTOCOL=NM_PROTO_DUBBO -fsanitize=fuzzer,address,undefined ...
 * (native/fuzz/run.sh does it with the sources listed in build_codec.py).
 *
 * Input = a 32-byte options prefix (layout below, written by seeds.py) and
 * the stream bytes. The target
 *   1. decodes the stream whole (each call on an exact-size copy of the
 *      unconsumed bytes, so any read past `len` is an ASan report),
 *   2. decodes it again fed in two pieces at a split point from the prefix,
 *      and abort()s unless both give the same frames and the same error,
 *   3. checks every frame and metadata span lies within its frame,
 *   4. calls nm_rewrite_request_id, nm_build_error, nm_build_heartbeat_reply
 *      and nm_build_heartbeat on each frame into small exact-size buffers and
 *      checks what they return; for the length-field codec, a rewritten id
 *      and an error reply must decode back.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

#ifndef FUZZ_PROTOCOL
#define FUZZ_PROTOCOL NM_PROTO_LENGTHFIELD
#endif

#define PREFIX 32
#define BATCH 64
#define META_BATCH 256

#define CHECK(cond) do { if (!(cond)) { \
    fprintf(stderr, "fuzz_codec: check failed: %s (line %d)\n", #cond, __LINE__); \
    abort(); } } while (0)

typedef struct {
    nm_frame *frames;
    size_t nframes, frames_cap;
    nm_meta *meta;
    size_t nmeta, meta_cap;
    int status;             /* 0, or the sticky error */
    size_t consumed;
} run_result;

static const uint32_t LENGTH_SIZES[8] = {1, 2, 3, 4, 8, 4, 2, 4};

/* The options prefix:
 *  0 flags: 1 response direction, 2 no RESP3, 4 small limits, 8 little
 *    endian, 16 length includes header, 32 kind byte, 64 kv section
 *  1 thrift bits  2 http leniencies  3-4 split point (BE)
 *  5 length size index  6 length offset  7 length adjustment (int8)
 *  8 header length  9 magic size  10-13 magic (BE)  14 id offset  15 id size
 *  16 kind offset  17-19 response / oneway / heartbeat masks
 *  20 kv offset  21 kv length size  22 pair separator  23 key/value separator
 *  24 field count (0..3)  25-30 fields: offset, length (bit 7: integer)
 *  31 reply reason and output capacity selector */
static void options_from(const uint8_t *p, nm_options *o)
{
    memset(o, 0, sizeof(*o));
    o->direction = p[0] & 1;
    o->redis_resp3 = (p[0] & 2) ? 0 : 1;
    if (p[0] & 4) {
        nm_limits l = {256, 4, 4, 16, 8, 128};
        o->limits = l;
    }
    o->thrift = p[1] & (NM_THRIFT_BINARY | NM_THRIFT_COMPACT | NM_THRIFT_FRAMED |
                        NM_THRIFT_UNFRAMED | NM_THRIFT_STRICT);
    o->http_lenient = p[2] & 31;
    nm_lengthfield_config *c = &o->lengthfield;
    c->little_endian = (p[0] >> 3) & 1;
    c->length_includes_header = (p[0] >> 4) & 1;
    c->length_size = LENGTH_SIZES[p[5] & 7];
    c->length_offset = p[6];
    c->length_adjustment = (int8_t)p[7];
    c->header_length = p[8];
    c->magic_size = p[9];
    c->magic = ((uint32_t)p[10] << 24) | ((uint32_t)p[11] << 16) | ((uint32_t)p[12] << 8) | p[13];
    c->id_offset = p[14];
    c->id_size = p[15];
    if (p[0] & 32) {
        c->kind_present = 1;
        c->kind_offset = p[16];
        c->kind_response_mask = p[17];
        c->kind_oneway_mask = p[18];
        c->kind_heartbeat_mask = p[19];
    }
    if (p[0] & 64) {
        c->kv_offset = p[20];
        c->kv_length_size = p[21];
        c->kv_pair_sep = p[22];
        c->kv_sep = p[23];
    }
    c->nfields = p[24] % 4;
    static const uint32_t keys[3] = {NM_KEY_INTERFACE, NM_KEY_METHOD, NM_KEY_CUSTOM};
    for (uint32_t i = 0; i < c->nfields; i++) {
        c->fields[i].offset = p[25 + 2 * i];
        c->fields[i].length = p[26 + 2 * i] & 127;
        c->fields[i].is_integer = p[26 + 2 * i] >> 7;
        c->fields[i].key_id = keys[i];
        memcpy(c->fields[i].name, i == 2 ? "status" : "f", i == 2 ? 7 : 2);
    }
}

static void push(run_result *r, const nm_frame *f, const nm_meta *meta, size_t base)
{
    if (r->nframes == r->frames_cap) {
        r->frames_cap = r->frames_cap ? 2 * r->frames_cap : 64;
        r->frames = realloc(r->frames, r->frames_cap * sizeof(nm_frame));
        CHECK(r->frames);
    }
    while (r->nmeta + f->meta_count > r->meta_cap) {
        r->meta_cap = r->meta_cap ? 2 * r->meta_cap : 256;
        r->meta = realloc(r->meta, r->meta_cap * sizeof(nm_meta));
        CHECK(r->meta);
    }
    nm_frame *g = &r->frames[r->nframes++];
    *g = *f;
    g->offset = f->offset + base;
    g->meta_start = (uint32_t)r->nmeta;
    for (uint32_t i = 0; i < f->meta_count; i++) {
        nm_meta m = meta[f->meta_start + i];   /* empty spans: offset 0 */
        m.key.off = m.key.len ? m.key.off + (uint32_t)base : 0;
        m.value.off = m.value.len ? m.value.off + (uint32_t)base : 0;
        r->meta[r->nmeta++] = m;
    }
}

/* Decode data[base..end) as one nm_decode() window after another; returns
 * the new base. Each window is an exact-size heap copy. */
static size_t feed(nm_decoder *d, const uint8_t *data, size_t base, size_t end, run_result *r)
{
    static nm_frame frames[BATCH];
    static nm_meta meta[META_BATCH];
    while (base < end && !r->status) {
        size_t n = end - base, used = 0;
        uint8_t *win = malloc(n);
        CHECK(win);
        memcpy(win, data + base, n);
        int got = nm_decode(d, win, n, frames, BATCH, meta, META_BATCH, &used);
        free(win);
        if (got < 0) {
            CHECK(used == 0);
            r->status = got;
            break;
        }
        CHECK(used <= n);
        for (int i = 0; i < got; i++)
            push(r, &frames[i], meta, base);
        if (d->error && got > 0) {   /* error after good frames: next call reports it */
            base += used;
            continue;
        }
        if (used == 0)
            break;
        base += used;
    }
    return base;
}

static void run(const nm_options *o, const uint8_t *data, size_t size, size_t split, run_result *r)
{
    nm_decoder d;
    memset(r, 0, sizeof(*r));
    CHECK(nm_decoder_init(&d, FUZZ_PROTOCOL, o) == NM_OK);
    size_t base = split ? feed(&d, data, 0, split, r) : 0;
    r->consumed = feed(&d, data, base, size, r);
    if (!r->status && d.error)
        r->status = d.error;
}

static void same(const run_result *a, const run_result *b)
{
    /* Both fail or neither. Which error may differ: a check that looks
     * ahead (line too long, bare LF further on) sees further in one run. */
    CHECK((a->status == 0) == (b->status == 0));
    CHECK(a->nframes == b->nframes);
    CHECK(a->nmeta == b->nmeta);
    for (size_t i = 0; i < a->nframes; i++) {
        const nm_frame *f = &a->frames[i], *g = &b->frames[i];
        CHECK(f->offset == g->offset && f->length == g->length && f->kind == g->kind);
        CHECK(f->request_id == g->request_id && f->status == g->status);
        CHECK(f->flags == g->flags && f->meta_count == g->meta_count);
        CHECK(f->body_offset == g->body_offset && f->id_offset == g->id_offset);
        CHECK(f->id_length == g->id_length && f->variant == g->variant);
    }
    if (a->nmeta)
        CHECK(memcmp(a->meta, b->meta, a->nmeta * sizeof(nm_meta)) == 0);
}

static void in_frame(const nm_frame *f, nm_span s)
{
    CHECK(s.off >= f->offset && (uint64_t)s.off + s.len <= f->offset + f->length);
}

static void check_bounds(const run_result *r, size_t size)
{
    size_t prev = 0;
    for (size_t i = 0; i < r->nframes; i++) {
        const nm_frame *f = &r->frames[i];
        CHECK(f->length > 0 && f->offset == prev && f->offset + f->length <= size);
        CHECK(f->body_offset <= f->length);
        CHECK(f->id_length == 0 || (uint64_t)f->id_offset + f->id_length <= f->length);
        CHECK(f->kind >= NM_KIND_REQUEST && f->kind <= NM_KIND_ERROR);
        prev = f->offset + f->length;
        for (uint32_t j = 0; j < f->meta_count; j++) {
            const nm_meta *m = &r->meta[f->meta_start + j];
            if (m->key.len)
                in_frame(f, m->key);
            if (m->value.len)
                in_frame(f, m->value);
        }
    }
    CHECK(r->consumed == prev);
}

/* Decode one frame alone (lengthfield: frames are self-contained). */
static int decode_one(const nm_options *o, const uint8_t *p, size_t n, nm_frame *f)
{
    nm_decoder d;
    static nm_meta meta[META_BATCH];
    size_t used = 0;
    CHECK(nm_decoder_init(&d, FUZZ_PROTOCOL, o) == NM_OK);
    return nm_decode(&d, p, n, f, 1, meta, META_BATCH, &used);
}

static void replies(const nm_options *o, const uint8_t *data, size_t size, const run_result *r,
                    uint8_t sel)
{
    nm_decoder d;
    CHECK(nm_decoder_init(&d, FUZZ_PROTOCOL, o) == NM_OK);
    size_t cap = (size_t)(sel & 15) * 24 + 1;
    uint32_t reason = NM_REPLY_NO_ROUTE + (sel >> 4) % NM_REPLY_INTERNAL;
    uint8_t *copy = malloc(size ? size : 1), *out = malloc(cap);
    CHECK(copy && out);
    for (size_t i = 0; i < r->nframes && i < 64; i++) {
        const nm_frame *f = &r->frames[i];
        memcpy(copy, data, size);
        uint64_t new_id = f->request_id ^ 1;
        int rc = nm_rewrite_request_id(&d, copy, size, f, new_id);
        CHECK(rc == NM_OK || rc == NM_E_REWRITE || rc == NM_E_ARGUMENT || rc == NM_E_UNSUPPORTED);
        if (rc == NM_OK && FUZZ_PROTOCOL == NM_PROTO_LENGTHFIELD) {
            nm_frame g;
            CHECK(decode_one(o, copy + f->offset, f->length, &g) == 1);
            CHECK(g.request_id == new_id && g.length == f->length);
        }
        int64_t n = nm_build_error(&d, data, size, f, r->meta, reason, "fuzz", 4, out, cap);
        CHECK(n <= (int64_t)cap);
        if (n > 0 && FUZZ_PROTOCOL == NM_PROTO_LENGTHFIELD) {
            nm_frame g;
            CHECK(decode_one(o, out, (size_t)n, &g) == 1);
            CHECK(g.length == (uint32_t)n && g.request_id == f->request_id);
        }
        n = nm_build_heartbeat_reply(&d, data, size, f, out, cap);
        CHECK(n <= (int64_t)cap);
    }
    int64_t n = nm_build_heartbeat(&d, sel, out, cap);
    CHECK(n <= (int64_t)cap);
    free(copy);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *input, size_t input_size)
{
    if (input_size < PREFIX)
        return 0;
    nm_options o;
    options_from(input, &o);
    nm_decoder probe;
    if (nm_decoder_init(&probe, FUZZ_PROTOCOL, &o) != NM_OK)
        return 0;   /* a configuration the init hook refuses: nothing to decode */
    const uint8_t *data = input + PREFIX;
    size_t size = input_size - PREFIX;
    size_t split = size ? (((size_t)input[3] << 8) | input[4]) % (size + 1) : 0;

    run_result whole, parts;
    run(&o, data, size, 0, &whole);
    run(&o, data, size, split, &parts);
    same(&whole, &parts);
    check_bounds(&whole, size);
    replies(&o, data, size, &whole, input[31]);
    free(whole.frames); free(whole.meta);
    free(parts.frames); free(parts.meta);
    return 0;
}
