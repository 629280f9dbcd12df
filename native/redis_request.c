/*
 * Redis requests (client -> server): arrays of bulk strings and inline
 * commands (split as redis-server's sdssplitargs does), with the command
 * and its first key found through a small table of key positions.
 */
#include <pthread.h>

#include "redis.h"

enum { KEY_AT, KEY_NONE, KEY_NUMKEYS, KEY_STREAMS };

typedef struct {
    const char *name;
    uint8_t len;
    uint8_t mode;
    uint8_t arg;    /* KEY_AT: the key; NUMKEYS: numkeys; STREAMS: search start */
} key_rule;

#define R(name, mode, arg) { name, sizeof(name) - 1, mode, arg }

/* Commands whose first key is not argument 1. Everything else: argument 1. */
static const key_rule RULES[] = {
    R("ping", KEY_NONE, 0), R("echo", KEY_NONE, 0), R("info", KEY_NONE, 0),
    R("auth", KEY_NONE, 0), R("hello", KEY_NONE, 0), R("select", KEY_NONE, 0),
    R("client", KEY_NONE, 0), R("config", KEY_NONE, 0), R("script", KEY_NONE, 0),
    R("multi", KEY_NONE, 0), R("exec", KEY_NONE, 0), R("discard", KEY_NONE, 0),
    R("unwatch", KEY_NONE, 0), R("quit", KEY_NONE, 0), R("reset", KEY_NONE, 0),
    R("dbsize", KEY_NONE, 0), R("flushdb", KEY_NONE, 0), R("flushall", KEY_NONE, 0),
    R("time", KEY_NONE, 0), R("lastsave", KEY_NONE, 0), R("save", KEY_NONE, 0),
    R("bgsave", KEY_NONE, 0), R("bgrewriteaof", KEY_NONE, 0),
    R("shutdown", KEY_NONE, 0), R("slaveof", KEY_NONE, 0),
    R("replicaof", KEY_NONE, 0), R("role", KEY_NONE, 0), R("monitor", KEY_NONE, 0),
    R("sync", KEY_NONE, 0), R("psync", KEY_NONE, 0), R("command", KEY_NONE, 0),
    R("debug", KEY_NONE, 0), R("slowlog", KEY_NONE, 0), R("latency", KEY_NONE, 0),
    R("cluster", KEY_NONE, 0), R("readonly", KEY_NONE, 0),
    R("readwrite", KEY_NONE, 0), R("asking", KEY_NONE, 0), R("wait", KEY_NONE, 0),
    R("waitaof", KEY_NONE, 0), R("swapdb", KEY_NONE, 0), R("module", KEY_NONE, 0),
    R("acl", KEY_NONE, 0), R("function", KEY_NONE, 0),
    R("randomkey", KEY_NONE, 0), R("lolwut", KEY_NONE, 0),
    R("failover", KEY_NONE, 0), R("publish", KEY_NONE, 0),
    R("subscribe", KEY_NONE, 0), R("psubscribe", KEY_NONE, 0),
    R("unsubscribe", KEY_NONE, 0), R("punsubscribe", KEY_NONE, 0),
    R("pubsub", KEY_NONE, 0), R("keys", KEY_NONE, 0), R("scan", KEY_NONE, 0),
    R("object", KEY_AT, 2), R("memory", KEY_AT, 2), R("xinfo", KEY_AT, 2),
    R("xgroup", KEY_AT, 2), R("bitop", KEY_AT, 2), R("migrate", KEY_AT, 3),
    R("eval", KEY_NUMKEYS, 2), R("evalsha", KEY_NUMKEYS, 2),
    R("eval_ro", KEY_NUMKEYS, 2), R("evalsha_ro", KEY_NUMKEYS, 2),
    R("fcall", KEY_NUMKEYS, 2), R("fcall_ro", KEY_NUMKEYS, 2),
    R("zunion", KEY_NUMKEYS, 1), R("zinter", KEY_NUMKEYS, 1),
    R("zdiff", KEY_NUMKEYS, 1), R("sintercard", KEY_NUMKEYS, 1),
    R("zintercard", KEY_NUMKEYS, 1), R("lmpop", KEY_NUMKEYS, 1),
    R("zmpop", KEY_NUMKEYS, 1), R("blmpop", KEY_NUMKEYS, 2),
    R("bzmpop", KEY_NUMKEYS, 2),
    R("xread", KEY_STREAMS, 1), R("xreadgroup", KEY_STREAMS, 4),
};

#define NAME_MAX_LEN 16
#define NRULES (sizeof(RULES) / sizeof(RULES[0]))

static int ieq(const uint8_t *s, size_t n, const char *lower)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c >= 'A' && c <= 'Z')
            c |= 0x20;
        if (!lower[i] || c != (uint8_t)lower[i])
            return 0;
    }
    return lower[n] == 0;
}

/* RULES by a hash of (length, first, last letter), built once: a command
 * costs a probe or two instead of a scan of the table. */
#define SLOTS 256
static uint8_t rule_slot[SLOTS];      /* rule index + 1; 0: empty */
static pthread_once_t rules_once = PTHREAD_ONCE_INIT;

static unsigned rule_hash(size_t n, uint8_t first, uint8_t last)
{
    return ((unsigned)n * 53u + (first | 0x20u) * 7u + (last | 0x20u) * 131u) & (SLOTS - 1);
}

static void index_rules(void)
{
    _Static_assert(NRULES < SLOTS / 2 && NRULES < 255, "rule table too large for its index");
    for (size_t j = 0; j < NRULES; j++) {
        const char *name = RULES[j].name;
        unsigned h = rule_hash(RULES[j].len, (uint8_t)name[0], (uint8_t)name[RULES[j].len - 1]);
        while (rule_slot[h])
            h = (h + 1) & (SLOTS - 1);
        rule_slot[h] = (uint8_t)(j + 1);
    }
}

static const key_rule *find_rule(const uint8_t *s, size_t n)
{
    if (n == 0 || n > NAME_MAX_LEN)
        return NULL;
    pthread_once(&rules_once, index_rules);
    for (unsigned h = rule_hash(n, s[0], s[n - 1]); rule_slot[h]; h = (h + 1) & (SLOTS - 1)) {
        const key_rule *r = &RULES[rule_slot[h] - 1];
        if (r->len == n && ieq(s, n, r->name))
            return r;
    }
    return NULL;
}

typedef struct {
    nm_redis_request *r;
    const uint8_t *buf;
    uint8_t mode;
    uint32_t target;
} key_finder;

static void on_arg(key_finder *k, uint32_t i, size_t off, size_t n)
{
    nm_redis_request *r = k->r;
    if (i == 0) {
        r->cmd.off = (uint32_t)off;
        r->cmd.len = (uint32_t)n;
        const key_rule *rule = find_rule(k->buf + off, n);
        k->mode = rule ? rule->mode : KEY_AT;
        k->target = rule ? rule->arg : 1;
        return;
    }
    if (i == 1) {
        r->arg1.off = (uint32_t)off;
        r->arg1.len = (uint32_t)n;
    }
    if (r->has_key || k->mode == KEY_NONE || i < k->target)
        return;
    if (k->mode == KEY_AT) {
        if (i == k->target) {
            r->key.off = (uint32_t)off;
            r->key.len = (uint32_t)n;
            r->has_key = 1;
        }
    } else if (k->mode == KEY_NUMKEYS) {
        int64_t numkeys;
        if (resp_parse_i64(k->buf + off, n, &numkeys) && numkeys > 0) {
            k->mode = KEY_AT;
            k->target = i + 1;
        } else {
            k->mode = KEY_NONE;
        }
    } else if (ieq(k->buf + off, n, "streams")) {
        k->mode = KEY_AT;
        k->target = i + 1;
    }
}

static int multibulk(nm_decoder *d, const uint8_t *buf, size_t len,
                     size_t pos, key_finder *k)
{
    const uint64_t max_frame = NM_LIMIT(d, max_frame_size) > INT32_MAX
        ? INT32_MAX : NM_LIMIT(d, max_frame_size);
    long cr = resp_line_end(buf, pos + 1, len);
    int64_t count, blen;
    if (cr == RESP_LINE_INCOMPLETE) {
        if (len - pos > RESP_MAX_NUMBER_LINE)
            return nm_fail(d, NM_E_PROTOCOL, "length line too long");
        goto incomplete;
    }
    if (cr == RESP_LINE_BAD)
        return nm_fail(d, NM_E_PROTOCOL, "line ends in a bare LF");
    if (!resp_parse_i64(buf + pos + 1, (size_t)cr - pos - 1, &count))
        return nm_fail(d, NM_E_PROTOCOL, "invalid multibulk length");
    size_t p = (size_t)cr + 2;
    if (count <= 0)          /* redis-server ignores it: no reply */
        return (int)(p - pos);
    if ((uint64_t)count > NM_LIMIT(d, max_elements))
        return nm_fail(d, NM_E_TOO_MANY_ELEMENTS, "more arguments than max_elements");
    if (p - pos + 6 * (uint64_t)count > max_frame)   /* each "$0\r\n\r\n" */
        return nm_fail(d, NM_E_FRAME_TOO_LARGE, "request larger than max_frame_size");
    for (uint32_t i = 0; i < (uint64_t)count; i++) {
        if (p >= len)
            goto incomplete;
        if (buf[p] != '$')
            return nm_fail(d, NM_E_PROTOCOL, "expected '$' in a multibulk request");
        cr = resp_line_end(buf, p + 1, len);
        if (cr == RESP_LINE_INCOMPLETE) {
            if (len - p > RESP_MAX_NUMBER_LINE)
                return nm_fail(d, NM_E_PROTOCOL, "length line too long");
            goto incomplete;
        }
        if (cr == RESP_LINE_BAD)
            return nm_fail(d, NM_E_PROTOCOL, "line ends in a bare LF");
        if (!resp_parse_i64(buf + p + 1, (size_t)cr - p - 1, &blen) || blen < 0)
            return nm_fail(d, NM_E_PROTOCOL, "invalid bulk length");
        p = (size_t)cr + 2;
        if ((uint64_t)blen > max_frame || p - pos + (uint64_t)blen + 2 > max_frame)
            return nm_fail(d, NM_E_FRAME_TOO_LARGE, "request larger than max_frame_size");
        size_t end = p + (size_t)blen;
        if (end + 2 > len) {
            d->need = (uint32_t)(end + 2 - pos);
            return 0;
        }
        if (buf[end] != '\r' || buf[end + 1] != '\n')
            return nm_fail(d, NM_E_PROTOCOL, "bulk string not followed by CRLF");
        on_arg(k, i, p, (size_t)blen);
        p = end + 2;
    }
    k->r->argc = (uint32_t)count;
    return (int)(p - pos);
incomplete:
    if (len - pos >= max_frame)
        return nm_fail(d, NM_E_FRAME_TOO_LARGE, "request larger than max_frame_size");
    d->need = (uint32_t)(len - pos + 1);
    return 0;
}

static int is_hex(uint8_t c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

/* C isspace(): what sdssplitargs skips between arguments. */
static int is_blank(uint8_t c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* sdssplitargs over buf[pos..end) (no NUL or CR inside). An argument's span
 * is exact when it is unquoted, or one quoted section without escapes; an
 * argument that needs unescaping gets its raw text (quotes included). */
static int split_inline(nm_decoder *d, const uint8_t *buf, size_t pos,
                        size_t end, key_finder *k)
{
#define AT(i) ((i) < end ? buf[i] : 0)
    size_t q = pos;
    uint32_t argc = 0;
    for (;;) {
        while (q < end && is_blank(buf[q]))
            q++;
        if (q >= end)
            break;
        size_t start = q, tend = 0;
        int inq = 0, insq = 0, quotes = 0, escaped = 0, closed = 0;
        for (;;) {
            uint8_t c = AT(q);
            if (inq || insq) {
                if (q >= end)
                    return nm_fail(d, NM_E_PROTOCOL, "unbalanced quotes in inline request");
                if (inq && c == '\\' && AT(q + 1) == 'x' && is_hex(AT(q + 2)) && is_hex(AT(q + 3))) {
                    escaped = 1;
                    q += 4;
                } else if (inq && c == '\\' && AT(q + 1)) {
                    escaped = 1;
                    q += 2;
                } else if (insq && c == '\\' && AT(q + 1) == '\'') {
                    escaped = 1;
                    q += 2;
                } else if (c == (inq ? '"' : '\'')) {
                    if (AT(q + 1) && !is_blank(AT(q + 1)))
                        return nm_fail(d, NM_E_PROTOCOL, "unbalanced quotes in inline request");
                    tend = ++q;
                    closed = 1;
                    break;
                } else {
                    q++;
                }
            } else if (c == ' ' || c == '\n' || c == '\t' || q >= end) {
                tend = q;
                break;
            } else if (c == '"' || c == '\'') {
                inq = c == '"';
                insq = c == '\'';
                quotes++;
                q++;
            } else {
                q++;
            }
        }
        if (closed && quotes == 1 && !escaped && (buf[start] == '"' || buf[start] == '\''))
            on_arg(k, argc, start + 1, tend - start - 2);
        else
            on_arg(k, argc, start, tend - start);
        argc++;
    }
    k->r->argc = argc;
    return 0;
#undef AT
}

static int inline_command(nm_decoder *d, const uint8_t *buf, size_t len,
                          size_t pos, key_finder *k)
{
    const uint64_t limit = NM_LIMIT(d, max_header_bytes);
    const uint64_t max_frame = NM_LIMIT(d, max_frame_size);
    const uint8_t *nl = memchr(buf + pos, '\n', len - pos);
    if (!nl) {      /* the line without CRLF may have limit bytes */
        if (len - pos - (buf[len - 1] == '\r') > limit)
            return nm_fail(d, NM_E_FRAME_TOO_LARGE, "inline request longer than max_header_bytes");
        if (len - pos >= max_frame)
            return nm_fail(d, NM_E_FRAME_TOO_LARGE, "request larger than max_frame_size");
        d->need = (uint32_t)(len - pos + 1);
        return 0;
    }
    size_t i = (size_t)(nl - buf);
    /* the length first, counted as a prefix without the LF would count it,
     * so that every split of the input fails the same way */
    if (i > pos && i - pos - (buf[i - 1] == '\r') > limit)
        return nm_fail(d, NM_E_FRAME_TOO_LARGE, "inline request longer than max_header_bytes");
    if (i == pos || buf[i - 1] != '\r')
        return nm_fail(d, NM_E_PROTOCOL, "line ends in a bare LF");
    if (memchr(buf + pos, '\r', i - 1 - pos) || memchr(buf + pos, 0, i - 1 - pos))
        return nm_fail(d, NM_E_PROTOCOL, "CR or NUL inside an inline request");
    int rc = split_inline(d, buf, pos, i - 1, k);
    return rc < 0 ? rc : (int)(i + 1 - pos);
}

int nm_redis_request_parse(nm_decoder *d, const uint8_t *buf, size_t len,
                           size_t pos, nm_redis_request *r)
{
    key_finder k = { r, buf, KEY_NONE, 0 };
    uint64_t max_frame = NM_LIMIT(d, max_frame_size) > INT32_MAX
        ? INT32_MAX : NM_LIMIT(d, max_frame_size);
    memset(r, 0, sizeof(*r));
    if (len - pos > max_frame)   /* see nm_redis_reply_frame */
        len = pos + (size_t)max_frame;
    if (buf[pos] == '*')
        return multibulk(d, buf, len, pos, &k);
    return inline_command(d, buf, len, pos, &k);
}
