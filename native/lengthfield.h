/* What the two halves of the length-field codec share (lengthfield.c decodes,
 * lengthfield_reply.c builds replies from a request's header). */
#ifndef NODEMESH_LENGTHFIELD_H
#define NODEMESH_LENGTHFIELD_H

#include "internal.h"

/* d->state slots, set by the init hook. */
#define NM_LF_HEADER        0   /* effective fixed header length */
#define NM_LF_STATUS_FIELD  1   /* 1 + index of the integer "status" field, 0: none */

/* n-byte unsigned integer (n <= 8) in either byte order. */
uint64_t nm_lf_read(const uint8_t *p, uint32_t n, int little);
void nm_lf_write(uint8_t *p, uint32_t n, int little, uint64_t v);

int nm_lf_rewrite_id(const nm_decoder *d, uint8_t *buf, size_t len,
                     const nm_frame *f, uint64_t new_id);
int64_t nm_lf_build_error(const nm_decoder *d, const uint8_t *buf, size_t len,
                          const nm_frame *f, const nm_meta *meta, uint32_t reason,
                          const char *msg, size_t msg_len, uint8_t *out, size_t cap);
int64_t nm_lf_heartbeat_reply(const nm_decoder *d, const uint8_t *buf, size_t len,
                              const nm_frame *f, uint8_t *out, size_t cap);
int64_t nm_lf_heartbeat(const nm_decoder *d, uint64_t request_id, uint8_t *out, size_t cap);

#endif
