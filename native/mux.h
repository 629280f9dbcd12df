/*
 * Request-id rewrite for a run of multiplexed frames (Dubbo, Thrift,
 * length-field with an id), in one pass into one output buffer.
 *
 * A proxy that shares an upstream connection between clients writes a
 * connection-unique id into every request and the client's own id back
 * into every reply. Done per frame in Python that is a copy, an int
 * encode and a slice assignment each; here a whole run (a client's batch,
 * the replies of one upstream read for one client) is one call.
 *
 * Sans-I/O and allocation-free: the caller owns every buffer.
 */
#ifndef NODEMESH_MUX_H
#define NODEMESH_MUX_H

#include <stddef.h>
#include <stdint.h>

/* How an id field is written. */
enum { NM_ID_BE = 0, NM_ID_LE = 1, NM_ID_VARINT = 2 };

/* One frame of a run: its bytes and its id field (from the frame start). */
typedef struct {
    const uint8_t *data;
    uint32_t length;
    uint32_t id_offset;
    uint32_t id_length;
} nm_mux_span;

/* Errors (negative returns). */
#define NM_MUX_E_BUFFER  (-1)   /* out_cap smaller than the frames together */
#define NM_MUX_E_FIELD   (-2)   /* an id field outside its frame, or 0 or > 8 bytes */
#define NM_MUX_E_VALUE   (-3)   /* a varint id whose encoding is not the field's width */
#define NM_MUX_E_ARGUMENT (-4)  /* unknown encoding, NULL with n > 0 */

/* Write id into the field at p of `width` bytes. Fixed-width encodings keep
 * the low `width` bytes (the field's own range); a varint must encode in
 * exactly `width` bytes (the frame keeps its length). Returns 0 or an error. */
int nm_mux_put_id(uint8_t *p, uint32_t width, int encoding, uint64_t id);

/* Copy spans[0..n) back to back into out, frame i with ids[i] in its id
 * field. Returns the bytes written or a negative NM_MUX_E_*; on error out
 * may hold a partial copy. */
int64_t nm_mux_rewrite(const nm_mux_span *spans, size_t n, const uint64_t *ids,
                       int encoding, uint8_t *out, size_t out_cap);

/* As nm_mux_rewrite, with frame i's id written in encodings[i] (a batch
 * may mix Thrift binary and compact frames, or varint widths). */
int64_t nm_mux_rewrite_each(const nm_mux_span *spans, size_t n, const uint64_t *ids,
                            const uint8_t *encodings, uint8_t *out, size_t out_cap);

#endif
