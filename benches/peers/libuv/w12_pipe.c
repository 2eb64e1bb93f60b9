/* W12 (shared/bench/WORKLOADS.md) on libuv: a cat child, 1 GiB written to
 * its stdin as 16,384 chunks of 64 KiB (one uv_write in flight), read back
 * from its stdout and checked byte by byte. Chunk j is P XOR (j % 256),
 * P[k] the bits 33.. of the k-th LCG step from 1 (see the runner's
 * benches/src/bin/workloads/process.rs). */
#include <uv.h>

#include "common.h"

#define CHUNK (64 * 1024)
#define CHUNKS 16384

static unsigned char patterns[256][CHUNK];
static uv_loop_t *loop;
static uv_pipe_t in, out;
static uv_process_t proc;
static uv_write_t wreq;
static size_t written, nread_total;
static int failed, exited;
static char rbuf[CHUNK];

static void write_next(void);

static void on_written(uv_write_t *req, int status) {
    (void)req;
    if (status != 0) fail("W12", "write failed");
    write_next();
}

static void on_closed(uv_handle_t *h) { (void)h; }

static void write_next(void) {
    if (written == CHUNKS) {
        uv_close((uv_handle_t *)&in, on_closed);
        return;
    }
    uv_buf_t b = uv_buf_init((char *)patterns[written % 256], CHUNK);
    written++;
    uv_write(&wreq, (uv_stream_t *)&in, &b, 1, on_written);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
    (void)h;
    (void)hint;
    *b = uv_buf_init(rbuf, sizeof rbuf);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    if (n == UV_EOF) {
        uv_close((uv_handle_t *)s, on_closed);
        return;
    }
    if (n < 0) fail("W12", "read failed");
    const unsigned char *p = (const unsigned char *)b->base;
    while (n > 0) {
        size_t j = nread_total / CHUNK, k = nread_total % CHUNK;
        size_t m = CHUNK - k < (size_t)n ? CHUNK - k : (size_t)n;
        if (j >= CHUNKS || memcmp(p, patterns[j % 256] + k, m) != 0) {
            failed = 1;
            fail("W12", "wrong bytes");
        }
        nread_total += m;
        p += m;
        n -= m;
    }
}

static void on_exit_cb(uv_process_t *pr, int64_t status, int signal) {
    if (status != 0 || signal != 0) fail("W12", "cat did not exit 0");
    exited = 1;
    uv_close((uv_handle_t *)pr, on_closed);
}

int main(void) {
    uint64_t x = 1;
    for (int k = 0; k < CHUNK; k++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        patterns[0][k] = (unsigned char)(x >> 33);
    }
    for (int j = 1; j < 256; j++)
        for (int k = 0; k < CHUNK; k++) patterns[j][k] = patterns[0][k] ^ (unsigned char)j;
    loop = uv_default_loop();
    double c0 = cpu_s(), t0 = now_s();
    uv_pipe_init(loop, &in, 0);
    uv_pipe_init(loop, &out, 0);
    static char *args[] = {"cat", NULL};
    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
    stdio[0].data.stream = (uv_stream_t *)&in;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&out;
    stdio[2].flags = UV_INHERIT_FD;
    stdio[2].data.fd = 2;
    uv_process_options_t o;
    memset(&o, 0, sizeof o);
    o.file = args[0];
    o.args = args;
    o.exit_cb = on_exit_cb;
    o.stdio = stdio;
    o.stdio_count = 3;
    int r = uv_spawn(loop, &proc, &o);
    if (r != 0) fail("W12", uv_strerror(r));
    uv_read_start((uv_stream_t *)&out, on_alloc, on_read);
    write_next();
    uv_run(loop, UV_RUN_DEFAULT);
    double wall = now_s() - t0, cpu = cpu_s() - c0;
    if (!exited) fail("W12", "cat did not exit");
    if (nread_total != (size_t)CHUNK * CHUNKS) fail("W12", "short read");
    printf("RESULT workload=W12 system=libuv metric=mb_per_s value=%.1f bytes=%zu wall_s=%.3f "
           "cpu_s=%.3f rss_mb=%.1f\n",
           nread_total / 1e6 / wall, nread_total, wall, cpu, rss_mb());
    return 0;
}
