/*
 * W13's floor: the hello-world HTTP/1.1 keep-alive server written straight
 * on epoll, with no runtime and no HTTP library. It answers with the same
 * bytes as examples/http_server.rs and the tokio peer (status line,
 * content-type, content-length, date, body), so what it costs per request
 * is little more than the kernel's TCP and the two system calls: about
 * the most requests per CPU-second a server on this machine reaches with
 * one receive and one send per request.
 *
 *     gcc -O2 -o w13-http-floor benches/peers/floor/w13_http.c
 *     w13-http-floor 127.0.0.1:PORT
 *
 * One thread, level-triggered epoll, nonblocking sockets, TCP_NODELAY.
 * Each readable connection gets one read(); every complete request in what
 * it read ("\r\n\r\n"-terminated, no body: GET) gets a response, all of
 * them in one write(). A write the socket cannot take whole keeps the rest
 * and waits for EPOLLOUT. `GET /` answers 200 `Hello, World!`, anything
 * else 404 `Not Found`. Exits 0 on SIGTERM or SIGINT.
 */
#include "w13_common.h"

#include <errno.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <unistd.h>

#define IN_CAP 8192
#define OUT_CAP 65536

struct conn {
    int fd;
    size_t in_len;
    size_t out_len, out_off;
    int blocked; /* waiting for EPOLLOUT with out[out_off..out_len] */
    char in[IN_CAP];
    char out[OUT_CAP];
};

/* Writes what is pending; 0 when all of it went (or the socket is full:
 * then EPOLLOUT is armed), -1 when the connection is done for. */
static int flush_out(int ep, struct conn *c) {
    while (c->out_off < c->out_len) {
        ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN) return -1;
            if (c->blocked) return 0;
            c->blocked = 1;
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
            return epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        }
        c->out_off += (size_t)w;
    }
    c->out_len = c->out_off = 0;
    return 0;
}

static void drop_conn(struct conn *c) {
    close(c->fd);
    free(c);
}

/* One read, every complete request answered; -1 when the connection ends. */
static int on_readable(int ep, struct conn *c) {
    ssize_t r = read(c->fd, c->in + c->in_len, IN_CAP - c->in_len);
    if (r == 0) return -1;
    if (r < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
    c->in_len += (size_t)r;
    int answered = answer(c->in, &c->in_len, IN_CAP, c->out, &c->out_len, OUT_CAP);
    if (answered < 0) return -1;
    if (answered && !c->blocked) return flush_out(ep, c);
    return 0;
}

int main(int argc, char **argv) {
    install_signals();
    int lfd = listen_on(argc, argv, SOCK_NONBLOCK);
    int one = 1;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    printf("serving http://%s (raw epoll floor)\n", argc > 1 ? argv[1] : "127.0.0.1:8080");
    fflush(stdout);

    struct epoll_event evs[256];
    while (!stop) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *nc = malloc(sizeof *nc);
                    if (!nc) {
                        close(fd);
                        continue;
                    }
                    nc->fd = fd;
                    nc->in_len = nc->out_len = nc->out_off = 0;
                    nc->blocked = 0;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            int dead = 0;
            if (evs[i].events & EPOLLOUT) {
                c->blocked = 0;
                dead = flush_out(ep, c) < 0;
                if (!dead && !c->blocked) {
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
            }
            if (!dead && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                dead = on_readable(ep, c) < 0;
            if (dead) drop_conn(c);
        }
    }
    return 0;
}
