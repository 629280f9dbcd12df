/*
 * libFuzzer target for native/mux.c (the batch id rewrite):
 *   clang -fsanitize=fuzzer,address,undefined fuzz_mux.c ../mux.c
 * (`native/fuzz/run.sh mux SECONDS` builds and runs it).
 *
 * Input: byte 0 = encoding (low 2 bits: one invalid value; bit 7: per-frame
 * encodings, nm_mux_rewrite_each), byte 1 = number of frames (mod 33), then
 * per frame a 6-byte header (u16 length, u16 id_offset, u8 id_length, u8
 * encoding of this frame, low 2 bits, with bit 7 of byte 0) followed by up
 * to `length` bytes of frame data (short inputs give short frames), then 8
 * bytes per id.
 * Every span points into an exact-size heap copy and the output buffer is
 * exact-size too, so any overrun is an ASan report. The target checks the
 * result against a reference: the bytes outside id fields are copied as
 * they were, and each id field decodes back to its id.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mux.h"

#define MAX_FRAMES 32

#define CHECK(cond) do { if (!(cond)) { \
    fprintf(stderr, "fuzz_mux: check failed: %s (line %d)\n", #cond, __LINE__); \
    abort(); } } while (0)

static uint64_t read_varint(const uint8_t *p, uint32_t n)
{
    uint64_t v = 0;
    for (uint32_t i = 0; i < n; i++)
        v |= (uint64_t)(p[i] & 0x7F) << (7 * i);
    return v;
}

static uint64_t read_fixed(const uint8_t *p, uint32_t n, int le)
{
    uint64_t v = 0;
    for (uint32_t i = 0; i < n; i++)
        v |= (uint64_t)p[le ? i : n - 1 - i] << (8 * i);
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    int encoding = data[0] & 3, each = data[0] & 0x80, any_bad = 0;
    size_t n = data[1] % (MAX_FRAMES + 1), at = 2;
    nm_mux_span spans[MAX_FRAMES];
    uint8_t encs[MAX_FRAMES];
    uint8_t *copies[MAX_FRAMES] = {0};
    uint64_t ids[MAX_FRAMES] = {0};
    size_t total = 0, made = 0;
    for (; made < n && at + 6 <= size; made++) {
        uint32_t length = (uint32_t)data[at] | (uint32_t)data[at + 1] << 8;
        uint32_t id_offset = (uint32_t)data[at + 2] | (uint32_t)data[at + 3] << 8;
        uint32_t id_length = data[at + 4] % 10;
        encs[made] = each ? data[at + 5] & 3 : (uint8_t)encoding;
        any_bad |= encs[made] == 3;
        at += 6;
        if (length > size - at)
            length = (uint32_t)(size - at);
        copies[made] = malloc(length ? length : 1);
        CHECK(copies[made]);
        memcpy(copies[made], data + at, length);
        at += length;
        spans[made] = (nm_mux_span){copies[made], length, id_offset, id_length};
        total += length;
    }
    for (size_t i = 0; i < made && at + 8 <= size; i++, at += 8)
        memcpy(&ids[i], data + at, 8);
    uint8_t *out = malloc(total ? total : 1);
    CHECK(out);
    int64_t rc = each ? nm_mux_rewrite_each(spans, made, ids, encs, out, total)
                      : nm_mux_rewrite(spans, made, ids, encoding, out, total);
    if (!each && encoding == 3) {
        CHECK(rc == NM_MUX_E_ARGUMENT);
    } else if (rc >= 0) {
        CHECK((size_t)rc == total);
        size_t pos = 0;
        for (size_t i = 0; i < made; i++) {
            const nm_mux_span *s = &spans[i];
            const uint8_t *f = out + pos;
            CHECK(s->id_length >= 1 && s->id_length <= 8);
            CHECK((uint64_t)s->id_offset + s->id_length <= s->length);
            CHECK(memcmp(f, s->data, s->id_offset) == 0);
            size_t tail = s->id_offset + s->id_length;
            CHECK(memcmp(f + tail, s->data + tail, s->length - tail) == 0);
            const uint8_t *idp = f + s->id_offset;
            uint64_t mask = s->id_length == 8 ? ~0ull : (1ull << (8 * s->id_length)) - 1;
            CHECK(encs[i] != 3);
            if (encs[i] == NM_ID_VARINT) {
                CHECK(read_varint(idp, s->id_length) == (ids[i] & 0xFFFFFFFFu));
                CHECK((idp[s->id_length - 1] & 0x80) == 0);
            } else {
                CHECK(read_fixed(idp, s->id_length, encs[i] == NM_ID_LE) == (ids[i] & mask));
            }
            pos += s->length;
        }
    } else {
        CHECK(rc == NM_MUX_E_FIELD || rc == NM_MUX_E_VALUE ||
              (rc == NM_MUX_E_ARGUMENT && any_bad));
    }
    /* a buffer one byte short is refused, never overrun */
    if (total) {
        uint8_t *small = malloc(total - 1 ? total - 1 : 1);
        CHECK(small);
        int64_t r2 = each ? nm_mux_rewrite_each(spans, made, ids, encs, small, total - 1)
                          : nm_mux_rewrite(spans, made, ids, encoding, small, total - 1);
        CHECK(r2 < 0);
        free(small);
    }
    free(out);
    for (size_t i = 0; i < made; i++)
        free(copies[i]);
    return 0;
}
