/*
 * nodemesh proxy benchmarks: the C backends and load generator that
 * bench/proxy_*.py compile at run time (cc -O2). A Python server or client
 * costs more per request than the proxy under test and would measure itself.
 *
 *   http-serve -t HOST:PORT [-T SECONDS]
 *       HTTP/1.1 keep-alive server: every request head (up to the blank line;
 *       bodies are not expected) gets one fixed 200 reply with a 13-byte body.
 *       Pipelined requests are answered in one write.
 *   rpc-serve -t HOST:PORT -f REPLY -L OFF:SIZE:ADD -i OFF:WIDTH -r OFF [-T SECONDS]
 *       Length-framed RPC server (Dubbo, framed Thrift): every request frame
 *       is answered with the bytes of file REPLY (a reply a real server gave),
 *       with the request's id (at -i in the request) copied to -r in the reply.
 *   rpc-load -a HOST:PORT -f REQUEST -L OFF:SIZE:ADD -i OFF:WIDTH -r OFF
 *            -c CONNS -p DEPTH -d SECONDS -n MAXREQ
 *       CONNS connections, each keeping DEPTH requests in flight: the frame in
 *       file REQUEST, a fresh id written at -i for every request; a reply is
 *       matched by the id at -r (replies may come in any order). Runs until
 *       SECONDS or MAXREQ replies. Prints one JSON line: count, seconds, rate,
 *       p50_us, p99_us, errors (replies with an id not in flight), cpu_s.
 *
 * Frame length = big-endian SIZE-byte integer at OFF, plus ADD:
 * Dubbo 12:4:16, framed Thrift 0:4:4. One epoll thread each; servers exit by
 * themselves after -T seconds (default 900) so nothing outlives a crashed run.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 1024
#define MAX_DEPTH 1024
#define MAX_FRAME (1 << 20)
#define RBUF (256 * 1024)
#define LAT_BUCKETS (1 << 20) /* 1 us buckets up to ~1 s, then one overflow bucket */

static void die(const char *what)
{
    fprintf(stderr, "proxy_load: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void usage(const char *msg)
{
    fprintf(stderr, "proxy_load: %s (see the comment at the top of proxy_load.c)\n", msg);
    exit(2);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

static void parse_inet(const char *text, struct sockaddr_in *sin)
{
    char host[64];
    const char *colon = strrchr(text, ':');
    if (!colon || (size_t)(colon - text) >= sizeof host)
        usage("expected HOST:PORT");
    memcpy(host, text, colon - text);
    host[colon - text] = 0;
    memset(sin, 0, sizeof *sin);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
        usage("bad IPv4 address");
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        die(path);
    char *buf = malloc(MAX_FRAME);
    *len = fread(buf, 1, MAX_FRAME, f);
    fclose(f);
    if (!*len)
        usage("empty frame file");
    return buf;
}

static void nonblocking(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* ------------------------------------------------------------ framing */

struct framing {
    unsigned len_off, len_size, len_add; /* frame length field */
    unsigned id_off, id_width;           /* request id in requests */
    unsigned reply_id_off;               /* the same id in replies */
};

static uint64_t get_be(const unsigned char *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

static void put_be(unsigned char *p, unsigned n, uint64_t v)
{
    for (unsigned i = n; i-- > 0; v >>= 8)
        p[i] = v & 0xff;
}

/* Bytes of the complete frame at p (0: need more; -1: bad length). */
static long frame_length(const struct framing *fr, const unsigned char *p, size_t avail)
{
    if (avail < fr->len_off + fr->len_size)
        return 0;
    uint64_t n = get_be(p + fr->len_off, fr->len_size) + fr->len_add;
    if (n > MAX_FRAME || n < fr->len_off + fr->len_size)
        return -1;
    return n <= avail ? (long)n : 0;
}

static void parse_framing(struct framing *fr, const char *L, const char *I, const char *R)
{
    if (!L || sscanf(L, "%u:%u:%u", &fr->len_off, &fr->len_size, &fr->len_add) != 3 ||
        fr->len_size < 1 || fr->len_size > 8)
        usage("-L OFF:SIZE:ADD");
    if (!I || sscanf(I, "%u:%u", &fr->id_off, &fr->id_width) != 2 || fr->id_width < 1 ||
        fr->id_width > 8)
        usage("-i OFF:WIDTH");
    if (!R)
        usage("-r OFF");
    fr->reply_id_off = atoi(R);
}

/* ------------------------------------------------------------ connections */

struct conn {
    int fd;
    unsigned want;         /* registered epoll interest */
    size_t rlen;           /* bytes in rbuf */
    size_t woff, wlen;     /* pending output in wbuf */
    size_t wcap;
    unsigned char *wbuf;
    unsigned inflight;     /* client: requests awaiting a reply */
    uint64_t next_id;      /* client: id of the next request */
    unsigned char rbuf[RBUF];
};

static struct conn *conn_new(int fd)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c)
        die("calloc");
    c->fd = fd;
    c->wcap = RBUF;
    c->wbuf = malloc(c->wcap);
    return c;
}

static void conn_free(struct conn *c)
{
    close(c->fd);
    free(c->wbuf);
    free(c);
}

static void out_append(struct conn *c, const void *data, size_t n)
{
    if (c->woff && c->woff == c->wlen)
        c->woff = c->wlen = 0;
    if (c->wlen + n > c->wcap) {
        if (c->woff) { /* compact first */
            memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
            c->wlen -= c->woff;
            c->woff = 0;
        }
        while (c->wlen + n > c->wcap)
            c->wcap *= 2;
        c->wbuf = realloc(c->wbuf, c->wcap);
        if (!c->wbuf)
            die("realloc");
    }
    memcpy(c->wbuf + c->wlen, data, n);
    c->wlen += n;
}

/* Write what is pending; -1 on a dead connection. */
static int out_flush(struct conn *c)
{
    while (c->woff < c->wlen) {
        ssize_t w = write(c->fd, c->wbuf + c->woff, c->wlen - c->woff);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return 0;
            return -1;
        }
        c->woff += w;
    }
    c->woff = c->wlen = 0;
    return 0;
}

static void want(int ep, struct conn *c)
{
    unsigned w = EPOLLIN | (c->woff < c->wlen ? EPOLLOUT : 0);
    if (w != c->want) {
        struct epoll_event ev = {.events = w, .data.ptr = c};
        epoll_ctl(ep, c->want ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev);
        c->want = w;
    }
}

/* Read into rbuf; returns bytes read, 0 on EAGAIN, -1 on EOF or error. */
static ssize_t fill(struct conn *c)
{
    if (c->rlen == RBUF)
        return -1; /* a frame larger than the buffer: not our traffic */
    for (;;) {
        ssize_t r = read(c->fd, c->rbuf + c->rlen, RBUF - c->rlen);
        if (r > 0) {
            c->rlen += r;
            return r;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return 0;
        return -1;
    }
}

static void consume(struct conn *c, size_t n)
{
    memmove(c->rbuf, c->rbuf + n, c->rlen - n);
    c->rlen -= n;
}

/* ------------------------------------------------------------ servers */

static const char HTTP_REPLY[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                 "Content-Length: 13\r\n\r\nhello, world\n";

enum serve_kind { SERVE_HTTP, SERVE_RPC };

static enum serve_kind kind;
static struct framing fr;
static unsigned char *reply;
static size_t reply_len;

/* Answer every complete request in rbuf; -1 when the input is not ours. */
static int answer(struct conn *c)
{
    size_t pos = 0;
    if (kind == SERVE_HTTP) {
        for (;;) {
            unsigned char *end = memmem(c->rbuf + pos, c->rlen - pos, "\r\n\r\n", 4);
            if (!end)
                break;
            pos = end + 4 - c->rbuf;
            out_append(c, HTTP_REPLY, sizeof HTTP_REPLY - 1);
        }
    } else {
        for (;;) {
            long n = frame_length(&fr, c->rbuf + pos, c->rlen - pos);
            if (n < 0)
                return -1;
            if (n == 0)
                break;
            if ((size_t)n < fr.id_off + fr.id_width)
                return -1;
            put_be(reply + fr.reply_id_off, fr.id_width,
                   get_be(c->rbuf + pos + fr.id_off, fr.id_width));
            out_append(c, reply, reply_len);
            pos += n;
        }
    }
    consume(c, pos);
    return 0;
}

static int serve(const char *addr, double limit)
{
    struct sockaddr_in sin;
    parse_inet(addr, &sin);
    int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(lfd, 4096) < 0)
        die(addr);
    fcntl(lfd, F_SETFL, O_NONBLOCK);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    printf("ready\n");
    fflush(stdout);
    double deadline = now() + limit;
    struct epoll_event evs[256];
    while (now() < deadline) {
        int n = epoll_wait(ep, evs, 256, 1000);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept(lfd, NULL, NULL)) >= 0) {
                    nonblocking(fd);
                    want(ep, conn_new(fd));
                }
                continue;
            }
            int dead = 0;
            if (evs[i].events & EPOLLOUT)
                dead = out_flush(c) < 0;
            if (!dead && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
                ssize_t r;
                while (!dead && (r = fill(c)) != 0) {
                    if (r < 0 || answer(c) < 0)
                        dead = 1;
                }
                if (!dead)
                    dead = out_flush(c) < 0;
            }
            if (dead) {
                conn_free(c); /* close() drops it from the epoll set */
                continue;
            }
            want(ep, c);
        }
    }
    return 0;
}

/* ------------------------------------------------------------ load */

struct load {
    unsigned char *req;
    size_t req_len;
    unsigned depth;
    uint64_t count, max, errors;
    double t0, deadline;
    unsigned lat[LAT_BUCKETS + 1];
    double *sent; /* per connection ring of send times, indexed by id */
    unsigned ring;
};

static struct load L;

static void send_requests(struct conn *c, unsigned idx, double t)
{
    while (c->inflight < L.depth && L.count < L.max && t < L.deadline) {
        uint64_t id = ++c->next_id;
        put_be(L.req + fr.id_off, fr.id_width, id);
        out_append(c, L.req, L.req_len);
        L.sent[idx * L.ring + id % L.ring] = t;
        c->inflight++;
    }
}

static int take_replies(struct conn *c, unsigned idx, double t)
{
    size_t pos = 0;
    for (;;) {
        long n = frame_length(&fr, c->rbuf + pos, c->rlen - pos);
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        uint64_t id = (size_t)n >= fr.reply_id_off + fr.id_width
                          ? get_be(c->rbuf + pos + fr.reply_id_off, fr.id_width)
                          : 0;
        if (id == 0 || id > c->next_id || c->next_id - id >= L.ring || !c->inflight) {
            L.errors++;
        } else {
            double us = (t - L.sent[idx * L.ring + id % L.ring]) * 1e6;
            L.lat[us < LAT_BUCKETS ? (unsigned)us : LAT_BUCKETS]++;
            c->inflight--;
            L.count++;
        }
        pos += n;
    }
    consume(c, pos);
    return 0;
}

static double percentile(double q)
{
    uint64_t total = 0, seen = 0;
    for (unsigned i = 0; i <= LAT_BUCKETS; i++)
        total += L.lat[i];
    for (unsigned i = 0; i <= LAT_BUCKETS; i++) {
        seen += L.lat[i];
        if (total && seen >= q * total)
            return i;
    }
    return LAT_BUCKETS;
}

static int load(const char *addr, unsigned conns, double seconds)
{
    struct sockaddr_in sin;
    parse_inet(addr, &sin);
    if (!conns || conns > MAX_CONNS || !L.depth || L.depth > MAX_DEPTH)
        usage("-c 1..1024, -p 1..1024");
    L.ring = 4 * MAX_DEPTH;
    L.sent = calloc((size_t)conns * L.ring, sizeof(double));
    struct conn **cs = calloc(conns, sizeof *cs);
    int ep = epoll_create1(0);
    for (unsigned i = 0; i < conns; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&sin, sizeof sin) < 0)
            die("connect");
        nonblocking(fd);
        cs[i] = conn_new(fd);
    }
    double cpu0 = cpu_seconds();
    L.t0 = now();
    L.deadline = L.t0 + seconds;
    for (unsigned i = 0; i < conns; i++) {
        send_requests(cs[i], i, L.t0);
        if (out_flush(cs[i]) < 0)
            die("write");
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[i]->fd, &ev);
        cs[i]->want = EPOLLIN;
    }
    struct epoll_event evs[256];
    unsigned open = conns;
    int failed = 0;
    double t = L.t0;
    while (open && !failed) {
        int n = epoll_wait(ep, evs, 256, 1000);
        t = now();
        if (n == 0 && t > L.deadline + 5)
            break; /* replies stopped coming */
        for (int k = 0; k < n; k++) {
            unsigned i = evs[k].data.u32;
            struct conn *c = cs[i];
            if (!c)
                continue;
            if (evs[k].events & EPOLLOUT && out_flush(c) < 0)
                failed = 1;
            ssize_t r;
            while (!failed && (r = fill(c)) != 0) {
                if (r < 0 || take_replies(c, i, t) < 0)
                    failed = 1;
            }
            if (failed)
                break;
            if (L.count < L.max && t < L.deadline)
                send_requests(c, i, t);
            if (out_flush(c) < 0) {
                failed = 1;
                break;
            }
            if (!c->inflight && (L.count >= L.max || t >= L.deadline)) {
                conn_free(c);
                cs[i] = NULL;
                open--;
                continue;
            }
            unsigned w = EPOLLIN | (c->woff < c->wlen ? EPOLLOUT : 0);
            if (w != c->want) {
                struct epoll_event ev = {.events = w, .data.u32 = i};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                c->want = w;
            }
        }
    }
    double elapsed = t - L.t0, cpu = cpu_seconds() - cpu0;
    uint64_t lost = 0;
    for (unsigned i = 0; i < conns; i++)
        if (cs[i]) {
            lost += cs[i]->inflight;
            conn_free(cs[i]);
        }
    printf("{\"count\": %lu, \"seconds\": %.4f, \"rate\": %.1f, \"p50_us\": %.0f, "
           "\"p99_us\": %.0f, \"errors\": %lu, \"lost\": %lu, \"failed\": %s, \"cpu_s\": %.4f}\n",
           (unsigned long)L.count, elapsed, elapsed > 0 ? L.count / elapsed : 0.0,
           percentile(0.5), percentile(0.99), (unsigned long)L.errors, (unsigned long)lost,
           failed ? "true" : "false", cpu);
    return failed ? 1 : 0;
}

/* ------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    if (argc < 2)
        usage("mode: http-serve, rpc-serve or rpc-load");
    signal(SIGPIPE, SIG_IGN);
    const char *mode = argv[1], *addr = NULL, *file = NULL, *lopt = NULL, *iopt = NULL,
               *ropt = NULL;
    double limit = 900, seconds = 1;
    unsigned conns = 1;
    L.depth = 1;
    L.max = 1000000;
    int opt;
    optind = 2;
    while ((opt = getopt(argc, argv, "t:a:f:L:i:r:c:p:d:n:T:")) != -1) {
        switch (opt) {
        case 't':
        case 'a': addr = optarg; break;
        case 'f': file = optarg; break;
        case 'L': lopt = optarg; break;
        case 'i': iopt = optarg; break;
        case 'r': ropt = optarg; break;
        case 'c': conns = atoi(optarg); break;
        case 'p': L.depth = atoi(optarg); break;
        case 'd': seconds = atof(optarg); break;
        case 'n': L.max = strtoull(optarg, NULL, 10); break;
        case 'T': limit = atof(optarg); break;
        default: usage("unknown option");
        }
    }
    if (!addr)
        usage("-t/-a HOST:PORT");
    if (!strcmp(mode, "http-serve")) {
        kind = SERVE_HTTP;
        return serve(addr, limit);
    }
    parse_framing(&fr, lopt, iopt, ropt);
    if (!file)
        usage("-f FRAME");
    if (!strcmp(mode, "rpc-serve")) {
        kind = SERVE_RPC;
        reply = (unsigned char *)read_file(file, &reply_len);
        if (fr.reply_id_off + fr.id_width > reply_len)
            usage("-r beyond the reply");
        return serve(addr, limit);
    }
    if (!strcmp(mode, "rpc-load")) {
        L.req = (unsigned char *)read_file(file, &L.req_len);
        if (fr.id_off + fr.id_width > L.req_len)
            usage("-i beyond the request");
        return load(addr, conns, seconds);
    }
    usage("mode: http-serve, rpc-serve or rpc-load");
    return 2;
}
