/*
 * loadtool: the load generators and meters behind scripts/bench. Loopback only.
 *
 *   loadtool echo -l 127.0.0.1:PORT
 *       Echo server (one thread, epoll). PORT 0 takes one from the OS; prints "port=N" once
 *       it listens. Runs until SIGTERM or SIGINT.
 *   loadtool rr -c ADDR [-t SECS] [-s BYTES] [-w WARMUP]
 *       Ping-pong on one connection (TCP_NODELAY): write BYTES, read them back, repeat.
 *       WARMUP round trips (500) go before the clock starts: fewer under a load that makes
 *       each one slow, or the warm-up outlasts the load.
 *       Prints "rr_per_s=.. p50_us=.. p99_us=.. n=.. errors=..".
 *   loadtool crr -c ADDR [-t SECS] [-s BYTES] [-P THREADS]
 *       A new connection per exchange: connect, write BYTES, read BYTES, close.
 *       Prints "conn_per_s=.. p50_us=.. p99_us=.. n=.. errors=..".
 *   loadtool ping -c ADDR [-t SECS]
 *       Retries one echo exchange until it works or SECS pass; exit 0 on success.
 *   loadtool hold -c ADDR -n N [-s BYTES] [-t SECS]
 *       Opens N connections, does one BYTES exchange on each (so each is established end to
 *       end), prints "held=.. errors=.. setup_s=..", then keeps them open and idle until
 *       SIGTERM/SIGINT. SECS bounds the setup.
 *   loadtool uecho -l 127.0.0.1:PORT
 *       UDP echo server (one thread, batches of datagrams with recvmmsg/sendmmsg): every
 *       datagram goes back to its sender. Prints "port=N"; runs until SIGTERM or SIGINT.
 *   loadtool udp -c ADDR [-t SECS] [-s BYTES] [-P SENDERS] [-n WINDOW]
 *       SENDERS threads, each with its own socket (one flow through a relay), keep WINDOW
 *       datagrams of BYTES in flight to a UDP echo: one more for each echo back; a window
 *       with no echo for 50 ms counts as lost and is sent anew. Each flow is opened (one
 *       echo) before the clock starts. Prints "dgram_per_s=.. loss_pct=.. sent=..
 *       received=.. bad=.. stalls=.. mbit_s=..": echoes per second over SECS, and the share
 *       of datagrams sent that never came back (echoes that arrive within 200 ms after the
 *       end still count as received).
 *   loadtool watch [-i MS] [-t SECS] [-o OWNPID] [PID...]
 *       Samples the process trees rooted at PID... every MS ms until SIGTERM (or SECS).
 *       Prints "cpu_s=.. wall_s=.. peak_rss_kb=.. nproc=.. busy_pct=.. foreign_pct=..":
 *       CPU seconds the trees used in the window, the machine's busy share (100 = all CPUs),
 *       and with -o the share used by processes outside OWNPID's tree (others' load).
 *   loadtool mem PID...
 *       One sample of the trees: "rss_kb=.. pss_kb=.. nproc=..".
 *
 * Build: gcc -O2 -pthread -o loadtool loadtool.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LAT_BUCKETS 100000 /* 1 us buckets; slower round trips land in the last one */

static volatile sig_atomic_t stop_requested = 0;
static void on_signal(int s) { (void)s; stop_requested = 1; }

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void fail(const char *what) {
    perror(what);
    exit(2);
}

/* Parses "127.x.y.z:PORT"; anything outside 127.0.0.0/8 is refused, so a typo can never
 * send load off the machine. */
static struct sockaddr_in loopback_addr(const char *text) {
    struct sockaddr_in a;
    char host[64];
    const char *colon = strrchr(text, ':');
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    if (!colon || (size_t)(colon - text) >= sizeof host) {
        fprintf(stderr, "bad address '%s' (want 127.x.y.z:PORT)\n", text);
        exit(2);
    }
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = 0;
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1 || (ntohl(a.sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "refusing '%s': loopback (127.0.0.0/8) only\n", host);
        exit(2);
    }
    a.sin_port = htons((uint16_t)atoi(colon + 1));
    return a;
}

/* Every fd we may need: the idle-connection test holds thousands. */
static void raise_fd_limit(void) {
    struct rlimit r;
    if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
        r.rlim_cur = r.rlim_max;
        setrlimit(RLIMIT_NOFILE, &r);
    }
}

static int send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int recv_all(int fd, char *p, size_t n) {
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) return -1; /* the peer closed before echoing everything */
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static void set_deadlines(int fd, double secs) {
    struct timeval tv = {.tv_sec = (time_t)secs,
                         .tv_usec = (suseconds_t)((secs - (double)(time_t)secs) * 1e6)};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static int dial(const struct sockaddr_in *a, double timeout_s) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0) return -1;
    set_deadlines(fd, timeout_s); /* SO_SNDTIMEO also bounds a blocking connect */
    if (connect(fd, (const struct sockaddr *)a, sizeof *a) < 0) {
        close(fd);
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* ------------------------------------------------------------------ latency histogram */
struct histogram {
    uint64_t *bucket;
    uint64_t count;
};

static void hist_init(struct histogram *h) {
    h->bucket = calloc(LAT_BUCKETS, sizeof *h->bucket);
    h->count = 0;
    if (!h->bucket) fail("calloc");
}

static void hist_add(struct histogram *h, double secs) {
    long us = (long)(secs * 1e6);
    if (us < 0) us = 0;
    if (us >= LAT_BUCKETS) us = LAT_BUCKETS - 1;
    h->bucket[us]++;
    h->count++;
}

static void hist_merge(struct histogram *into, const struct histogram *from) {
    for (int i = 0; i < LAT_BUCKETS; i++) into->bucket[i] += from->bucket[i];
    into->count += from->count;
}

static long hist_quantile(const struct histogram *h, double q) {
    uint64_t rank, seen = 0;
    if (!h->count) return 0;
    rank = (uint64_t)(q * (double)h->count);
    if (rank >= h->count) rank = h->count - 1;
    for (int i = 0; i < LAT_BUCKETS; i++) {
        seen += h->bucket[i];
        if (seen > rank) return i;
    }
    return LAT_BUCKETS;
}

/* ------------------------------------------------------------------ echo */
struct echo_conn {
    int fd;
    char *pending; /* what the peer sent but would not take back yet */
    size_t pending_len, pending_off;
};

static void echo_close(struct echo_conn *c) {
    close(c->fd);
    free(c->pending);
    free(c);
}

/* Echoes what is readable; keeps an unsent tail and stops reading until it is flushed,
 * so a slow reader holds at most one buffer here. Returns -1 when the connection ended. */
static int echo_service(int ep, struct echo_conn *c, char *buf, size_t cap) {
    if (c->pending) {
        ssize_t w = write(c->fd, c->pending + c->pending_off, c->pending_len - c->pending_off);
        if (w < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
        c->pending_off += (size_t)w;
        if (c->pending_off < c->pending_len) return 0;
        free(c->pending);
        c->pending = NULL;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        return 0;
    }
    ssize_t r = read(c->fd, buf, cap);
    if (r == 0) return -1;
    if (r < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
    ssize_t w = write(c->fd, buf, (size_t)r);
    if (w < 0) {
        if (errno != EAGAIN) return -1;
        w = 0;
    }
    if (w < r) {
        c->pending_len = (size_t)(r - w);
        c->pending_off = 0;
        c->pending = malloc(c->pending_len);
        if (!c->pending) return -1;
        memcpy(c->pending, buf + w, c->pending_len);
        struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
    return 0;
}

static int run_echo(const char *where) {
    struct sockaddr_in a = loopback_addr(where);
    socklen_t alen = sizeof a;
    int one = 1;
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (ls < 0) fail("socket");
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0) fail("bind");
    if (listen(ls, 4096) < 0) fail("listen");
    if (getsockname(ls, (struct sockaddr *)&a, &alen) < 0) fail("getsockname");
    printf("port=%d\n", ntohs(a.sin_port));
    fflush(stdout);

    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &lev);
    static char buf[1 << 16];
    struct epoll_event events[256];
    while (!stop_requested) {
        int n = epoll_wait(ep, events, 256, 500);
        if (n < 0) {
            if (errno == EINTR) continue;
            fail("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            struct echo_conn *c = events[i].data.ptr;
            if (!c) { /* the listener: take every queued connection */
                for (;;) {
                    int fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) break;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct echo_conn *nc = calloc(1, sizeof *nc);
                    if (!nc) {
                        close(fd);
                        continue;
                    }
                    nc->fd = fd;
                    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            if (echo_service(ep, c, buf, sizeof buf) < 0) echo_close(c);
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ rr */
static int run_rr(const char *where, double secs, int size, int warmup) {
    struct sockaddr_in a = loopback_addr(where);
    int fd = dial(&a, 5.0);
    if (fd < 0) fail("connect");
    char *b = malloc((size_t)size);
    if (!b) fail("malloc");
    memset(b, 'r', (size_t)size);
    for (int i = 0; i < warmup; i++) /* warm the path up before the clock starts */
        if (send_all(fd, b, (size_t)size) || recv_all(fd, b, (size_t)size)) fail("rr warm-up");
    struct histogram h;
    hist_init(&h);
    uint64_t errors = 0;
    double start = now(), end = start + secs, t = start;
    while (t < end && !stop_requested) {
        double s = t;
        if (send_all(fd, b, (size_t)size) || recv_all(fd, b, (size_t)size)) {
            errors++;
            break;
        }
        t = now();
        hist_add(&h, t - s);
    }
    double elapsed = t - start;
    printf("rr_per_s=%.1f p50_us=%ld p99_us=%ld n=%llu errors=%llu\n",
           elapsed > 0 ? (double)h.count / elapsed : 0.0, hist_quantile(&h, .50),
           hist_quantile(&h, .99), (unsigned long long)h.count, (unsigned long long)errors);
    close(fd);
    return errors ? 1 : 0;
}

/* ------------------------------------------------------------------ crr */
struct crr_worker {
    struct sockaddr_in addr;
    double end;
    int size;
    uint64_t errors;
    struct histogram h;
};

static void *crr_loop(void *arg) {
    struct crr_worker *w = arg;
    char *b = malloc((size_t)w->size);
    if (!b) return NULL;
    memset(b, 'c', (size_t)w->size);
    double t = now();
    while (t < w->end && !stop_requested) {
        double s = t;
        int fd = dial(&w->addr, 5.0);
        int ok = fd >= 0 && !send_all(fd, b, (size_t)w->size) && !recv_all(fd, b, (size_t)w->size);
        if (fd >= 0) close(fd);
        t = now();
        if (ok) {
            hist_add(&w->h, t - s);
        } else {
            w->errors++;
            usleep(1000); /* don't spin on a path that refuses */
            t = now();
        }
    }
    free(b);
    return NULL;
}

static int run_crr(const char *where, double secs, int size, int threads) {
    struct sockaddr_in a = loopback_addr(where);
    if (threads < 1) threads = 1;
    if (threads > 64) threads = 64;
    for (int i = 0; i < 10; i++) { /* warm-up, and proof the path answers at all */
        char b = 'w';
        int fd = dial(&a, 5.0);
        if (fd < 0) fail("crr warm-up connect");
        if (send_all(fd, &b, 1) || recv_all(fd, &b, 1)) fail("crr warm-up exchange");
        close(fd);
    }
    pthread_t tid[64];
    struct crr_worker w[64];
    double start = now();
    for (int i = 0; i < threads; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].addr = a;
        w[i].end = start + secs;
        w[i].size = size;
        hist_init(&w[i].h);
        pthread_create(&tid[i], NULL, crr_loop, &w[i]);
    }
    struct histogram all;
    uint64_t errors = 0;
    hist_init(&all);
    for (int i = 0; i < threads; i++) {
        pthread_join(tid[i], NULL);
        hist_merge(&all, &w[i].h);
        errors += w[i].errors;
    }
    double elapsed = now() - start;
    printf("conn_per_s=%.1f p50_us=%ld p99_us=%ld n=%llu errors=%llu\n",
           elapsed > 0 ? (double)all.count / elapsed : 0.0, hist_quantile(&all, .50),
           hist_quantile(&all, .99), (unsigned long long)all.count, (unsigned long long)errors);
    return 0;
}

/* ------------------------------------------------------------------ ping */
static int run_ping(const char *where, double secs) {
    struct sockaddr_in a = loopback_addr(where);
    double end = now() + secs;
    while (now() < end && !stop_requested) {
        int fd = dial(&a, 1.0);
        if (fd >= 0) {
            char b[4] = {'p', 'i', 'n', 'g'};
            int ok = !send_all(fd, b, 4) && !recv_all(fd, b, 4) && !memcmp(b, "ping", 4);
            close(fd);
            if (ok) return 0;
        }
        usleep(50000);
    }
    fprintf(stderr, "ping %s: no echo within %.1f s\n", where, secs);
    return 1;
}

/* ------------------------------------------------------------------ hold */
/* Opens connections in batches: connect a batch, send on each, then collect each echo.
 * Batching keeps many exchanges in flight without an event loop, and a path that accepts
 * slowly only slows the batch down. */
static int run_hold(const char *where, int want, int size, double secs) {
    struct sockaddr_in a = loopback_addr(where);
    const int batch = 200;
    int *fds = calloc((size_t)want, sizeof *fds);
    char *out = malloc((size_t)size), *in = malloc((size_t)size);
    if (!fds || !out || !in) fail("malloc");
    memset(out, 'h', (size_t)size);
    raise_fd_limit();
    double start = now(), deadline = start + secs;
    int held = 0, errors = 0;
    while (held < want && now() < deadline && !stop_requested && errors < 100) {
        int n = want - held < batch ? want - held : batch;
        int got = 0;
        for (int i = 0; i < n; i++) {
            int fd = dial(&a, 10.0);
            if (fd < 0) {
                errors++;
                if (errno == EMFILE || errno == ENFILE) {
                    fprintf(stderr, "hold: out of file descriptors at %d\n", held + got);
                    want = held + got; /* report what we could hold */
                    break;
                }
                continue;
            }
            if (send_all(fd, out, (size_t)size)) {
                errors++;
                close(fd);
                continue;
            }
            fds[held + got++] = fd;
        }
        /* collect the echoes of this batch; a connection that does not answer is dropped */
        int kept = 0;
        for (int i = 0; i < got; i++) {
            int fd = fds[held + i];
            if (recv_all(fd, in, (size_t)size) || memcmp(in, out, (size_t)size)) {
                errors++;
                close(fd);
                continue;
            }
            fds[held + kept++] = fd;
        }
        held += kept;
    }
    printf("held=%d errors=%d setup_s=%.2f\n", held, errors, now() - start);
    fflush(stdout);
    while (!stop_requested) pause();
    for (int i = 0; i < held; i++) close(fds[i]);
    return 0;
}

/* ------------------------------------------------------------------ udp */
#define UDP_BATCH 64
#define UDP_MAX 65536
#define UDP_STALL_S 0.05 /* a window with no echo for this long is taken as lost */

/* Room for many whole datagrams: the kernel drops what does not fit, and the load tools
 * must not be what loses them. Beyond net.core.rmem_max only root gets more (FORCE). */
static void udp_buffers(int fd) {
    int size = 4 << 20;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) < 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
}

/* One thread; receives up to UDP_BATCH datagrams per call and sends them back in one call,
 * so that the echo costs the machine much less than the relays it is used to measure. */
static int run_uecho(const char *where) {
    struct sockaddr_in a = loopback_addr(where);
    socklen_t alen = sizeof a;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) fail("socket");
    udp_buffers(fd);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) fail("bind");
    if (getsockname(fd, (struct sockaddr *)&a, &alen) < 0) fail("getsockname");
    printf("port=%d\n", ntohs(a.sin_port));
    fflush(stdout);

    static char bufs[UDP_BATCH][UDP_MAX];
    static struct mmsghdr msgs[UDP_BATCH];
    static struct iovec iov[UDP_BATCH];
    static struct sockaddr_in peers[UDP_BATCH];
    while (!stop_requested) {
        for (int i = 0; i < UDP_BATCH; i++) {
            iov[i].iov_base = bufs[i];
            iov[i].iov_len = UDP_MAX;
            memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = &peers[i];
            msgs[i].msg_hdr.msg_namelen = sizeof peers[i];
        }
        int n = recvmmsg(fd, msgs, UDP_BATCH, MSG_WAITFORONE, NULL);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            fail("recvmmsg");
        }
        for (int i = 0; i < n; i++) iov[i].iov_len = msgs[i].msg_len;
        for (int done = 0; done < n;) {
            int m = sendmmsg(fd, msgs + done, (unsigned)(n - done), 0);
            if (m <= 0) {
                if (m < 0 && errno == EINTR) continue;
                break; /* UDP: what cannot go now is dropped, as by any relay */
            }
            done += m;
        }
    }
    return 0;
}

struct udp_worker {
    int fd, size, window;
    double start, end;
    uint64_t sent, received, in_time, bad, stalls;
};

static void *udp_loop(void *arg) {
    struct udp_worker *w = arg;
    char *out = malloc((size_t)w->size + 1);
    char *in = malloc((size_t)UDP_BATCH * ((size_t)w->size + 1));
    struct mmsghdr *smsg = calloc((size_t)w->window, sizeof *smsg);
    struct iovec *siov = calloc((size_t)w->window, sizeof *siov);
    struct mmsghdr rmsg[UDP_BATCH];
    struct iovec riov[UDP_BATCH];
    if (!out || !in || !smsg || !siov) fail("malloc");
    memset(out, 'u', (size_t)w->size);
    for (int i = 0; i < w->window; i++) { /* every datagram of a window is the same bytes */
        siov[i].iov_base = out;
        siov[i].iov_len = (size_t)w->size;
        smsg[i].msg_hdr.msg_iov = &siov[i];
        smsg[i].msg_hdr.msg_iovlen = 1;
    }
    set_deadlines(w->fd, UDP_STALL_S);
    int inflight = 0;
    double t = now(), drain_end = w->end + 0.2;
    while (!stop_requested && t < drain_end) {
        int sending = t < w->end;
        if (!sending && inflight <= 0) break;
        if (sending && inflight < w->window) {
            int m = sendmmsg(w->fd, smsg, (unsigned)(w->window - inflight), 0);
            if (m > 0) {
                w->sent += (uint64_t)m;
                inflight += m;
            } else if (m < 0 && errno != ECONNREFUSED && errno != EINTR && errno != EAGAIN &&
                       errno != ENOBUFS) {
                perror("udp sendmmsg");
                break;
            }
        }
        for (int i = 0; i < UDP_BATCH; i++) {
            riov[i].iov_base = in + (size_t)i * ((size_t)w->size + 1);
            riov[i].iov_len = (size_t)w->size + 1; /* one byte more shows a longer datagram */
            memset(&rmsg[i].msg_hdr, 0, sizeof rmsg[i].msg_hdr);
            rmsg[i].msg_hdr.msg_iov = &riov[i];
            rmsg[i].msg_hdr.msg_iovlen = 1;
        }
        int n = recvmmsg(w->fd, rmsg, UDP_BATCH, MSG_WAITFORONE, NULL);
        t = now();
        if (n > 0) {
            for (int i = 0; i < n; i++)
                if (rmsg[i].msg_len != (unsigned)w->size) w->bad++;
            w->received += (uint64_t)n;
            if (t <= w->end) w->in_time += (uint64_t)n;
            inflight -= n;
            if (inflight < 0) inflight = 0; /* late echoes of a window given up */
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (t < w->end) w->stalls++;
            inflight = 0; /* the window is lost: send a new one */
        } else if (n < 0 && errno != EINTR && errno != ECONNREFUSED) {
            perror("udp recvmmsg");
            break;
        }
    }
    free(out);
    free(in);
    free(smsg);
    free(siov);
    return NULL;
}

/* One echo through a new flow, retried: opens the flow (a relay's child process or
 * tunnel stream) before the clock starts. */
static int udp_open_flow(int fd, int size) {
    char *b = calloc(1, (size_t)size + 1);
    int ok = 0;
    if (!b) fail("calloc");
    set_deadlines(fd, 0.5);
    for (int i = 0; i < 20 && !ok && !stop_requested; i++) {
        if (send(fd, b, (size_t)size, 0) < 0 && errno != ECONNREFUSED) break;
        ssize_t r = recv(fd, b, (size_t)size + 1, 0);
        ok = r == size;
    }
    free(b);
    return ok;
}

static int run_udp(const char *where, double secs, int size, int senders, int window) {
    struct sockaddr_in a = loopback_addr(where);
    struct sockaddr_in local;
    memset(&local, 0, sizeof local);
    local.sin_family = AF_INET;
    local.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (senders < 1) senders = 1;
    if (senders > 64) senders = 64;
    if (window < 1) window = 1;
    if (window > 1024) window = 1024;
    if (size > 65507) size = 65507;
    pthread_t tid[64];
    struct udp_worker w[64];
    for (int i = 0; i < senders; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (w[i].fd < 0) fail("socket");
        udp_buffers(w[i].fd);
        if (bind(w[i].fd, (struct sockaddr *)&local, sizeof local) < 0) fail("bind");
        if (connect(w[i].fd, (struct sockaddr *)&a, sizeof a) < 0) fail("connect");
        if (!udp_open_flow(w[i].fd, size)) {
            fprintf(stderr, "udp %s: flow %d got no echo within 10 s\n", where, i);
            return 1;
        }
        w[i].size = size;
        w[i].window = window;
    }
    double start = now();
    for (int i = 0; i < senders; i++) {
        w[i].start = start;
        w[i].end = start + secs;
        pthread_create(&tid[i], NULL, udp_loop, &w[i]);
    }
    uint64_t sent = 0, received = 0, in_time = 0, bad = 0, stalls = 0;
    for (int i = 0; i < senders; i++) {
        pthread_join(tid[i], NULL);
        sent += w[i].sent;
        received += w[i].received;
        in_time += w[i].in_time;
        bad += w[i].bad;
        stalls += w[i].stalls;
        close(w[i].fd);
    }
    double rate = secs > 0 ? (double)in_time / secs : 0;
    double loss = sent ? 100.0 * (double)(sent > received ? sent - received : 0) / (double)sent : 0;
    printf("dgram_per_s=%.1f loss_pct=%.3f sent=%llu received=%llu bad=%llu stalls=%llu "
           "mbit_s=%.1f\n",
           rate, loss, (unsigned long long)sent, (unsigned long long)received,
           (unsigned long long)bad, (unsigned long long)stalls, rate * size * 8 / 1e6);
    return bad ? 1 : 0;
}

/* ------------------------------------------------------------------ process meters */
#define MAX_PROCS 16384

struct proc {
    int pid, ppid;
    unsigned long long ticks; /* utime + stime + reaped children's */
    long rss_pages;
    char zombie;
};

static struct proc procs[MAX_PROCS];
static char in_tree[MAX_PROCS];

static int read_proc(int pid, struct proc *p) {
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t r = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (r <= 0) return -1;
    buf[r] = 0;
    char *rest = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    if (!rest || rest[1] == 0) return -1;
    char state;
    int ppid;
    unsigned long long ut, st;
    long long cut, cst;
    long rss;
    /* fields 3.. of proc(5): state ppid pgrp session tty tpgid flags minflt cminflt majflt
     * cmajflt utime stime cutime cstime priority nice threads itrealvalue starttime vsize rss */
    if (sscanf(rest + 2,
               "%c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %lld %lld %*d %*d %*d %*d "
               "%*u %*u %ld",
               &state, &ppid, &ut, &st, &cut, &cst, &rss) != 7)
        return -1;
    p->pid = pid;
    p->ppid = ppid;
    p->ticks = ut + st + (unsigned long long)(cut > 0 ? cut : 0) +
               (unsigned long long)(cst > 0 ? cst : 0);
    p->zombie = state == 'Z';
    p->rss_pages = p->zombie ? 0 : rss;
    return 0;
}

static int scan_procs(void) {
    int n = 0;
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d)) && n < MAX_PROCS) {
        if (!isdigit((unsigned char)e->d_name[0])) continue;
        if (read_proc(atoi(e->d_name), &procs[n]) == 0) n++;
    }
    if (d) closedir(d);
    return n;
}

/* Marks the roots and everything descending from them. */
static void mark_trees(int n, const int *roots, int nroots) {
    memset(in_tree, 0, (size_t)n);
    for (int i = 0; i < n; i++)
        for (int r = 0; r < nroots; r++)
            if (procs[i].pid == roots[r]) in_tree[i] = 1;
    for (int changed = 1; changed;) {
        changed = 0;
        for (int i = 0; i < n; i++) {
            if (in_tree[i]) continue;
            for (int j = 0; j < n; j++) {
                if (in_tree[j] && procs[i].ppid == procs[j].pid) {
                    in_tree[i] = 1;
                    changed = 1;
                    break;
                }
            }
        }
    }
}

static long pss_kb(int pid) {
    char path[64], line[256];
    long v = 0;
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", pid);
    FILE *f = fopen(path, "re");
    if (!f) return 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "Pss:", 4)) {
            v = atol(line + 4);
            break;
        }
    fclose(f);
    return v;
}

struct tree_sample {
    unsigned long long ticks, own_ticks;
    long rss_kb, pss_kb;
    int nproc;
};

static struct tree_sample sample_trees(const int *roots, int nroots, int own, int with_pss) {
    struct tree_sample s = {0};
    long page_kb = sysconf(_SC_PAGESIZE) / 1024;
    int n = scan_procs();
    if (nroots > 0) {
        mark_trees(n, roots, nroots);
        for (int i = 0; i < n; i++) {
            if (!in_tree[i]) continue;
            s.nproc++;
            s.ticks += procs[i].ticks;
            s.rss_kb += procs[i].rss_pages * page_kb;
            if (with_pss && !procs[i].zombie) s.pss_kb += pss_kb(procs[i].pid);
        }
    }
    if (own > 0) {
        mark_trees(n, &own, 1);
        for (int i = 0; i < n; i++)
            if (in_tree[i]) s.own_ticks += procs[i].ticks;
    }
    return s;
}

/* /proc/stat's first line: total ticks, busy ticks (all but idle and iowait) and the ticks
 * charged to processes (user, nice, system), comparable with per-process utime + stime. */
static void machine_ticks(unsigned long long *total, unsigned long long *busy,
                          unsigned long long *charged) {
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "re");
    if (f) {
        if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]) < 4)
            memset(v, 0, sizeof v);
        fclose(f);
    }
    *total = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
    *busy = *total - v[3] - v[4];
    *charged = v[0] + v[1] + v[2];
}

static int run_watch(int interval_ms, double max_s, const int *roots, int nroots, int own) {
    long hz = sysconf(_SC_CLK_TCK);
    unsigned long long t0, b0, c0, t1, b1, c1;
    machine_ticks(&t0, &b0, &c0);
    double w0 = now();
    struct tree_sample first = sample_trees(roots, nroots, own, 0), last = first;
    long peak_rss = first.rss_kb;
    int peak_n = first.nproc;
    while (!stop_requested && (max_s <= 0 || now() - w0 < max_s)) {
        struct timespec ts = {.tv_sec = interval_ms / 1000,
                              .tv_nsec = (long)(interval_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        last = sample_trees(roots, nroots, own, 0);
        if (last.rss_kb > peak_rss) peak_rss = last.rss_kb;
        if (last.nproc > peak_n) peak_n = last.nproc;
    }
    machine_ticks(&t1, &b1, &c1);
    double wall = now() - w0;
    /* a process that left the tree takes its ticks along: never report a negative count */
    double cpu = last.ticks >= first.ticks ? (double)(last.ticks - first.ticks) / (double)hz : 0;
    double busy = t1 > t0 ? 100.0 * (double)(b1 - b0) / (double)(t1 - t0) : 0;
    printf("cpu_s=%.2f wall_s=%.2f peak_rss_kb=%ld nproc=%d busy_pct=%.1f", cpu, wall, peak_rss,
           peak_n, busy);
    if (own > 0 && t1 > t0) {
        double mine = last.own_ticks >= first.own_ticks
                          ? (double)(last.own_ticks - first.own_ticks)
                          : 0;
        double foreign = 100.0 * ((double)(c1 - c0) - mine) / (double)(t1 - t0);
        printf(" foreign_pct=%.1f", foreign < 0 ? 0.0 : foreign);
    }
    printf("\n");
    fflush(stdout);
    return 0;
}

static int run_mem(const int *roots, int nroots) {
    struct tree_sample s = sample_trees(roots, nroots, 0, 1);
    printf("rss_kb=%ld pss_kb=%ld nproc=%d\n", s.rss_kb, s.pss_kb, s.nproc);
    return s.nproc ? 0 : 1;
}

/* ------------------------------------------------------------------ main */
static void usage(void) {
    fprintf(stderr,
            "usage: loadtool echo -l ADDR | rr -c ADDR [-t S] [-s B] [-w N] |"
            " crr -c ADDR [-t S] [-s B] [-P N] | ping -c ADDR [-t S] |"
            " hold -c ADDR -n N [-s B] [-t S] | uecho -l ADDR |"
            " udp -c ADDR [-t S] [-s B] [-P N] [-n W] | watch [-i MS] [-t S] [-o PID] [PID...] |"
            " mem PID...\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 2) usage();
    const char *mode = argv[1], *addr = NULL;
    double secs = -1;
    int size = 1, threads = 4, interval = 100, own = 0, count = 0, warmup = 500, opt;
    optind = 2;
    while ((opt = getopt(argc, argv, "l:c:t:s:P:i:o:n:w:")) != -1) {
        switch (opt) {
        case 'l':
        case 'c': addr = optarg; break;
        case 't': secs = atof(optarg); break;
        case 's': size = atoi(optarg); break;
        case 'P': threads = atoi(optarg); break;
        case 'i': interval = atoi(optarg); break;
        case 'o': own = atoi(optarg); break;
        case 'n': count = atoi(optarg); break;
        case 'w': warmup = atoi(optarg); break;
        default: usage();
        }
    }
    if (size < 1 || size > (1 << 20)) size = 1;
    if (interval < 10) interval = 10;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: sleeps and waits return on a signal */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    int roots[64], nroots = 0;
    for (int i = optind; i < argc && nroots < 64; i++) roots[nroots++] = atoi(argv[i]);

    if (!strcmp(mode, "echo") && addr) {
        raise_fd_limit();
        return run_echo(addr);
    }
    if (warmup < 0) warmup = 0;
    if (!strcmp(mode, "rr") && addr) return run_rr(addr, secs < 0 ? 5 : secs, size, warmup);
    if (!strcmp(mode, "crr") && addr) return run_crr(addr, secs < 0 ? 5 : secs, size, threads);
    if (!strcmp(mode, "ping") && addr) return run_ping(addr, secs < 0 ? 10 : secs);
    if (!strcmp(mode, "hold") && addr && count > 0)
        return run_hold(addr, count, size, secs < 0 ? 120 : secs);
    if (!strcmp(mode, "uecho") && addr) return run_uecho(addr);
    if (!strcmp(mode, "udp") && addr)
        return run_udp(addr, secs < 0 ? 5 : secs, size, threads, count > 0 ? count : 32);
    if (!strcmp(mode, "watch")) return run_watch(interval, secs < 0 ? 600 : secs, roots, nroots, own);
    if (!strcmp(mode, "mem") && nroots) return run_mem(roots, nroots);
    usage();
    return 2;
}
