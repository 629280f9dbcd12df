/*
 * nodemesh codecs: one sans-I/O interface for every protocol.
 *
 * Bytes in, frames out. The caller owns every buffer: the decoder state, the
 * input, the frame and metadata arrays. Nothing here allocates, reads a
 * socket or keeps a pointer to the input between calls.
 *
 * Decoding is resumable: nm_decode() reports how many bytes it consumed (the
 * end of the last complete frame); the caller keeps the rest and calls again
 * with it and whatever arrived since. An incomplete frame consumes nothing.
 *
 * Metadata values (and custom keys) are spans into the input buffer: they are
 * valid only as long as the caller keeps those bytes where they were.
 *
 * Everything between the cdef markers is also the cffi cdef (agent/codec), so
 * it keeps to what cffi can parse: integer #defines, enums, structs and
 * prototypes.
 */
#ifndef NODEMESH_CODEC_H
#define NODEMESH_CODEC_H

#include <stddef.h>
#include <stdint.h>

/* cdef-begin */

/* Safe defaults for the limits in nm_limits (0 in a field means "default"). */
#define NM_DEFAULT_MAX_FRAME_SIZE    8388608   /* 8 MiB per frame               */
#define NM_DEFAULT_MAX_HEADERS       128       /* HTTP headers, Dubbo attachments */
#define NM_DEFAULT_MAX_DEPTH         32        /* nesting: RESP, Thrift, hessian2 */
#define NM_DEFAULT_MAX_ELEMENTS      1048576   /* elements in one aggregate      */
#define NM_DEFAULT_MAX_PIPELINED     1024      /* frames reported by one call    */
#define NM_DEFAULT_MAX_HEADER_BYTES  65536     /* HTTP start line + headers      */

typedef enum {
    NM_PROTO_DUBBO = 1,
    NM_PROTO_THRIFT = 2,
    NM_PROTO_REDIS = 3,
    NM_PROTO_HTTP1 = 4,
    NM_PROTO_LENGTHFIELD = 5
} nm_protocol;

/* What a frame is. Codes are stable: Python and the proxy key on them. */
typedef enum {
    NM_KIND_REQUEST = 1,    /* expects a response                      */
    NM_KIND_RESPONSE = 2,
    NM_KIND_ONEWAY = 3,     /* request without a response              */
    NM_KIND_HEARTBEAT = 4,  /* keep-alive probe or its reply           */
    NM_KIND_EVENT = 5,      /* protocol event (Dubbo readonly, push)   */
    NM_KIND_ERROR = 6       /* an error reply (Redis -ERR, exception)  */
} nm_kind;

/* Which side of the connection a decoder reads. Protocols whose frames say
 * it themselves (Dubbo, Thrift) ignore it. */
typedef enum {
    NM_DIR_REQUEST = 0,     /* bytes written by the client             */
    NM_DIR_RESPONSE = 1     /* bytes written by the server             */
} nm_direction;

/* Return codes: >= 0 is a count, these are the errors. Errors are sticky:
 * once nm_decode() fails, it fails the same way until nm_decoder_init(). */
typedef enum {
    NM_OK = 0,
    NM_E_PROTOCOL = -1,      /* bytes that the protocol does not allow   */
    NM_E_FRAME_TOO_LARGE = -2,
    NM_E_TOO_MANY_HEADERS = -3,
    NM_E_TOO_DEEP = -4,
    NM_E_TOO_MANY_ELEMENTS = -5,
    NM_E_UNSUPPORTED = -6,   /* valid but not handled (unknown version)  */
    NM_E_SMUGGLING = -7,     /* HTTP: ambiguous message length           */
    NM_E_BUFFER = -8,        /* output buffer too small                  */
    NM_E_ARGUMENT = -9,      /* caller error (bad option, bad frame)     */
    NM_E_REWRITE = -10       /* request id cannot be rewritten in place  */
} nm_status;

/* Well-known metadata keys. NM_KEY_CUSTOM means the key is a span too. */
typedef enum {
    NM_KEY_CUSTOM = 0,
    NM_KEY_INTERFACE = 1,   /* Dubbo service path; lengthfield service    */
    NM_KEY_METHOD = 2,      /* Dubbo/Thrift method; HTTP :method          */
    NM_KEY_VERSION = 3,     /* Dubbo service version                      */
    NM_KEY_DUBBO_VERSION = 4,
    NM_KEY_COMMAND = 5,     /* Redis command, lower case in the reply     */
    NM_KEY_KEY = 6,         /* Redis key (first key argument)             */
    NM_KEY_PATH = 7,        /* HTTP :path                                 */
    NM_KEY_AUTHORITY = 8,   /* HTTP :authority (Host)                     */
    NM_KEY_STATUS = 9,      /* HTTP :status                               */
    NM_KEY_SERIALIZATION = 10, /* Dubbo serialization id name             */
    NM_KEY_PARAM_TYPES = 11,   /* Dubbo parameter type descriptor         */
    NM_KEY_MESSAGE = 12     /* error text (Redis -ERR, exception message) */
} nm_key;

typedef struct {
    uint32_t off;           /* from the start of the input buffer */
    uint32_t len;
} nm_span;

typedef struct {
    uint32_t key_id;        /* nm_key */
    uint32_t flags;         /* NM_META_* */
    nm_span key;            /* set when key_id == NM_KEY_CUSTOM */
    nm_span value;
} nm_meta;

/* nm_meta.flags */
#define NM_META_LOWERCASE_KEY  1  /* compare/print the key in lower case (HTTP) */
#define NM_META_LOWERCASE_VALUE 2 /* the value is to be lower-cased (Redis command) */

/* nm_frame.flags */
#define NM_FRAME_KEEPALIVE     1  /* HTTP: the connection stays open after it */
#define NM_FRAME_BODY_OPAQUE   2  /* body not parsed (other serialization)    */
#define NM_FRAME_UPGRADE       4  /* HTTP: Upgrade / CONNECT, switch to L4     */
#define NM_FRAME_CHUNKED       8  /* HTTP: chunked body                       */

typedef struct {
    uint64_t offset;        /* from the start of the input buffer */
    uint32_t length;        /* whole frame, header and body */
    uint32_t kind;          /* nm_kind */
    uint64_t request_id;    /* Dubbo id, Thrift seqid, lengthfield id; 0 if none */
    int32_t status;         /* Dubbo status, HTTP status, Thrift message type */
    uint32_t flags;         /* NM_FRAME_* */
    uint32_t meta_start;    /* index of its first entry in the meta array */
    uint32_t meta_count;
    uint32_t body_offset;   /* from offset: where the payload starts */
    uint32_t id_offset;     /* from offset: request id field, for rewrite */
    uint32_t id_length;     /* bytes of the request id field (0: none) */
    uint32_t variant;       /* protocol detail: Thrift proto/transport, RESP type... */
} nm_frame;

/* Thrift variants (options and nm_frame.variant bits). */
#define NM_THRIFT_AUTO          0
#define NM_THRIFT_BINARY        1
#define NM_THRIFT_COMPACT       2
#define NM_THRIFT_FRAMED        16
#define NM_THRIFT_UNFRAMED      32
#define NM_THRIFT_STRICT        64   /* binary: versioned header (strict write) */

/* HTTP/1.1 leniencies: each one is an opt-in with a risk (see docs/codecs.md). */
#define NM_HTTP_LENIENT_OBS_FOLD        1  /* accept folded header lines       */
#define NM_HTTP_LENIENT_TE_CL           2  /* TE+CL: drop CL, trust chunked    */
#define NM_HTTP_LENIENT_LF_ONLY         4  /* bare LF line ends                */
#define NM_HTTP_LENIENT_CHUNK_EXT       8  /* malformed chunk extensions       */
#define NM_HTTP_LENIENT_HEADER_SPACE   16  /* whitespace before the colon      */

typedef struct {
    uint32_t max_frame_size;
    uint32_t max_headers;
    uint32_t max_depth;
    uint32_t max_elements;
    uint32_t max_pipelined;
    uint32_t max_header_bytes;
} nm_limits;

#define NM_LF_MAX_FIELDS 8

/* One metadata field of the length-field codec. */
typedef struct {
    uint32_t offset;        /* from the frame start */
    uint32_t length;        /* bytes; for a string, 0 means "up to NUL or header end" */
    uint32_t is_integer;    /* 1: big/little-endian integer printed in decimal */
    uint32_t key_id;        /* nm_key, or NM_KEY_CUSTOM with the name below */
    char name[32];          /* custom key name (NUL-terminated) */
} nm_lf_field;

/* The configurable length-field codec (Netty LengthFieldBasedFrameDecoder terms). */
typedef struct {
    uint32_t length_offset;       /* where the length field starts */
    uint32_t length_size;         /* 1, 2, 3, 4 or 8 bytes */
    uint32_t little_endian;       /* 0: big endian (network order) */
    int32_t length_adjustment;    /* added to the length field's value */
    uint32_t length_includes_header; /* 1: the value counts from frame start */
    uint32_t header_length;       /* fixed header bytes (metadata lives here) */
    uint32_t magic;               /* expected leading bytes, big endian */
    uint32_t magic_size;          /* 0: no magic check */
    uint32_t id_offset;           /* request id field */
    uint32_t id_size;             /* 0: no request id (in-order responses) */
    uint32_t kind_offset;         /* a byte whose bits say request/response */
    uint32_t kind_present;
    uint32_t kind_response_mask;  /* (byte & mask) != 0: response */
    uint32_t kind_oneway_mask;
    uint32_t kind_heartbeat_mask;
    uint32_t nfields;
    nm_lf_field fields[8];
    uint32_t kv_offset;           /* key/value section: "k=v" pairs, 0 = none */
    uint32_t kv_length_size;      /* size of the section's length prefix */
    uint8_t kv_pair_sep;          /* e.g. '&' or '\n' */
    uint8_t kv_sep;               /* e.g. '=' */
    uint8_t _pad[2];
} nm_lengthfield_config;

typedef struct {
    uint32_t direction;     /* nm_direction */
    uint32_t thrift;        /* NM_THRIFT_* bits; 0: detect */
    uint32_t http_lenient;  /* NM_HTTP_LENIENT_* bits */
    uint32_t redis_resp3;   /* accept RESP3 reply types (default 1) */
    nm_limits limits;
    nm_lengthfield_config lengthfield;
} nm_options;

/* Decoder state. Opaque in use, public in size so the caller can own it;
 * nm_decoder_size() is checked against sizeof at build time. */
typedef struct {
    uint32_t protocol;      /* nm_protocol */
    int32_t error;          /* sticky nm_status, 0 while healthy */
    uint32_t error_offset;  /* where in the last input it was found */
    uint32_t need;          /* bytes needed before another try is useful */
    nm_options opt;
    const char *error_reason; /* static string, never freed */
    uint64_t state[8];      /* per-protocol scratch (detected variant...) */
} nm_decoder;

/* Set up (or reset) a decoder. Returns NM_OK or NM_E_ARGUMENT. */
int nm_decoder_init(nm_decoder *d, uint32_t protocol, const nm_options *opt);

/*
 * Decode complete frames from buf[0..len). Writes up to max_frames frames and
 * up to max_meta metadata entries (each frame's entries are contiguous).
 * *consumed receives the bytes up to the end of the last frame written.
 * Returns the number of frames written (>= 0), or a negative nm_status.
 * Stops early, without error, when either array is full: call again with
 * the rest.
 */
int nm_decode(nm_decoder *d, const uint8_t *buf, size_t len,
              nm_frame *frames, uint32_t max_frames,
              nm_meta *meta, uint32_t max_meta, size_t *consumed);

/* Overwrite the request id of a frame in place (buf holds the frame at
 * f->offset). NM_E_REWRITE if the protocol has no id or the new id does not
 * fit the field (Thrift compact varints keep their width). */
int nm_rewrite_request_id(const nm_decoder *d, uint8_t *buf, size_t len,
                          const nm_frame *f, uint64_t new_id);

/* Generic reasons for a locally generated error reply. */
typedef enum {
    NM_REPLY_NO_ROUTE = 1,
    NM_REPLY_NO_UPSTREAM = 2,   /* no healthy upstream */
    NM_REPLY_OVERLOADED = 3,
    NM_REPLY_RATE_LIMITED = 4,
    NM_REPLY_TIMEOUT = 5,
    NM_REPLY_BAD_REQUEST = 6,
    NM_REPLY_INTERNAL = 7
} nm_reply_reason;

/*
 * Build the protocol's own error reply to the request frame f (read from buf)
 * into out[0..cap): Dubbo response with an error status, Thrift
 * TApplicationException, Redis -ERR, HTTP status line. Returns the bytes
 * written or a negative nm_status (NM_E_BUFFER if cap is too small).
 */
int64_t nm_build_error(const nm_decoder *d, const uint8_t *buf, size_t len,
                       const nm_frame *f, const nm_meta *meta,
                       uint32_t reason, const char *message, size_t message_len,
                       uint8_t *out, size_t cap);

/* Build the reply to a heartbeat frame (Dubbo event response, Redis +PONG
 * to PING...). Returns bytes written, or NM_E_UNSUPPORTED if the protocol
 * has no heartbeat. */
int64_t nm_build_heartbeat_reply(const nm_decoder *d, const uint8_t *buf,
                                 size_t len, const nm_frame *f,
                                 uint8_t *out, size_t cap);

/* Build a heartbeat request (for active health checks). */
int64_t nm_build_heartbeat(const nm_decoder *d, uint64_t request_id,
                           uint8_t *out, size_t cap);

/* Short human reason for an nm_status. */
const char *nm_strerror(int status);

size_t nm_decoder_size(void);

/* HTTP/1.1 additions (native/http1.c, docs/codecs/http1.md). */
#define NM_FRAME_UNTIL_CLOSE  16  /* HTTP: body runs to close; frame = head only */

/* What the response decoder expects next (the request it answers). */
#define NM_HTTP1_EXPECT_NORMAL   0
#define NM_HTTP1_EXPECT_HEAD     1  /* response to HEAD: no body          */
#define NM_HTTP1_EXPECT_CONNECT  2  /* response to CONNECT: 2xx = tunnel  */

/* Queue the kind of the next request whose response a response decoder will
 * read (FIFO, up to 32 pending; none queued = NORMAL). NM_OK, NM_E_BUFFER
 * when full, NM_E_ARGUMENT for a non-HTTP or request decoder. */
int nm_http1_expect(nm_decoder *d, uint32_t what);

/* Length-field codec additions (appended; existing values unchanged). */
/* nm_meta.flags: the value span holds the raw bytes of an integer field, to be
 * printed in decimal (big- or little-endian). */
#define NM_META_INTEGER_BE     4
#define NM_META_INTEGER_LE     8
/* nm_meta.key_id of a length-field metadata field with a custom name: the
 * field's index in nm_lengthfield_config.fields plus this base; its name is
 * fields[i].name in the decoder's options. */
#define NM_KEY_LF_FIELD0       64

/* cdef-end */

#endif
