/*
 * Thrift protocols (binary and compact): the message header and a bounded,
 * non-recursive skip of the argument/result struct. Transports (framed or
 * not) are thrift.c's business; here a message is a window of bytes.
 *
 * Every element consumes at least one byte, so the work is bounded by the
 * message size; the depth is bounded by an explicit stack.
 */
#include "thrift.h"

enum { LV_STRUCT, LV_LIST, LV_MAP };

typedef struct {
    uint8_t kind;
    uint8_t t_even;      /* element type (list), key type (map) */
    uint8_t t_odd;       /* element type (list), value type (map) */
    uint64_t left;       /* elements left; maps count keys and values */
} th_level;

/* A container at stack height sp would be level sp + 1. Every container
 * counts, also those never pushed (empty, or fixed-size elements). */
static int th_depth(th_cursor *c, int sp)
{
    if ((uint32_t)sp >= c->max_depth) {
        c->reason = "thrift nesting deeper than max_depth";
        return NM_E_TOO_DEEP;
    }
    return 1;
}

static int th_push(th_cursor *c, th_level *st, int *sp, uint8_t kind,
                   uint8_t t_even, uint8_t t_odd, uint64_t left)
{
    int rc = th_depth(c, *sp);
    if (rc <= 0)
        return rc;
    st[*sp].kind = kind;
    st[*sp].t_even = t_even;
    st[*sp].t_odd = t_odd;
    st[*sp].left = left;
    (*sp)++;
    return 1;
}

static int th_count(th_cursor *c, uint64_t n)
{
    if (n > c->max_elements) {
        c->reason = "thrift collection larger than max_elements";
        return NM_E_TOO_MANY_ELEMENTS;
    }
    return 1;
}

/* Unsigned LEB128 of at most maxbytes bytes whose value fits in `bits`. */
static int th_varint(th_cursor *c, size_t *pp, unsigned maxbytes,
                     unsigned bits, uint64_t *out)
{
    size_t p = *pp;
    uint64_t v = 0;
    for (unsigned i = 0; i < maxbytes; i++) {
        TH_NEED(c, p, 1);
        uint8_t b = c->buf[p++];
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            if ((bits < 64 && (v >> bits) != 0) || (i == 9 && b > 1))
                break;
            *pp = p;
            *out = v;
            return 1;
        }
    }
    c->reason = "malformed compact varint";
    return NM_E_PROTOCOL;
}

/* ---- message header ---------------------------------------------------- */

static int th_header_binary(th_cursor *c, size_t p, th_header *h)
{
    TH_NEED(c, p, 4);
    uint32_t w = nm_be32(c->buf + p);
    if (w & 0x80000000u) {
        if ((w & 0xffff0000u) != 0x80010000u) {
            c->reason = "bad thrift binary version";
            return NM_E_PROTOCOL;
        }
        if (w & 0xff00u) {
            c->reason = "reserved thrift header bits set";
            return NM_E_PROTOCOL;
        }
        h->type = w & 0xff;
        h->strict = 1;
        p += 4;
        TH_NEED(c, p, 4);
        uint32_t n = nm_be32(c->buf + p);
        if (n & 0x80000000u) {
            c->reason = "negative thrift method name length";
            return NM_E_PROTOCOL;
        }
        p += 4;
        TH_NEED(c, p, (uint64_t)n + 4);
        h->name_off = (uint32_t)p;
        h->name_len = n;
        p += n;
    } else {
        if (w == 0) {
            c->reason = "empty thrift method name";
            return NM_E_PROTOCOL;
        }
        p += 4;
        TH_NEED(c, p, (uint64_t)w + 5);
        h->name_off = (uint32_t)p;
        h->name_len = w;
        p += w;
        h->type = c->buf[p++];
        h->strict = 0;
    }
    h->id_off = (uint32_t)p;
    h->id_len = 4;
    h->seqid = nm_be32(c->buf + p);
    h->body = p + 4;
    return 1;
}

static int th_header_compact(th_cursor *c, size_t p, th_header *h)
{
    uint64_t seqid, n;
    int rc;
    TH_NEED(c, p, 2);
    if (c->buf[p] != 0x82) {
        c->reason = "bad thrift compact protocol id";
        return NM_E_PROTOCOL;
    }
    if ((c->buf[p + 1] & 0x1f) != 1) {
        c->reason = "bad thrift compact version";
        return NM_E_PROTOCOL;
    }
    h->type = c->buf[p + 1] >> 5;
    h->strict = 0;
    p += 2;
    h->id_off = (uint32_t)p;
    if ((rc = th_varint(c, &p, 5, 32, &seqid)) <= 0)
        return rc;
    h->id_len = (uint32_t)(p - h->id_off);
    h->seqid = (uint32_t)seqid;
    if ((rc = th_varint(c, &p, 5, 31, &n)) <= 0)
        return rc;
    TH_NEED(c, p, n);
    h->name_off = (uint32_t)p;
    h->name_len = (uint32_t)n;
    h->body = p + n;
    return 1;
}

int th_read_header(th_cursor *c, size_t p, uint32_t proto, th_header *h)
{
    int rc = proto == NM_THRIFT_COMPACT ? th_header_compact(c, p, h)
                                        : th_header_binary(c, p, h);
    if (rc > 0 && (h->type < TH_CALL || h->type > TH_ONEWAY)) {
        c->reason = "bad thrift message type";
        return NM_E_PROTOCOL;
    }
    return rc;
}

/* ---- binary protocol --------------------------------------------------- */

/* TType: fixed wire size, 0 for variable, -1 for not a value type. */
static int bin_size(uint8_t t)
{
    switch (t) {
    case 2: case 3: return 1;              /* bool, byte */
    case 6: return 2;                      /* i16 */
    case 8: return 4;                      /* i32 */
    case 4: case 10: return 8;             /* double, i64 */
    case 16: return 16;                    /* uuid */
    case 11: case 12: case 13: case 14: case 15: return 0;
    default: return -1;
    }
}

/* A string at p: its length word and bytes. */
static inline int bin_string(th_cursor *c, size_t *pp, int capture)
{
    size_t p = *pp;
    TH_NEED(c, p, 4);
    uint32_t n = nm_be32(c->buf + p);
    if (n & 0x80000000u) {
        c->reason = "negative thrift string length";
        return NM_E_PROTOCOL;
    }
    p += 4;
    TH_NEED(c, p, n);
    if (capture) {
        c->msg_off = (uint32_t)p;
        c->msg_len = n;
        c->has_msg = 1;
    }
    *pp = p + n;
    return 1;
}

/*
 * The level being read lives in locals (kind, left, element types); the
 * stack holds only the levels it is nested in. Strings and fixed-size values
 * are skipped where they are met; only structs and collections of variable
 * elements open a level.
 */
int th_skip_binary(th_cursor *c, size_t *pos)
{
    th_level st[TH_STACK_MAX];
    const uint8_t *b = c->buf;
    size_t p = *pos;
    int sp = 1, rc;                 /* levels open, the current one included */
    uint8_t kind = LV_STRUCT, te = 0, to = 0;
    uint64_t left = 0;
    if ((rc = th_depth(c, 0)) <= 0)
        return rc;
    for (;;) {
        uint8_t t;
        int capture = 0;
        if (kind == LV_STRUCT) {
            TH_NEED(c, p, 1);
            t = b[p];
            if (t == 0) {
                p++;
                goto pop;
            }
            TH_NEED(c, p, 3);
            capture = c->want_message && sp == 1 && t == 11 && nm_be16(b + p + 1) == 1;
            p += 3;
        } else if (te == 11 && to == 11) {  /* list<string>, map<string,string> */
            for (; left; left--)
                if ((rc = bin_string(c, &p, 0)) <= 0)
                    return rc;
            goto pop;
        } else {
            if (left == 0)
                goto pop;
            t = (left & 1) ? to : te;
            left--;
        }
        /* A branch per size, not p += table[t]: the predicted branch lets
         * the CPU run ahead to the next field instead of waiting for the
         * type byte's load. */
        switch (t) {
        case 2: case 3:                             /* bool, byte */
            TH_NEED(c, p, 1);
            p += 1;
            continue;
        case 6:                                     /* i16 */
            TH_NEED(c, p, 2);
            p += 2;
            continue;
        case 8:                                     /* i32 */
            TH_NEED(c, p, 4);
            p += 4;
            continue;
        case 4: case 10:                            /* double, i64 */
            TH_NEED(c, p, 8);
            p += 8;
            continue;
        case 16:                                    /* uuid */
            TH_NEED(c, p, 16);
            p += 16;
            continue;
        case 11:                                    /* binary / string */
            if ((rc = bin_string(c, &p, capture)) <= 0)
                return rc;
            continue;
        case 12: case 13: case 14: case 15:
            break;
        default:
            c->reason = "unknown thrift field type";
            return NM_E_PROTOCOL;
        }
        if ((rc = th_depth(c, sp)) <= 0)
            return rc;
        if (t == 12) {                              /* struct: a new level */
            st[sp - 1] = (th_level){ kind, te, to, left };
            sp++;
            kind = LV_STRUCT;
            continue;
        }
        int map = t == 13;                          /* map, set, list */
        size_t hl = map ? 6 : 5;
        TH_NEED(c, p, hl);
        uint8_t kt = b[p], vt = map ? b[p + 1] : b[p];
        uint32_t n = nm_be32(b + p + hl - 4);
        p += hl;
        int ks = bin_size(kt), vs = bin_size(vt);
        if (ks < 0 || vs < 0) {
            c->reason = "unknown thrift element type";
            return NM_E_PROTOCOL;
        }
        if (n & 0x80000000u) {
            c->reason = "negative thrift collection size";
            return NM_E_PROTOCOL;
        }
        if ((rc = th_count(c, n)) <= 0)
            return rc;
        if (ks > 0 && vs > 0) {                     /* fixed-size elements */
            uint64_t bytes = (uint64_t)n * (uint64_t)(map ? ks + vs : ks);
            TH_NEED(c, p, bytes);
            p += (size_t)bytes;
        } else if (n) {
            st[sp - 1] = (th_level){ kind, te, to, left };
            sp++;
            kind = map ? LV_MAP : LV_LIST;
            te = kt;
            to = vt;
            left = map ? 2 * (uint64_t)n : n;
        }
        continue;
pop:
        if (--sp == 0)
            break;
        kind = st[sp - 1].kind;
        te = st[sp - 1].t_even;
        to = st[sp - 1].t_odd;
        left = st[sp - 1].left;
    }
    *pos = p;
    return 1;
}

/* ---- compact protocol -------------------------------------------------- */

/* Compact type: fixed wire size in a collection, 0 variable, -1 invalid. */
static int cpt_size(uint8_t t)
{
    switch (t) {
    case 1: case 2: case 3: return 1;     /* bool true/false, byte */
    case 7: return 8;                     /* double */
    case 13: return 16;                   /* uuid */
    case 4: case 5: case 6: case 8: case 9: case 10: case 11: case 12:
        return 0;
    default: return -1;
    }
}

int th_skip_compact(th_cursor *c, size_t *pos)
{
    th_level st[TH_STACK_MAX];
    const uint8_t *b = c->buf;
    size_t p = *pos;
    uint64_t v;
    int sp = 0, rc;
    if ((rc = th_push(c, st, &sp, LV_STRUCT, 0, 0, 0)) <= 0)
        return rc;
    while (sp > 0) {
        th_level *lv = &st[sp - 1];
        uint8_t t;
        int capture = 0;
        if (lv->kind == LV_STRUCT) {
            TH_NEED(c, p, 1);
            uint8_t h = b[p++];
            if (h == 0) {
                sp--;
                continue;
            }
            t = h & 0x0f;
            /* field id: a delta from the last one, or a zigzag i16 */
            int64_t id = (int64_t)lv->left + (h >> 4);
            if (h >> 4 == 0) {
                if ((rc = th_varint(c, &p, 3, 16, &v)) <= 0)
                    return rc;
                id = (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
            }
            lv->left = (uint64_t)id;              /* structs keep the last id */
            capture = c->want_message && sp == 1 && t == 8 && id == 1;
            if (t == 1 || t == 2)                 /* bool lives in the type */
                continue;
        } else {
            if (lv->left == 0) {
                sp--;
                continue;
            }
            t = (lv->left & 1) ? lv->t_odd : lv->t_even;
            lv->left--;
        }
        int fixed = cpt_size(t);
        if (fixed > 0) {
            TH_NEED(c, p, fixed);
            p += (size_t)fixed;
            continue;
        }
        switch (t) {
        case 4:                                   /* i16 */
            rc = th_varint(c, &p, 3, 16, &v);
            break;
        case 5:                                   /* i32 */
            rc = th_varint(c, &p, 5, 32, &v);
            break;
        case 6:                                   /* i64 */
            rc = th_varint(c, &p, 10, 64, &v);
            break;
        case 8:                                   /* binary / string */
            if ((rc = th_varint(c, &p, 5, 31, &v)) <= 0)
                return rc;
            TH_NEED(c, p, v);
            if (capture) {
                c->msg_off = (uint32_t)p;
                c->msg_len = (uint32_t)v;
                c->has_msg = 1;
            }
            p += (size_t)v;
            break;
        case 12:                                  /* struct */
            rc = th_push(c, st, &sp, LV_STRUCT, 0, 0, 0);
            break;
        case 9: case 10: case 11: {               /* list, set, map */
            uint8_t kt, vt;
            uint64_t n;
            if ((rc = th_depth(c, sp)) <= 0)
                return rc;
            TH_NEED(c, p, 1);
            if (t == 11) {
                if ((rc = th_varint(c, &p, 5, 31, &n)) <= 0)
                    return rc;
                kt = vt = 1;                      /* empty: no type byte */
                if (n) {
                    TH_NEED(c, p, 1);
                    kt = b[p] >> 4;
                    vt = b[p] & 0x0f;
                    p++;
                }
            } else {
                kt = vt = b[p] & 0x0f;
                n = b[p++] >> 4;
                if (n == 15 && (rc = th_varint(c, &p, 5, 31, &n)) <= 0)
                    return rc;
            }
            int ks = cpt_size(kt), vs = cpt_size(vt);
            if (ks < 0 || vs < 0) {
                c->reason = "unknown thrift element type";
                return NM_E_PROTOCOL;
            }
            if ((rc = th_count(c, n)) <= 0)
                return rc;
            if (ks > 0 && vs > 0) {
                uint64_t bytes = n * (uint64_t)(t == 11 ? ks + vs : ks);
                TH_NEED(c, p, bytes);
                p += (size_t)bytes;
                rc = 1;
            } else {
                rc = n ? th_push(c, st, &sp, t == 11 ? LV_MAP : LV_LIST, kt,
                                 vt, t == 11 ? 2 * n : n)
                       : 1;
            }
            break;
        }
        default:
            c->reason = "unknown thrift field type";
            return NM_E_PROTOCOL;
        }
        if (rc <= 0)
            return rc;
    }
    *pos = p;
    return 1;
}
