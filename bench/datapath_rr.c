/*
 * nodemesh datapath benchmark: the C client and server that bench/datapath.py
 * compiles at run time (cc -O2 -pthread). Python would cost 10-20 us per round
 * trip and hide the transport difference; this keeps the bench honest.
 *
 *   serve [-g CGROUP] [-T SECONDS] [-w WORKERS] [-t HOST:PORT]... [-u PATH]... [-k HOST:PORT]...
 *         [-e HOST:PORT]...
 *       -t: TCP echo listener, -u: unix stream echo listener (read what came,
 *       write it back; a thread per connection, or -w N epoll workers), -k: TCP sink listener
 *       (accept and close, for connect benchmarks), -e: TCP echo-once listener
 *       (accept, echo one read, close: connect + one request). Prints "ready" when every
 *       listener is up. Exits by itself after -T seconds (default 600).
 *   rr -a HOST:PORT | -u PATH  -s SIZE -c CONNS -d SECONDS -n MAXREQ [-g CGROUP]
 *       CONNS threads, each on its own connection: send SIZE bytes, wait for
 *       SIZE bytes back, until SECONDS or MAXREQ requests in all.
 *   conn -a HOST:PORT -d SECONDS -n MAXCONN [-g CGROUP] [-r SIZE]
 *       socket(), connect(), close() (SO_LINGER 0: no TIME_WAIT to exhaust
 *       the ephemeral ports) until SECONDS or MAXCONN connections; -r: one
 *       request of SIZE bytes (at most 16 KiB) and its echo before the close.
 *
 * rr and conn print one JSON line: count, seconds, rate, p50_us, p99_us,
 * mean_us, cpu_s (this process's user + system CPU over the timed part).
 * -g CGROUP: write our pid to CGROUP/cgroup.procs before any socket exists,
 * so that the cgroup's BPF programs (connect4, sockops) see our sockets.
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
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_LISTENERS 16
#define MAX_CONNS 64

static void die(const char *what)
{
    fprintf(stderr, "datapath_rr: %s: %s\n", what, strerror(errno));
    exit(2);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void join_cgroup(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/cgroup.procs", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        die(path);
    fprintf(f, "%d\n", getpid());
    if (fclose(f) != 0)
        die(path);
}

/* An IP endpoint: HOST:PORT or [IPv6]:PORT. */
struct inet {
    struct sockaddr_storage ss;
    socklen_t len;
};

static void parse_inet(const char *text, struct inet *a)
{
    char host[64];
    const char *colon = strrchr(text, ':');
    const char *start = text, *end = colon;
    if (colon && text[0] == '[') {      /* [v6]:port */
        start = text + 1;
        end = colon > text && colon[-1] == ']' ? colon - 1 : NULL;
    }
    if (!colon || !end || end < start || (size_t)(end - start) >= sizeof host) {
        fprintf(stderr, "datapath_rr: %s: expected HOST:PORT or [IPv6]:PORT\n", text);
        exit(2);
    }
    memcpy(host, start, end - start);
    host[end - start] = 0;
    memset(a, 0, sizeof *a);
    struct sockaddr_in *sin = (struct sockaddr_in *)&a->ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->ss;
    if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(atoi(colon + 1));
        a->len = sizeof *sin;
    } else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(atoi(colon + 1));
        a->len = sizeof *sin6;
    } else {
        fprintf(stderr, "datapath_rr: %s: bad address\n", text);
        exit(2);
    }
}

static int write_all(int fd, const char *buf, size_t n)
{
    while (n) {
        ssize_t w = write(fd, buf, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += w;
        n -= w;
    }
    return 0;
}

static int read_all(int fd, char *buf, size_t n)
{
    while (n) {
        ssize_t r = read(fd, buf, n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0)
            return -1;
        buf += r;
        n -= r;
    }
    return 0;
}

/* ---------------------------------------------------------------- server */

struct listener {
    int fd;
    int sink;   /* 1: accept and close; 2: echo one read, then close */
};

/* Echo connections: a thread per connection by default (-w 0), or -w N
 * epoll worker threads (level-triggered; a write that does not go out whole
 * waits for EPOLLOUT with its remainder). On 2 cores with 8 client threads,
 * one epoll thread gets a ninth of the CPU under CFS and becomes the
 * bottleneck; a thread per connection keeps up. */
#define ECHO_BUF (256 * 1024)

struct echo_conn {
    int fd;
    unsigned want; /* registered interest: EPOLLIN or EPOLLOUT */
    size_t off, len;
    char buf[ECHO_BUF];
};

static int n_workers = 0; /* 0: a thread per connection */
static int worker_ep[MAX_LISTENERS];
static unsigned next_worker;

static void *echo_worker(void *arg)
{
    int ep = (int)(intptr_t)arg;
    struct epoll_event evs[64];
    for (;;) {
        int n = epoll_wait(ep, evs, 64, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            struct echo_conn *c = evs[i].data.ptr;
            int dead = 0;
            if (c->len) { /* remainder of a write */
                ssize_t w = write(c->fd, c->buf + c->off, c->len);
                if (w < 0 && errno != EAGAIN && errno != EINTR)
                    dead = 1;
                else if (w > 0) {
                    c->off += w;
                    c->len -= w;
                }
            } else {
                ssize_t r = read(c->fd, c->buf, ECHO_BUF);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
                    dead = 1;
                else if (r > 0) {
                    ssize_t w = write(c->fd, c->buf, r);
                    if (w < 0 && errno != EAGAIN && errno != EINTR)
                        dead = 1;
                    else {
                        w = w < 0 ? 0 : w;
                        c->off = w;
                        c->len = r - w;
                    }
                }
            }
            if (dead) {
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                free(c);
                continue;
            }
            unsigned want = c->len ? EPOLLOUT : EPOLLIN;
            if (want != c->want) {
                struct epoll_event ev = {.events = want, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                c->want = want;
            }
        }
    }
    return NULL;
}

/* Thread per connection (the default): blocking read, write back. */
static void *echo_thread(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char *buf = malloc(ECHO_BUF);
    if (!buf) {
        close(fd);
        return NULL;
    }
    for (;;) {
        ssize_t r = read(fd, buf, ECHO_BUF);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        if (write_all(fd, buf, r) < 0)
            break;
    }
    free(buf);
    close(fd);
    return NULL;
}

/* Connect + one request: the client sends one small request with
 * TCP_NODELAY, so one read takes all of it. */
static void echo_once(int fd)
{
    char buf[16384];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0)
        (void)write_all(fd, buf, (size_t)n);
}

static void *accept_loop(void *arg)
{
    struct listener *l = arg;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (;;) {
        int fd = accept4(l->fd, NULL, NULL, (l->sink || !n_workers) ? 0 : SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE)
                continue;
            die("accept");
        }
        if (l->sink) {
            if (l->sink == 2)
                echo_once(fd);
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* fails on unix: fine */
        if (!n_workers) {
            pthread_t t;
            if (pthread_create(&t, &attr, echo_thread, (void *)(intptr_t)fd) != 0)
                close(fd);
            continue;
        }
        struct echo_conn *c = malloc(sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->off = c->len = 0;
        c->want = EPOLLIN;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        int ep = worker_ep[__atomic_fetch_add(&next_worker, 1, __ATOMIC_RELAXED) % n_workers];
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            free(c);
        }
    }
    return NULL;
}

static int listen_inet(const char *text)
{
    struct inet a;
    parse_inet(text, &a);
    int fd = socket(a.ss.ss_family, SOCK_STREAM, 0);
    int one = 1;
    if (fd < 0)
        die("socket");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    /* Our ports are in the ephemeral range on a shared machine: another
     * client's TIME_WAIT socket on one blocks the bind until it expires (60 s). */
    for (int tries = 0; bind(fd, (struct sockaddr *)&a.ss, a.len) < 0; tries++) {
        if (errno != EADDRINUSE || tries >= 130)
            die(text);
        usleep(500 * 1000);
    }
    if (listen(fd, 4096) < 0)
        die("listen");
    return fd;
}

static int listen_unix(const char *path)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sun.sun_path) {
        fprintf(stderr, "datapath_rr: %s: path too long\n", path);
        exit(2);
    }
    strcpy(sun.sun_path, path);
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0)
        die("socket");
    if (bind(fd, (struct sockaddr *)&sun, sizeof sun) < 0)
        die(path);
    if (listen(fd, 4096) < 0)
        die("listen");
    return fd;
}

static int serve(int argc, char **argv)
{
    static struct listener ls[MAX_LISTENERS];
    int n = 0, opt, limit = 600;
    const char *cgroup = NULL;
    /* first pass: the cgroup must be joined before any socket exists */
    while ((opt = getopt(argc, argv, "g:T:t:u:k:e:w:")) != -1)
        if (opt == 'g')
            cgroup = optarg;
    if (cgroup)
        join_cgroup(cgroup);
    optind = 1;
    while ((opt = getopt(argc, argv, "g:T:t:u:k:e:w:")) != -1) {
        if (n >= MAX_LISTENERS && (opt == 't' || opt == 'u' || opt == 'k' ||
                                    opt == 'e')) {
            fprintf(stderr, "datapath_rr: too many listeners\n");
            return 2;
        }
        switch (opt) {
        case 'T': limit = atoi(optarg); break;
        case 'w': n_workers = atoi(optarg); break;
        case 't': ls[n].fd = listen_inet(optarg); ls[n++].sink = 0; break;
        case 'k': ls[n].fd = listen_inet(optarg); ls[n++].sink = 1; break;
        case 'e': ls[n].fd = listen_inet(optarg); ls[n++].sink = 2; break;
        case 'u': ls[n].fd = listen_unix(optarg); ls[n++].sink = 0; break;
        case 'g': break;
        default: return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    if (n_workers < 0 || n_workers > MAX_LISTENERS) {
        fprintf(stderr, "datapath_rr: -w 0..%d\n", MAX_LISTENERS);
        return 2;
    }
    for (int i = 0; i < n_workers; i++) {
        pthread_t t;
        if ((worker_ep[i] = epoll_create1(0)) < 0)
            die("epoll_create1");
        if (pthread_create(&t, NULL, echo_worker, (void *)(intptr_t)worker_ep[i]) != 0)
            die("pthread_create");
    }
    for (int i = 0; i < n; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, accept_loop, &ls[i]) != 0)
            die("pthread_create");
    }
    printf("ready\n");
    fflush(stdout);
    alarm(limit); /* bounded: never outlives its run */
    for (;;)
        pause();
}

/* ---------------------------------------------------------------- clients */

struct target {
    int unix_;
    struct inet in;
    struct sockaddr_un sun;
};

static int dial(const struct target *t)
{
    int fd = socket(t->unix_ ? AF_UNIX : t->in.ss.ss_family, SOCK_STREAM, 0);
    if (fd < 0)
        die("socket");
    int rc = t->unix_ ? connect(fd, (const struct sockaddr *)&t->sun, sizeof t->sun)
                      : connect(fd, (const struct sockaddr *)&t->in.ss, t->in.len);
    if (rc < 0)
        die("connect");
    if (!t->unix_) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

struct worker {
    pthread_t th;
    int fd;
    size_t size;
    long max;
    double deadline;
    long count;
    float *lat; /* microseconds */
    int failed;
};

static pthread_barrier_t start_line;
static double t_start;

static void *rr_worker(void *arg)
{
    struct worker *w = arg;
    char *out = malloc(w->size), *in = malloc(w->size);
    memset(out, 'x', w->size);
    pthread_barrier_wait(&start_line);
    while (w->count < w->max) {
        double t0 = now();
        if (t0 >= w->deadline)
            break;
        if (write_all(w->fd, out, w->size) < 0 || read_all(w->fd, in, w->size) < 0) {
            w->failed = 1;
            break;
        }
        w->lat[w->count++] = (float)((now() - t0) * 1e6);
    }
    free(out);
    free(in);
    return NULL;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

static double cpu_at_start;

static void report(const char *what, long count, double seconds, float *lat, int failed)
{
    double sum = 0, cpu = cpu_seconds() - cpu_at_start;
    qsort(lat, count, sizeof *lat, cmp_float);
    for (long i = 0; i < count; i++)
        sum += lat[i];
    double p50 = count ? lat[count / 2] : 0;
    double p99 = count ? lat[(long)(count * 0.99) < count ? (long)(count * 0.99) : count - 1] : 0;
    printf("{\"mode\": \"%s\", \"count\": %ld, \"seconds\": %.6f, \"rate\": %.1f, "
           "\"p50_us\": %.2f, \"p99_us\": %.2f, \"mean_us\": %.2f, \"cpu_s\": %.6f, \"failed\": %d}\n",
           what, count, seconds, seconds > 0 ? count / seconds : 0, p50, p99,
           count ? sum / count : 0, cpu, failed);
}

static void parse_target(const char *addr, const char *upath, struct target *t)
{
    memset(t, 0, sizeof *t);
    if (upath) {
        t->unix_ = 1;
        t->sun.sun_family = AF_UNIX;
        snprintf(t->sun.sun_path, sizeof t->sun.sun_path, "%s", upath);
    } else if (addr) {
        parse_inet(addr, &t->in);
    } else {
        fprintf(stderr, "datapath_rr: -a HOST:PORT or -u PATH\n");
        exit(2);
    }
}

static int rr(int argc, char **argv)
{
    const char *addr = NULL, *upath = NULL, *cgroup = NULL;
    size_t size = 64;
    int conns = 1, opt;
    double seconds = 1;
    long max = 1000000;
    while ((opt = getopt(argc, argv, "a:u:s:c:d:n:g:")) != -1) {
        switch (opt) {
        case 'a': addr = optarg; break;
        case 'u': upath = optarg; break;
        case 's': size = strtoul(optarg, NULL, 0); break;
        case 'c': conns = atoi(optarg); break;
        case 'd': seconds = atof(optarg); break;
        case 'n': max = atol(optarg); break;
        case 'g': cgroup = optarg; break;
        default: return 2;
        }
    }
    if (conns < 1 || conns > MAX_CONNS || size < 1 || max < conns || seconds <= 0 || seconds > 60) {
        fprintf(stderr, "datapath_rr: bad arguments\n");
        return 2;
    }
    if (cgroup)
        join_cgroup(cgroup);
    signal(SIGPIPE, SIG_IGN);
    struct target t;
    parse_target(addr, upath, &t);
    struct worker ws[MAX_CONNS];
    long per = max / conns;
    float *lat = calloc((size_t)per * conns, sizeof *lat);
    if (!lat)
        die("calloc");
    pthread_barrier_init(&start_line, NULL, conns + 1);
    for (int i = 0; i < conns; i++) {
        ws[i] = (struct worker){.fd = dial(&t), .size = size, .max = per, .lat = lat + (size_t)i * per};
    }
    /* a warm-up round trip on each connection, outside the timing */
    char *buf = malloc(size);
    memset(buf, 'w', size);
    for (int i = 0; i < conns; i++)
        if (write_all(ws[i].fd, buf, size) < 0 || read_all(ws[i].fd, buf, size) < 0)
            die("warm-up");
    free(buf);
    for (int i = 0; i < conns; i++)
        if (pthread_create(&ws[i].th, NULL, rr_worker, &ws[i]) != 0)
            die("pthread_create");
    cpu_at_start = cpu_seconds();
    t_start = now();
    for (int i = 0; i < conns; i++)
        ws[i].deadline = t_start + seconds;
    pthread_barrier_wait(&start_line);
    long total = 0;
    int failed = 0;
    for (int i = 0; i < conns; i++) {
        pthread_join(ws[i].th, NULL);
        failed |= ws[i].failed;
    }
    double elapsed = now() - t_start;
    /* pack the samples */
    for (int i = 0; i < conns; i++) {
        memmove(lat + total, ws[i].lat, ws[i].count * sizeof *lat);
        total += ws[i].count;
        close(ws[i].fd);
    }
    report("rr", total, elapsed, lat, failed);
    return failed ? 1 : 0;
}

/* Send SIZE bytes and read SIZE back. */
static int one_request(int fd, char *buf, size_t size)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (write_all(fd, buf, size) < 0)
        return -1;
    return read_all(fd, buf, size);
}

static int conn(int argc, char **argv)
{
    const char *addr = NULL, *cgroup = NULL;
    double seconds = 1;
    long max = 1000000, request = 0;
    int opt;
    while ((opt = getopt(argc, argv, "a:d:n:g:r:")) != -1) {
        switch (opt) {
        case 'a': addr = optarg; break;
        case 'r': request = atol(optarg); break;
        case 'd': seconds = atof(optarg); break;
        case 'n': max = atol(optarg); break;
        case 'g': cgroup = optarg; break;
        default: return 2;
        }
    }
    if (max < 1 || seconds <= 0 || seconds > 60 || request < 0 || request > 16384) {
        fprintf(stderr, "datapath_rr: bad arguments\n");
        return 2;
    }
    if (cgroup)
        join_cgroup(cgroup);
    signal(SIGPIPE, SIG_IGN);   /* a peer gone before the request: an error, not a signal */
    struct target t;
    parse_target(addr, NULL, &t);
    float *lat = calloc(max, sizeof *lat);
    if (!lat)
        die("calloc");
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    long count = 0;
    int failed = 0;
    static char req[16384];
    memset(req, 'q', sizeof req);
    /* warm-up */
    for (int i = 0; i < 10; i++) {
        int fd = dial(&t);
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(fd);
    }
    cpu_at_start = cpu_seconds();
    double start = now(), deadline = start + seconds;
    while (count < max) {
        double t0 = now();
        if (t0 >= deadline)
            break;
        int fd = socket(t.in.ss.ss_family, SOCK_STREAM, 0);
        if (fd < 0)
            die("socket");
        if (connect(fd, (const struct sockaddr *)&t.in.ss, t.in.len) < 0) {
            fprintf(stderr, "datapath_rr: connect: %s\n", strerror(errno));
            failed = 1;
            close(fd);
            break;
        }
        if (request && one_request(fd, req, (size_t)request) < 0) {
            fprintf(stderr, "datapath_rr: request: %s\n", strerror(errno));
            failed = 1;
            close(fd);
            break;
        }
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(fd);
        lat[count++] = (float)((now() - t0) * 1e6);
    }
    report("conn", count, now() - start, lat, failed);
    return failed ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: datapath_rr serve|rr|conn ...\n");
        return 2;
    }
    if (!strcmp(argv[1], "serve"))
        return serve(argc - 1, argv + 1);
    if (!strcmp(argv[1], "rr"))
        return rr(argc - 1, argv + 1);
    if (!strcmp(argv[1], "conn"))
        return conn(argc - 1, argv + 1);
    fprintf(stderr, "datapath_rr: unknown mode %s\n", argv[1]);
    return 2;
}
