/* Request-id rewrite for runs of multiplexed frames (see mux.h). */
#include "mux.h"

#include <string.h>

int nm_mux_put_id(uint8_t *p, uint32_t width, int encoding, uint64_t id)
{
    if (width == 0 || width > 8)
        return NM_MUX_E_FIELD;
    switch (encoding) {
    case NM_ID_BE:
        if (width == 8 || width == 4) {     /* Dubbo, Thrift: one store once compiled */
            uint8_t b[8] = {(uint8_t)(id >> 56), (uint8_t)(id >> 48), (uint8_t)(id >> 40),
                            (uint8_t)(id >> 32), (uint8_t)(id >> 24), (uint8_t)(id >> 16),
                            (uint8_t)(id >> 8), (uint8_t)id};
            memcpy(p, b + 8 - width, width);
            return 0;
        }
        for (uint32_t i = 0; i < width; i++)
            p[i] = (uint8_t)(id >> (8 * (width - 1 - i)));
        return 0;
    case NM_ID_LE:
        for (uint32_t i = 0; i < width; i++)
            p[i] = (uint8_t)(id >> (8 * i));
        return 0;
    case NM_ID_VARINT: {
        /* Thrift compact seqid: a 32-bit value, zigzag already applied by the
         * caller's choice of ids (positive, as agent.proxy.protocols.id_range). */
        uint64_t v = id & 0xFFFFFFFFu;
        uint8_t tmp[10];
        uint32_t n = 0;
        do {
            uint8_t b = v & 0x7F;
            v >>= 7;
            tmp[n++] = v ? (uint8_t)(b | 0x80) : b;
        } while (v && n < sizeof tmp);
        if (n != width)
            return NM_MUX_E_VALUE;
        memcpy(p, tmp, n);
        return 0;
    }
    default:
        return NM_MUX_E_ARGUMENT;
    }
}

static int64_t rewrite_run(const nm_mux_span *spans, size_t n, const uint64_t *ids,
                           int encoding, const uint8_t *encodings, uint8_t *out,
                           size_t out_cap)
{
    if (n && (!spans || !ids || !out))
        return NM_MUX_E_ARGUMENT;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        const nm_mux_span *s = &spans[i];
        int enc = encodings ? encodings[i] : encoding;
        if (enc < NM_ID_BE || enc > NM_ID_VARINT)
            return NM_MUX_E_ARGUMENT;
        if (s->length > out_cap - at)
            return NM_MUX_E_BUFFER;
        if (s->id_length == 0 || s->id_length > 8 || s->id_offset > s->length ||
            s->id_length > s->length - s->id_offset)
            return NM_MUX_E_FIELD;
        memcpy(out + at, s->data, s->length);
        int rc = nm_mux_put_id(out + at + s->id_offset, s->id_length, enc, ids[i]);
        if (rc)
            return rc;
        at += s->length;
    }
    return (int64_t)at;
}

int64_t nm_mux_rewrite(const nm_mux_span *spans, size_t n, const uint64_t *ids,
                       int encoding, uint8_t *out, size_t out_cap)
{
    if (encoding < NM_ID_BE || encoding > NM_ID_VARINT)
        return NM_MUX_E_ARGUMENT;
    return rewrite_run(spans, n, ids, encoding, NULL, out, out_cap);
}

int64_t nm_mux_rewrite_each(const nm_mux_span *spans, size_t n, const uint64_t *ids,
                            const uint8_t *encodings, uint8_t *out, size_t out_cap)
{
    if (n && !encodings)
        return NM_MUX_E_ARGUMENT;
    return rewrite_run(spans, n, ids, NM_ID_BE, encodings, out, out_cap);
}
