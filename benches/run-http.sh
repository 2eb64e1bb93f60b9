#!/usr/bin/env bash
# W13 (http) of shared/bench/WORKLOADS.md: a hello-world HTTP/1.1
# keep-alive server under `wrk -t1 -c50 -d10s --latency`, the server
# pinned to CPU 0 and wrk to CPU 1 (taskset), back to back in each round:
#
#   eventide-<backend>  hyper 1.x on eventide (examples/http_server.rs,
#                       EVENTIDE_BACKEND=<backend>)
#   tokio               hyper 1.x on tokio current_thread
#                       (benches/peers/tokio/w13_http, the same hyper)
#   node                Node's `http` (benches/peers/node/w13_http.js)
#   floor-epoll         (FLOOR=1) the same responses straight on epoll in
#                       C, no runtime, no HTTP library
#                       (benches/peers/floor/w13_http.c): what the kernel's
#                       TCP and one receive and one send per request allow
#   floor-uring         (FLOOR=1) the same on io_uring with liburing
#                       (benches/peers/floor/w13_http_uring.c): multishot
#                       receive into provided buffers, DEFER_TASKRUN
#
# Figure: requests per server CPU-second (user+sys of the server process,
# from /proc/PID/stat, over wrk's run), higher; also requests/s and wrk's
# p99 latency and the server's busy share of its core. Prints RESULT
# lines, then a table of medians over rounds with each eventide backend's
# (and each floor's) ratio to tokio and to Node.
#
#   benches/run-http.sh                     3 rounds, backends uring epoll
#   ROUNDS=5 DURATION=10s benches/run-http.sh
#   BACKENDS="uring epoll poll" benches/run-http.sh
#   FLOOR=1 benches/run-http.sh             adds the two floors (needs a C
#                                           compiler; installs Debian's
#                                           liburing-dev if it is missing)
#   BASE_BIN=/tmp/http_server.old benches/run-http.sh
#                                           adds rows base-<backend>: another
#                                           build of the example (say, the
#                                           commit before a change), for A/B
#   PROFILE=1 benches/run-http.sh           also samples each server with
#                                           `perf record -e cpu-clock` during
#                                           wrk's run and splits its CPU per
#                                           request into kernel and user
#                                           microseconds (and, of user, the
#                                           functions of hyper, httparse and
#                                           http themselves: a lower bound of
#                                           hyper's share, as code inlined into
#                                           the runtime's task poll is not
#                                           counted); needs perf
#
# Needs: cargo, node, python3, taskset; installs Debian's `wrk` with
# apt-get if it is missing. Builds the example with cargo build --release
# (CARGO_TARGET_DIR honoured) and the tokio peer in its own target
# directory. RESULT lines, tagged round=N, go to $OUT (default
# /tmp/http-<date>.txt). Exits 1 if a server or wrk failed.
set -u

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
peers="$repo/benches/peers"
rounds="${ROUNDS:-3}"
duration="${DURATION:-10s}"
conns="${CONNS:-50}"
read -ra backends <<<"${BACKENDS:-uring epoll}"
out="${OUT:-/tmp/http-$(date +%Y%m%d-%H%M%S).txt}"
port="${PORT:-18913}"

if ! command -v wrk >/dev/null; then
  echo "== installing wrk (apt-get)" >&2
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y wrk >&2 || { apt-get update >&2 && apt-get install -y wrk >&2; }
  else
    sudo apt-get install -y wrk >&2
  fi
  command -v wrk >/dev/null || { echo "FAIL: no wrk" >&2; exit 1; }
fi

echo "== building hyper on eventide (examples/http_server.rs)" >&2
(cd "$repo" && cargo build --release --quiet -p eventide --all-features --example http_server) || exit 1
eventide_bin="${CARGO_TARGET_DIR:-$repo/target}/release/examples/http_server"
echo "== building hyper on tokio (benches/peers/tokio/w13_http)" >&2
(cd "$peers/tokio/w13_http" && env -u CARGO_TARGET_DIR cargo build --release --quiet) || exit 1
tokio_bin="$peers/tokio/w13_http/target/release/w13-http-tokio"
ours="$(grep -A1 '^name = "hyper"$' "$repo/Cargo.lock" | sed -n 's/^version = "\(.*\)"/\1/p')"
floor_dir=""
if [ "${FLOOR:-0}" = 1 ]; then
  if [ ! -e /usr/include/liburing.h ]; then
    echo "== installing liburing-dev (apt-get)" >&2
    if [ "$(id -u)" = 0 ]; then
      apt-get install -y liburing-dev >&2 || { apt-get update >&2 && apt-get install -y liburing-dev >&2; }
    else
      sudo apt-get install -y liburing-dev >&2
    fi
  fi
  echo "== building the floors (benches/peers/floor/)" >&2
  floor_dir="$(mktemp -d)"
  "${CC:-cc}" -O2 -o "$floor_dir/epoll" "$peers/floor/w13_http.c" || exit 1
  "${CC:-cc}" -O2 -o "$floor_dir/uring" "$peers/floor/w13_http_uring.c" -luring || exit 1
fi
theirs="$(grep -A1 '^name = "hyper"$' "$peers/tokio/w13_http/Cargo.lock" | sed -n 's/^version = "\(.*\)"/\1/p')"
echo "== hyper: eventide $ours, tokio peer $theirs; $(node --version); $(wrk -v 2>&1 | head -1)" >&2
[ "$ours" = "$theirs" ] || echo "WARNING: not the same hyper" >&2

clk="$(getconf CLK_TCK)"
cpu_ticks() { # PID: utime+stime of the process (all its threads)
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}
failed=0
: >"$out"

# SYSTEM CMD...: serve, load, measure; one RESULT line.
bench() {
  local system="$1"
  shift
  taskset -c 0 "$@" >/dev/null 2>/tmp/w13-server.err &
  local pid=$!
  local up=0
  for _ in $(seq 1 100); do
    if curl -sf "http://127.0.0.1:$port/" >/dev/null 2>&1; then up=1; break; fi
    sleep 0.05
  done
  if [ "$up" != 1 ]; then
    echo "FAIL: $system did not answer" >&2
    cat /tmp/w13-server.err >&2
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    failed=1
    return
  fi
  local before after perf_pid="" split=""
  if [ "${PROFILE:-0}" = 1 ]; then
    perf record -q -e cpu-clock -F 999 -p "$pid" -o /tmp/w13-profile.data 2>/dev/null &
    perf_pid=$!
  fi
  before="$(cpu_ticks "$pid")"
  local report
  report="$(taskset -c 1 wrk -t1 -c"$conns" -d"$duration" --latency "http://127.0.0.1:$port/")"
  after="$(cpu_ticks "$pid")"
  if [ -n "$perf_pid" ]; then
    kill -INT "$perf_pid"
    wait "$perf_pid" 2>/dev/null
    # Shares of the samples: kernel, user, and hyper's own functions.
    split="$(perf report -i /tmp/w13-profile.data --stdio -q --sort sym 2>/dev/null | awk '
      /\[k\]/ { k += $1 } /\[\.\]/ { u += $1
        if ($0 ~ /(hyper|httparse|http)::/ && $0 !~ /eventide::/) h += $1 }
      END { printf "%.4f %.4f %.4f", k / 100, u / 100, h / 100 }')"
  fi
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null
  python3 - "$system" "$before" "$after" "$clk" "$round" "$split" <<PY | tee -a "$out"
import re, sys
system, before, after, clk, rnd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
report = """$report"""
def dur(text):  # wrk's 1.23ms / 456.78us / 1.02s, in ms
    m = re.match(r'([\d.]+)(us|ms|s|m)', text)
    v, u = float(m.group(1)), m.group(2)
    return v * {'us': 1e-3, 'ms': 1, 's': 1e3, 'm': 6e4}[u]
reqs = int(re.search(r'(\d+) requests in', report).group(1))
rps = float(re.search(r'Requests/sec:\s+([\d.]+)', report).group(1))
wall = dur(re.search(r'requests in (\S+),', report).group(1)) / 1e3  # wrk's run, in s
p99 = dur(re.search(r'\s99%\s+(\S+)', report).group(1))
errors = re.search(r'Socket errors: (.*)', report)
non2xx = re.search(r'Non-2xx or 3xx responses: (\d+)', report)
if errors or non2xx or reqs == 0:
    print(report, file=sys.stderr)
    sys.exit(f'FAIL: {system}: errors in the run')
cpu = (after - before) / clk
split = ''
if sys.argv[6]:
    k, u, h = (float(x) for x in sys.argv[6].split())
    per = cpu / reqs * 1e6 / ((k + u) or 1)  # us of CPU per request, per unit of samples
    split = f' kernel_us={k * per:.3f} user_us={u * per:.3f} hyper_us={h * per:.3f}'
print(f'RESULT workload=W13 system={system} metric=reqs_per_server_cpu_s '
      f'value={reqs / cpu:.0f} rps={rps:.0f} p99_ms={p99:.3f} cpu_s={cpu:.2f} wall_s={wall:.2f} n={reqs} round={rnd}{split}')
PY
  [ "${PIPESTATUS[0]}" = 0 ] || failed=1
}

for round in $(seq 1 "$rounds"); do
  echo "== round $round/$rounds" >&2
  for b in "${backends[@]}"; do
    EVENTIDE_BACKEND="$b" bench "eventide-$b" "$eventide_bin" "127.0.0.1:$port"
    if [ -n "${BASE_BIN:-}" ]; then
      EVENTIDE_BACKEND="$b" bench "base-$b" "$BASE_BIN" "127.0.0.1:$port"
    fi
  done
  bench tokio "$tokio_bin" "127.0.0.1:$port"
  bench node node "$peers/node/w13_http.js" "127.0.0.1:$port"
  if [ -n "$floor_dir" ]; then
    bench floor-epoll "$floor_dir/epoll" "127.0.0.1:$port"
    bench floor-uring "$floor_dir/uring" "127.0.0.1:$port"
  fi
done
[ -z "$floor_dir" ] || rm -rf "$floor_dir"

python3 - "$out" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    kv = dict(re.findall(r'(\w+)=(\S+)', line))
    rows.setdefault(kv['system'], []).append(kv)
def med(system, key):
    return statistics.median(float(r[key]) for r in rows[system])
def ratio(system, peer):
    if peer not in rows:
        return ''
    by = {r['round']: float(r['value']) for r in rows[peer]}
    rs = [float(r['value']) / by[r['round']] for r in rows[system] if r['round'] in by]
    return f'{statistics.median(rs):.2f}x' if rs else ''
print()
print('| system | reqs per server CPU-s | requests/s | p99 latency (ms) | server busy | vs tokio | vs node |')
print('|---|---|---|---|---|---|---|')
for s in sorted(rows, key=lambda s: (not s.startswith(('eventide', 'base')), s)):
    mine = s.startswith(('eventide', 'base', 'floor'))
    busy = statistics.median(float(r['cpu_s']) / float(r['wall_s']) for r in rows[s])
    print(f"| {s} | {med(s, 'value'):.0f} | {med(s, 'rps'):.0f} | {med(s, 'p99_ms'):.2f} | {busy:.0%} "
          f"| {ratio(s, 'tokio') if mine else ''} | {ratio(s, 'node') if mine or s == 'tokio' else ''} |")
print(f'\n(medians over rounds; ratios are medians of per-round ratios; server busy: its CPU time over\n'
      f"wrk's run, a share of its one core: below 100% it waited for wrk; {sys.argv[1]})")
if all('kernel_us' in r for rs in rows.values() for r in rs):
    print()
    print('| system | CPU us per request | kernel | user | of user: hyper, httparse, http (at least) |')
    print('|---|---|---|---|---|')
    for s in sorted(rows, key=lambda s: (not s.startswith(('eventide', 'base')), s)):
        k, u, h = med(s, 'kernel_us'), med(s, 'user_us'), med(s, 'hyper_us')
        print(f'| {s} | {1e6 / med(s, "value"):.2f} | {k:.2f} | {u:.2f} | {h:.2f} |')
    print('\n(perf record -e cpu-clock of each server during the run; medians over rounds)')
PY
exit "$failed"
