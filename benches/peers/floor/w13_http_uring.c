/*
 * W13's io_uring floor: the hello-world HTTP/1.1 keep-alive server of
 * w13_http.c (the same response bytes, the same minimal parse) written
 * straight on io_uring with liburing, as an io_uring event loop would use
 * it at its best: one ring with SINGLE_ISSUER | DEFER_TASKRUN (when the
 * kernel takes them), a multishot accept, a multishot receive per
 * connection into a ring of provided buffers, and one send per connection
 * at a time, every submission of a turn going in the one io_uring_enter
 * that also waits. What it costs per request is little more than the
 * kernel's TCP and io_uring's own work: about the most requests per
 * CPU-second an io_uring server reaches on this machine.
 *
 *     gcc -O2 -o w13-http-floor-uring benches/peers/floor/w13_http_uring.c -luring
 *     w13-http-floor-uring 127.0.0.1:PORT
 *
 * Needs liburing (Debian's liburing-dev, 2.3 or later) and a kernel with
 * multishot receive and provided-buffer rings (6.0 or later). `GET /`
 * answers 200 `Hello, World!`, anything else 404 `Not Found`. Exits 0 on
 * SIGTERM or SIGINT.
 */
#include "w13_common.h"

#include <errno.h>
#include <liburing.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
#include <unistd.h>

#define IN_CAP 8192
#define OUT_CAP 65536
#define NBUF 1024 /* provided buffers (a power of two) */
#define BUF_SIZE 4096
#define BGID 7

enum { OP_ACCEPT = 0, OP_RECV = 1, OP_SEND = 2 };

struct conn {
    int fd;
    int recv_armed; /* a multishot receive is in the kernel */
    int sending;    /* a send of out[out_off..out_len] is in the kernel */
    int ended;      /* the peer ended or an error: free once nothing is in flight */
    size_t in_len;
    size_t out_len, out_off;
    size_t next_len; /* responses waiting behind the send in flight */
    char in[IN_CAP];
    char out[OUT_CAP];
    char next[OUT_CAP];
};

static struct io_uring ring;
static struct io_uring_buf_ring *br;
static char *bufs;

static struct io_uring_sqe *sqe_get(void) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    if (!sqe) { /* the submission queue is full: hand it to the kernel */
        io_uring_submit(&ring);
        sqe = io_uring_get_sqe(&ring);
    }
    return sqe;
}

static void arm_accept(int lfd) {
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_multishot_accept(sqe, lfd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, OP_ACCEPT);
}

static void arm_recv(struct conn *c) {
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BGID;
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)c | OP_RECV);
    c->recv_armed = 1;
}

static void send_out(struct conn *c) {
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_send(sqe, c->fd, c->out + c->out_off, c->out_len - c->out_off, 0);
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)c | OP_SEND);
    c->sending = 1;
}

static void maybe_free(struct conn *c) {
    if (c->ended && !c->recv_armed && !c->sending) {
        close(c->fd);
        free(c);
    }
}

/* The connection is done for (the peer's end, an error, a request too
 * large): its receive is cancelled, and it goes once nothing of it is in
 * the kernel. */
static void end_conn(struct conn *c) {
    c->ended = 1;
    if (c->recv_armed) {
        struct io_uring_sqe *sqe = sqe_get();
        io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)c | OP_RECV, 0);
        io_uring_sqe_set_data64(sqe, 3); /* the cancel's own completion: ignored */
    }
    maybe_free(c);
}

/* New bytes in c->in: answers every complete request (behind the send in
 * flight, if any); -1 ends the connection. */
static int on_data(struct conn *c) {
    int answered = c->sending ? answer(c->in, &c->in_len, IN_CAP, c->next, &c->next_len, OUT_CAP)
                              : answer(c->in, &c->in_len, IN_CAP, c->out, &c->out_len, OUT_CAP);
    if (answered < 0) return -1;
    if (answered && !c->sending) send_out(c);
    return 0;
}

static void on_recv(struct conn *c, int res, unsigned flags) {
    if (!(flags & IORING_CQE_F_MORE)) c->recv_armed = 0;
    if (res > 0 && (flags & IORING_CQE_F_BUFFER)) {
        unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
        size_t n = (size_t)res;
        if (n > IN_CAP - c->in_len) n = IN_CAP - c->in_len;
        memcpy(c->in + c->in_len, bufs + (size_t)bid * BUF_SIZE, n);
        c->in_len += n;
        io_uring_buf_ring_add(br, bufs + (size_t)bid * BUF_SIZE, BUF_SIZE, (unsigned short)bid,
                              io_uring_buf_ring_mask(NBUF), 0);
        io_uring_buf_ring_advance(br, 1);
        if (c->ended) {
            maybe_free(c); /* ended while this receive was on its way */
            return;
        }
        if (on_data(c) < 0) {
            end_conn(c);
            return;
        }
    } else if (res != -ENOBUFS) { /* -ENOBUFS: every buffer taken, receive again */
        end_conn(c); /* the peer's end (0) or an error */
        return;
    }
    if (!c->ended && !c->recv_armed) arm_recv(c);
    else maybe_free(c);
}

static void on_send(struct conn *c, int res) {
    c->sending = 0;
    if (res < 0) {
        end_conn(c);
        return;
    } else {
        c->out_off += (size_t)res;
        if (c->out_off < c->out_len) {
            if (!c->ended) send_out(c);
        } else {
            /* all out: what queued behind it goes next */
            memcpy(c->out, c->next, c->next_len);
            c->out_len = c->next_len;
            c->out_off = 0;
            c->next_len = 0;
            if (c->out_len && !c->ended) send_out(c);
        }
    }
    maybe_free(c);
}

int main(int argc, char **argv) {
    install_signals();
    int lfd = listen_on(argc, argv, 0);
    int one = 1;

    struct io_uring_params p = {.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN};
    int r = io_uring_queue_init_params(1024, &ring, &p);
    if (r == -EINVAL) { /* a kernel before 6.1: a plain ring */
        memset(&p, 0, sizeof p);
        r = io_uring_queue_init_params(1024, &ring, &p);
    }
    if (r < 0) {
        fprintf(stderr, "io_uring_queue_init: %s\n", strerror(-r));
        return 1;
    }

    size_t ring_bytes = NBUF * sizeof(struct io_uring_buf);
    br = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    bufs = malloc((size_t)NBUF * BUF_SIZE);
    if (br == MAP_FAILED || !bufs) {
        perror("buffers");
        return 1;
    }
    io_uring_buf_ring_init(br);
    struct io_uring_buf_reg reg = {.ring_addr = (uint64_t)(uintptr_t)br, .ring_entries = NBUF, .bgid = BGID};
    r = io_uring_register_buf_ring(&ring, &reg, 0);
    if (r < 0) {
        fprintf(stderr, "io_uring_register_buf_ring: %s\n", strerror(-r));
        return 1;
    }
    for (unsigned i = 0; i < NBUF; i++)
        io_uring_buf_ring_add(br, bufs + (size_t)i * BUF_SIZE, BUF_SIZE, (unsigned short)i,
                              io_uring_buf_ring_mask(NBUF), (int)i);
    io_uring_buf_ring_advance(br, NBUF);

    arm_accept(lfd);
    printf("serving http://%s (raw io_uring floor)\n", argc > 1 ? argv[1] : "127.0.0.1:8080");
    fflush(stdout);

    while (!stop) {
        r = io_uring_submit_and_wait(&ring, 1);
        if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
            fprintf(stderr, "io_uring_submit_and_wait: %s\n", strerror(-r));
            return 1;
        }
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            seen++;
            uint64_t data = io_uring_cqe_get_data64(cqe);
            unsigned op = (unsigned)(data & 3);
            struct conn *c = (struct conn *)(uintptr_t)(data & ~(uint64_t)3);
            if (data == OP_ACCEPT) {
                if (cqe->res >= 0) {
                    int fd = cqe->res;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *nc = malloc(sizeof *nc);
                    if (!nc) {
                        close(fd);
                    } else {
                        nc->fd = fd;
                        nc->recv_armed = nc->sending = nc->ended = 0;
                        nc->in_len = nc->out_len = nc->out_off = nc->next_len = 0;
                        arm_recv(nc);
                    }
                }
                if (!(cqe->flags & IORING_CQE_F_MORE)) arm_accept(lfd);
            } else if (op == OP_RECV) {
                on_recv(c, cqe->res, cqe->flags);
            } else if (op == OP_SEND) {
                on_send(c, cqe->res);
            }
        }
        io_uring_cq_advance(&ring, seen);
    }
    /* The accept holds the listener: cancel it and see it end before the
     * listener closes, so the port is free when this process is gone (a
     * ring torn down at exit lets go of its files only later). */
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_cancel64(sqe, OP_ACCEPT, 0);
    io_uring_sqe_set_data64(sqe, 3);
    for (int accepting = 1; accepting;) {
        r = io_uring_submit_and_wait(&ring, 1);
        if (r < 0 && r != -EINTR) break;
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            seen++;
            if (io_uring_cqe_get_data64(cqe) == OP_ACCEPT && !(cqe->flags & IORING_CQE_F_MORE)) {
                if (cqe->res >= 0) close(cqe->res);
                accepting = 0;
            } else if (io_uring_cqe_get_data64(cqe) == OP_ACCEPT && cqe->res >= 0) {
                close(cqe->res);
            }
        }
        io_uring_cq_advance(&ring, seen);
    }
    close(lfd);
    io_uring_queue_exit(&ring);
    return 0;
}
