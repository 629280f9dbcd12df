/*
 * nodemesh proxy benchmarks: request/response servers and load clients in C,
 * compiled by bench/proxy_common.py at run time (cc -O2 -pthread). Python on
 * either end would cost more than the proxy under test and hide it.
 *
 *   serve -k dubbo|thrift|http -p PORT [-T SECONDS]
 *       One epoll thread answering every complete request with a canned reply:
 *       dubbo (hessian2 "ok", the request's id), thrift (framed binary REPLY to
 *       the request's name and seqid), http (200 "ok", keep-alive). Prints "ready".
 *   load -k dubbo|thrift -a HOST:PORT -c CONNS -d SECONDS -n MAXREQ
 *       CONNS threads, one connection each: send one request (a real Dubbo
 *       hessian2 invocation / Thrift binary framed CALL), wait for its reply and
 *       check its id, until SECONDS or MAXREQ in all. Prints one JSON line:
 *       count, seconds, rate, p50_us, p99_us, errors.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF 65536
#define MAX_THREADS 256
#define SAMPLES 200000

enum { DUBBO, THRIFT, HTTP };

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what)
{
    fprintf(stderr, "proxy_load: %s: %s\n", what, strerror(errno));
    exit(2);
}

static int kind_of(const char *s)
{
    if (!strcmp(s, "dubbo")) return DUBBO;
    if (!strcmp(s, "thrift")) return THRIFT;
    if (!strcmp(s, "http")) return HTTP;
    fprintf(stderr, "proxy_load: unknown kind %s\n", s);
    exit(2);
}

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]; }
static void put32(uint8_t *p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; }

/* ---- wire formats ------------------------------------------------------------ */

/* hessian2 compact string: length byte (< 32) then the bytes */
static size_t hstr(uint8_t *out, const char *s)
{
    size_t n = strlen(s);
    out[0] = (uint8_t)n;
    memcpy(out + 1, s, n);
    return n + 1;
}

static size_t dubbo_request(uint8_t *out, uint64_t id)
{
    uint8_t *b = out + 16;
    size_t n = 0;
    n += hstr(b + n, "2.0.2");
    n += hstr(b + n, "org.demo.Bench");
    n += hstr(b + n, "0.0.0");
    n += hstr(b + n, "echo");
    n += hstr(b + n, "Ljava/lang/String;");
    n += hstr(b + n, "hello");
    b[n++] = 'H';
    n += hstr(b + n, "path");
    n += hstr(b + n, "org.demo.Bench");
    b[n++] = 'Z';
    out[0] = 0xda; out[1] = 0xbb; out[2] = 0xc2; out[3] = 0;
    for (int i = 0; i < 8; i++) out[4 + i] = (uint8_t)(id >> (56 - 8 * i));
    put32(out + 12, (uint32_t)n);
    return 16 + n;
}

static size_t thrift_request(uint8_t *out, uint32_t seqid)
{
    uint8_t *m = out + 4;
    size_t n = 0;
    put32(m, 0x80010001u); n += 4;                 /* strict binary, CALL */
    put32(m + n, 4); n += 4; memcpy(m + n, "echo", 4); n += 4;
    put32(m + n, seqid); n += 4;
    m[n++] = 11; m[n++] = 0; m[n++] = 1;          /* field 1: string */
    put32(m + n, 5); n += 4; memcpy(m + n, "hello", 5); n += 5;
    m[n++] = 0;                                    /* stop */
    put32(out, (uint32_t)n);
    return n + 4;
}

/* Length of the complete request at p, 0 if more is needed. */
static size_t frame_len(int kind, const uint8_t *p, size_t have)
{
    if (kind == DUBBO) {
        if (have < 16) return 0;
        size_t n = 16 + be32(p + 12);
        return have >= n ? n : 0;
    }
    if (kind == THRIFT) {
        if (have < 4) return 0;
        size_t n = 4 + be32(p);
        return have >= n ? n : 0;
    }
    const uint8_t *end = memmem(p, have, "\r\n\r\n", 4);
    return end ? (size_t)(end - p) + 4 : 0;
}

static size_t reply_for(int kind, const uint8_t *req, uint8_t *out)
{
    if (kind == DUBBO) {
        static const uint8_t body[] = {0x91, 0x02, 'o', 'k'};
        out[0] = 0xda; out[1] = 0xbb; out[2] = 0x02; out[3] = 20;
        memcpy(out + 4, req + 4, 8);
        put32(out + 12, sizeof body);
        memcpy(out + 16, body, sizeof body);
        return 16 + sizeof body;
    }
    if (kind == THRIFT) {
        uint32_t name_len = be32(req + 8);
        uint8_t *m = out + 4;
        size_t n = 0;
        put32(m, 0x80010002u); n += 4;             /* REPLY */
        put32(m + n, name_len); n += 4;
        memcpy(m + n, req + 12, name_len); n += name_len;
        memcpy(m + n, req + 12 + name_len, 4); n += 4;   /* seqid */
        m[n++] = 11; m[n++] = 0; m[n++] = 0;       /* field 0 (success): string */
        put32(m + n, 2); n += 4; m[n++] = 'o'; m[n++] = 'k';
        m[n++] = 0;
        put32(out, (uint32_t)n);
        return n + 4;
    }
    static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             "Content-Length: 2\r\n\r\nok";
    memcpy(out, ok, sizeof ok - 1);
    return sizeof ok - 1;
}

/* ---- server ------------------------------------------------------------------ */

struct conn { int fd; size_t have; uint8_t in[BUF]; };

static int serve(int kind, int port, int seconds)
{
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1024)) die("listen");
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    printf("ready\n");
    fflush(stdout);
    alarm(seconds);
    static uint8_t out[BUF * 2];
    struct epoll_event evs[64];
    for (;;) {
        int n = epoll_wait(ep, evs, 64, -1);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    c = calloc(1, sizeof *c);
                    c->fd = fd;
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            ssize_t r = read(c->fd, c->in + c->have, BUF - c->have);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                close(c->fd);
                free(c);
                continue;
            }
            c->have += r;
            size_t pos = 0, olen = 0, len;
            while ((len = frame_len(kind, c->in + pos, c->have - pos)) > 0) {
                olen += reply_for(kind, c->in + pos, out + olen);
                pos += len;
            }
            memmove(c->in, c->in + pos, c->have - pos);
            c->have -= pos;
            if (olen && write(c->fd, out, olen) < 0 && errno != EAGAIN) {
                close(c->fd);
                free(c);
            }
        }
    }
}

/* ---- load -------------------------------------------------------------------- */

struct worker {
    int kind, index;
    struct sockaddr_in addr;
    double deadline;
    long count, errors;
    float *lat;
    long nlat;
};

static long max_requests, done_requests;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static int take(void)
{
    pthread_mutex_lock(&lock);
    int ok = done_requests < max_requests;
    if (ok) done_requests++;
    pthread_mutex_unlock(&lock);
    return ok;
}

static void *load_thread(void *arg)
{
    struct worker *w = arg;
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (connect(fd, (struct sockaddr *)&w->addr, sizeof w->addr)) die("connect");
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    uint8_t req[512], in[BUF];
    uint64_t id = (uint64_t)w->index << 32;
    while (now() < w->deadline && take()) {
        id++;
        size_t len = w->kind == DUBBO ? dubbo_request(req, id) : thrift_request(req, (uint32_t)id);
        double t0 = now();
        if (write(fd, req, len) != (ssize_t)len) { w->errors++; break; }
        size_t have = 0, flen = 0;
        while (!(flen = frame_len(w->kind, in, have))) {
            ssize_t r = read(fd, in + have, sizeof in - have);
            if (r <= 0) { w->errors++; goto out; }
            have += r;
        }
        int ok = w->kind == DUBBO
            ? (in[3] == 20 && memcmp(in + 4, req + 4, 8) == 0)
            : (be32(in + 4) == 0x80010002u && memcmp(in + 16, req + 16, 4) == 0);
        if (!ok) w->errors++;
        if (w->nlat < SAMPLES) w->lat[w->nlat++] = (float)((now() - t0) * 1e6);
        w->count++;
    }
out:
    close(fd);
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static int load(int kind, const char *hostport, int conns, double seconds, long maxreq)
{
    char host[64];
    const char *colon = strrchr(hostport, ':');
    snprintf(host, sizeof host, "%.*s", (int)(colon - hostport), hostport);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(colon + 1))};
    inet_pton(AF_INET, host, &a.sin_addr);
    max_requests = maxreq;
    if (conns > MAX_THREADS) conns = MAX_THREADS;
    pthread_t th[MAX_THREADS];
    struct worker ws[MAX_THREADS];
    double start = now();
    for (int i = 0; i < conns; i++) {
        ws[i] = (struct worker){.kind = kind, .index = i, .addr = a, .deadline = start + seconds,
                                .lat = malloc(sizeof(float) * SAMPLES)};
        pthread_create(&th[i], NULL, load_thread, &ws[i]);
    }
    long count = 0, errors = 0, nlat = 0;
    for (int i = 0; i < conns; i++) {
        pthread_join(th[i], NULL);
        count += ws[i].count;
        errors += ws[i].errors;
        nlat += ws[i].nlat;
    }
    double elapsed = now() - start;
    float *all = malloc(sizeof(float) * (nlat + 1));
    long k = 0;
    for (int i = 0; i < conns; i++)
        for (long j = 0; j < ws[i].nlat; j++) all[k++] = ws[i].lat[j];
    qsort(all, nlat, sizeof(float), cmp);
    printf("{\"count\": %ld, \"seconds\": %.4f, \"rate\": %.1f, \"p50_us\": %.1f, "
           "\"p99_us\": %.1f, \"errors\": %ld}\n", count, elapsed, count / elapsed,
           nlat ? all[nlat / 2] : 0.0, nlat ? all[(long)(nlat * 0.99)] : 0.0, errors);
    return errors ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) goto usage;
    int kind = HTTP, port = 0, conns = 8, seconds = 600;
    double duration = 5;
    long maxreq = 1000000000L;
    const char *addr = NULL;
    int opt;
    optind = 2;
    while ((opt = getopt(argc, argv, "k:p:T:a:c:d:n:")) != -1) {
        switch (opt) {
        case 'k': kind = kind_of(optarg); break;
        case 'p': port = atoi(optarg); break;
        case 'T': seconds = atoi(optarg); break;
        case 'a': addr = optarg; break;
        case 'c': conns = atoi(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 'n': maxreq = atol(optarg); break;
        default: goto usage;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    if (!strcmp(argv[1], "serve") && port) return serve(kind, port, seconds);
    if (!strcmp(argv[1], "load") && addr && kind != HTTP) return load(kind, addr, conns, duration, maxreq);
usage:
    fprintf(stderr, "usage: proxy_load serve -k KIND -p PORT | load -k dubbo|thrift -a HOST:PORT "
                    "-c CONNS -d SECONDS -n MAXREQ\n");
    return 2;
}
