/* W11 (shared/bench/WORKLOADS.md) on libuv: uv_spawn /bin/true 2,000
 * times, at most 8 alive, stdio ignored, each exit checked for code 0. */
#include <uv.h>

#include "common.h"

#define SPAWNS 2000
#define PARALLEL 8

static int started, done, failed;
static uv_loop_t *loop;

static void start(void);

static void on_close(uv_handle_t *h) { free(h); }

static void on_exit_cb(uv_process_t *p, int64_t status, int signal) {
    if (status != 0 || signal != 0) failed = 1;
    done++;
    uv_close((uv_handle_t *)p, on_close);
    start();
}

static void start(void) {
    if (started == SPAWNS) return;
    started++;
    static char *args[] = {"/bin/true", NULL};
    uv_stdio_container_t stdio[3];
    for (int i = 0; i < 3; i++) stdio[i].flags = UV_IGNORE;
    uv_process_options_t o;
    memset(&o, 0, sizeof o);
    o.file = args[0];
    o.args = args;
    o.exit_cb = on_exit_cb;
    o.stdio = stdio;
    o.stdio_count = 3;
    uv_process_t *p = malloc(sizeof *p);
    int r = uv_spawn(loop, p, &o);
    if (r != 0) {
        fprintf(stderr, "uv_spawn: %s\n", uv_strerror(r));
        fail("W11", "spawn failed");
    }
}

int main(void) {
    loop = uv_default_loop();
    double c0 = cpu_s(), t0 = now_s();
    for (int i = 0; i < PARALLEL; i++) start();
    uv_run(loop, UV_RUN_DEFAULT);
    double wall = now_s() - t0, cpu = cpu_s() - c0;
    if (failed) fail("W11", "a child did not exit 0");
    if (done != SPAWNS) fail("W11", "not every child exited");
    printf("RESULT workload=W11 system=libuv metric=spawns_per_s value=%.1f n=%d wall_s=%.3f "
           "cpu_s=%.3f rss_mb=%.1f\n",
           SPAWNS / wall, SPAWNS, wall, cpu, rss_mb());
    return 0;
}
