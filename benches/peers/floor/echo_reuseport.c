/* W14's floor: W5's echo server written straight on raw epoll, with N
 * threads, each with its own epoll set and its own listener on
 * 127.0.0.1:PORT (SO_REUSEPORT when N > 1, so that the kernel spreads the
 * connections over the threads); nothing is shared between the threads but
 * the process. The question it answers: on this machine, how much of a
 * second thread's cost per message is the kernel's and the scheduler's,
 * with no event loop library at all.
 *
 * usage: echo_reuseport [--threads N] [--pin] PORT LIFETIME_S   (N: 1 to 64, default 1)
 *
 * --pin: thread i runs only on the i-th CPU of the process's affinity set
 * (modulo its size; sched_setaffinity), instead of wherever the scheduler
 * puts it. Without it, on 2 cores with the load generator on one of them,
 * the kernel's wake-up placement (the load generator's sync wake-ups pull
 * the woken thread to its CPU) can stack both threads beside the load
 * generator.
 *
 * Every thread: one level-triggered epoll set holding its listener, a timerfd
 * (its lifetime) and its connections. The listener is nonblocking; on
 * EPOLLIN it accepts until EAGAIN (accept4, SOCK_NONBLOCK), sets TCP_NODELAY
 * and adds the connection for EPOLLIN. On EPOLLIN a connection is read into
 * the thread's 64 KiB buffer until EAGAIN or a short read, each read written
 * back at once (write inline). Only what a write could not take is kept (a
 * malloc'd copy in a table indexed by fd: a descriptor belongs to one thread,
 * so each slot has one user); the connection then waits for EPOLLOUT only,
 * reading again once it is flushed. EOF or an error closes it. The listeners
 * are all bound before any thread starts, so the group is complete before a
 * client can connect. Each thread stops when its timerfd fires; the process
 * exits 0 once all have. Prints one line on stderr at start and one per
 * thread at the end; nothing on stdout.
 *
 * Written for eventide's benches (benches/run-scaling.sh), gcc -O2 -pthread. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#define MAX_EVENTS 512
#define MAX_THREADS 64
#define BUF_SIZE 65536

typedef struct {
    size_t len, off;
    char data[];
} pending_t;

typedef struct {
    int index, ep, lfd, tfd, cpu; /* cpu: -1 = not pinned */
    unsigned long long turns, events, reads, writes;
    char buf[BUF_SIZE];
} worker_t;

static pending_t **pending; /* indexed by fd; NULL = nothing kept */
static size_t pending_cap;
static int lifetime_s;

static void die(const char *what) {
    fprintf(stderr, "echo_reuseport: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void ctl(worker_t *w, int op, int fd, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.fd = fd};
    if (epoll_ctl(w->ep, op, fd, &ev) < 0) die("epoll_ctl");
}

static void conn_close(int fd) {
    if ((size_t)fd < pending_cap && pending[fd]) {
        free(pending[fd]);
        pending[fd] = NULL;
    }
    close(fd); /* leaves the epoll set too */
}

static void on_accept(worker_t *w) {
    static const int one = 1;
    for (;;) {
        int fd = accept4(w->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE) {
                fprintf(stderr, "echo_reuseport: accept: %s\n", strerror(errno));
                return;
            }
            die("accept4");
        }
        if ((size_t)fd >= pending_cap) {
            fprintf(stderr, "echo_reuseport: fd %d beyond the table (%zu)\n", fd, pending_cap);
            exit(1);
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        ctl(w, EPOLL_CTL_ADD, fd, EPOLLIN);
    }
}

/* Writes BUF[0..N) to FD; what the socket does not take is kept and FD
 * waits for EPOLLOUT. Returns 1 if all went out, 0 if not (kept or closed). */
static int echo_back(worker_t *w, int fd, const char *buf, size_t n) {
    size_t off = 0;
    while (off < n) {
        ssize_t k = write(fd, buf + off, n - off);
        w->writes++;
        if (k < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN) { /* EPIPE, ECONNRESET: the peer is gone */
                conn_close(fd);
                return 0;
            }
            break;
        }
        off += (size_t)k;
    }
    if (off == n) return 1;
    size_t rest = n - off;
    pending_t *p = malloc(sizeof *p + rest);
    if (!p) {
        fprintf(stderr, "echo_reuseport: out of memory\n");
        exit(1);
    }
    memcpy(p->data, buf + off, rest);
    p->len = rest;
    p->off = 0;
    pending[fd] = p;
    ctl(w, EPOLL_CTL_MOD, fd, EPOLLOUT);
    return 0;
}

static void on_readable(worker_t *w, int fd) {
    for (;;) {
        ssize_t n = read(fd, w->buf, BUF_SIZE);
        w->reads++;
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            conn_close(fd); /* ECONNRESET and the like */
            return;
        }
        if (n == 0) {
            conn_close(fd);
            return;
        }
        if (!echo_back(w, fd, w->buf, (size_t)n)) return;
        if (n < BUF_SIZE) return; /* a short read: the socket is empty for now */
    }
}

static void on_writable(worker_t *w, int fd) {
    pending_t *p = pending[fd];
    if (p) {
        while (p->off < p->len) {
            ssize_t k = write(fd, p->data + p->off, p->len - p->off);
            w->writes++;
            if (k < 0) {
                if (errno == EAGAIN) return;
                if (errno == EINTR) continue;
                conn_close(fd);
                return;
            }
            p->off += (size_t)k;
        }
        free(p);
        pending[fd] = NULL;
    }
    ctl(w, EPOLL_CTL_MOD, fd, EPOLLIN);
}

static void *run(void *arg) {
    worker_t *w = arg;
    struct epoll_event evs[MAX_EVENTS];
    if (w->cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(w->cpu, &set);
        if (sched_setaffinity(0, sizeof set, &set) < 0) die("sched_setaffinity");
    }
    for (;;) {
        int n = epoll_wait(w->ep, evs, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        w->turns++;
        w->events += (unsigned long long)n;
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            uint32_t e = evs[i].events;
            if (fd == w->lfd) {
                on_accept(w);
            } else if (fd == w->tfd) {
                fprintf(stderr,
                        "echo_reuseport: thread %d: lifetime over (%llu epoll_wait, %llu events, "
                        "%llu reads, %llu writes)\n",
                        w->index, w->turns, w->events, w->reads, w->writes);
                close(w->lfd);
                return NULL;
            } else if (e & EPOLLOUT) {
                on_writable(w, fd);
            } else if (e & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                on_readable(w, fd);
            }
        }
    }
}

static void setup(worker_t *w, int index, int port, int reuse_port) {
    static const int one = 1;
    w->index = index;
    w->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (w->lfd < 0) die("socket");
    setsockopt(w->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuse_port && setsockopt(w->lfd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
        die("SO_REUSEPORT");
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(w->lfd, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind 127.0.0.1:PORT");
    if (listen(w->lfd, 511) < 0) die("listen");
    w->ep = epoll_create1(EPOLL_CLOEXEC);
    if (w->ep < 0) die("epoll_create1");
    w->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (w->tfd < 0) die("timerfd_create");
    struct itimerspec its = {.it_value = {.tv_sec = lifetime_s}};
    if (timerfd_settime(w->tfd, 0, &its, NULL) < 0) die("timerfd_settime");
    ctl(w, EPOLL_CTL_ADD, w->lfd, EPOLLIN);
    ctl(w, EPOLL_CTL_ADD, w->tfd, EPOLLIN);
}

int main(int argc, char **argv) {
    int threads = 1, pin = 0, arg = 1;
    for (;;) {
        if (argc - arg > 1 && strcmp(argv[arg], "--threads") == 0) {
            threads = atoi(argv[arg + 1]);
            arg += 2;
        } else if (argc - arg > 0 && strcmp(argv[arg], "--pin") == 0) {
            pin = 1;
            arg += 1;
        } else {
            break;
        }
    }
    if (argc - arg != 2 || threads < 1 || threads > MAX_THREADS) {
        fprintf(stderr,
                "usage: echo_reuseport [--threads N] [--pin] PORT LIFETIME_S   (N: 1 to %d)\n",
                MAX_THREADS);
        return 64;
    }
    int cpus[CPU_SETSIZE], ncpus = 0;
    if (pin) {
        cpu_set_t allowed;
        if (sched_getaffinity(0, sizeof allowed, &allowed) < 0) die("sched_getaffinity");
        for (int c = 0; c < CPU_SETSIZE; c++)
            if (CPU_ISSET(c, &allowed)) cpus[ncpus++] = c;
    }
    int port = atoi(argv[arg]);
    lifetime_s = atoi(argv[arg + 1]);
    if (port <= 0 || port > 65535 || lifetime_s <= 0) {
        fprintf(stderr, "echo_reuseport: bad PORT or LIFETIME_S\n");
        return 64;
    }
    alarm((unsigned)lifetime_s + 10); /* a backstop: the timerfds end the threads first */
    signal(SIGPIPE, SIG_IGN);

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    pending_cap = rl.rlim_cur > (1u << 20) ? (1u << 20) : (size_t)rl.rlim_cur;
    pending = calloc(pending_cap, sizeof *pending); /* mmap'd: pages untouched until used */
    if (!pending) die("calloc");

    worker_t *ws = calloc((size_t)threads, sizeof *ws);
    if (!ws) die("calloc");
    for (int i = 0; i < threads; i++) {
        setup(&ws[i], i, port, threads > 1);
        ws[i].cpu = pin ? cpus[i % ncpus] : -1;
    }
    fprintf(stderr, "echo_reuseport: listening on 127.0.0.1:%d, %d thread%s%s%s, for %d s\n", port,
            threads, threads > 1 ? "s" : "", threads > 1 ? ", SO_REUSEPORT" : "",
            pin ? ", pinned" : "", lifetime_s);

    pthread_t tids[MAX_THREADS];
    for (int i = 1; i < threads; i++) {
        errno = pthread_create(&tids[i], NULL, run, &ws[i]);
        if (errno != 0) die("pthread_create");
    }
    run(&ws[0]);
    for (int i = 1; i < threads; i++) pthread_join(tids[i], NULL);
    return 0;
}
