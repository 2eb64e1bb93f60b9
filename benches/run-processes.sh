#!/usr/bin/env bash
# W11 (spawn) and W12 (pipe) of shared/bench/WORKLOADS.md: eventide on
# each reactor backend beside its peers in benches/peers/ (libuv in C,
# Node 20, tokio) and W12's blocking baseline (the runner's W12-blocking:
# one thread, blocking write and read), back to back in one run; then the
# RESULT lines and the ratios of each eventide backend to each peer.
#
#   benches/run-processes.sh                  one round
#   ROUNDS=3 benches/run-processes.sh         ratios are medians over rounds
#   BACKENDS="uring epoll" benches/run-processes.sh
#   WORKLOADS=W12 PEERS="libuv blocking" BACKENDS="epoll poll" ROUNDS=10 \
#     BEFORE=/tmp/old-workloads benches/run-processes.sh
#                                             W12 only, against libuv and the
#                                             blocking loop, and an older
#                                             runner binary (its rows are
#                                             eventide-<backend>-before)
#
# Needs: gcc and libuv1-dev, node, cargo, python3. Builds: the runner with
# cargo build --release (CARGO_TARGET_DIR honoured); benches/peers/libuv/*.c
# with gcc -O2 -luv into /tmp/process-peers/; benches/peers/tokio with
# cargo --release in its own target directory (not the workspace's).
# Every RESULT line, tagged round=N, is kept in $OUT (default
# /tmp/processes-<date>.txt). Exits 1 if a program failed or printed no
# RESULT line.
set -u

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
peers="$repo/benches/peers"
rounds="${ROUNDS:-1}"
read -ra backends <<<"${BACKENDS:-uring epoll poll}"
read -ra workloads <<<"${WORKLOADS:-W11 W12}"
peer_list=" ${PEERS:-libuv node tokio blocking} "
before="${BEFORE:-}"
has() { [[ "$peer_list" == *" $1 "* ]]; }
runs() { [[ " ${workloads[*]} " == *" $1 "* ]]; }
out="${OUT:-/tmp/processes-$(date +%Y%m%d-%H%M%S).txt}"
cbin=/tmp/process-peers
mkdir -p "$cbin"

echo "== building eventide's workloads binary" >&2
(cd "$repo" && cargo build --release --quiet -p eventide-benches --bin workloads) || exit 1
bin="${CARGO_TARGET_DIR:-$repo/target}/release/workloads"
echo "== building the libuv peers" >&2
for w in w11_spawn w12_pipe; do
  gcc -O2 -Wall -Wextra -o "$cbin/$w" "$peers/libuv/$w.c" -luv || exit 1
done
if has tokio; then
  echo "== building the tokio peers" >&2
  (cd "$peers/tokio" && env -u CARGO_TARGET_DIR cargo build --release --quiet) || exit 1
fi
tokio="$peers/tokio/target/release"

failed=0
: >"$out"
keep() { # ROUND: RESULT lines from stdin to $out and stdout, tagged
  local n
  n="$(grep '^RESULT ' | sed "s/\$/ round=$1/" | tee -a "$out" | tee /dev/stderr | wc -l)"
  [ "$n" -gt 0 ] || { echo "FAIL: no RESULT line (round $1)" >&2; failed=1; }
}

# BEFORE's rows: the same runner, renamed eventide-<backend>-before.
ours() { # WORKLOAD BACKEND ROUND
  timeout 60 "$bin" "$1" --backend "$2" | keep "$3"
  if [ -n "$before" ]; then
    timeout 60 "$before" "$1" --backend "$2" | sed "s/system=eventide-$2 /system=eventide-$2-before /" | keep "$3"
  fi
}

for round in $(seq 1 "$rounds"); do
  if runs W11; then
    echo "== round $round/$rounds: W11" >&2
    if has libuv; then timeout 60 "$cbin/w11_spawn" | keep "$round"; fi
    if has node; then timeout 60 node "$peers/node/w11_spawn.js" | keep "$round"; fi
    if has tokio; then timeout 60 "$tokio/w11_spawn" | keep "$round"; fi
    for b in "${backends[@]}"; do ours W11 "$b" "$round"; done
  fi
  if runs W12; then
    echo "== round $round/$rounds: W12" >&2
    if has libuv; then timeout 60 "$cbin/w12_pipe" | keep "$round"; fi
    if has node; then timeout 60 node "$peers/node/w12_pipe.js" | keep "$round"; fi
    if has tokio; then timeout 60 "$tokio/w12_pipe" | keep "$round"; fi
    if has blocking; then timeout 60 "$bin" W12-blocking | keep "$round"; fi
    for b in "${backends[@]}"; do ours W12 "$b" "$round"; done
  fi
done

python3 - "$out" <<'PY'
import re, statistics, sys
rows = {}
cpu = {}
for line in open(sys.argv[1]):
    kv = dict(re.findall(r'(\w+)=(\S+)', line))
    rows.setdefault((kv['workload'], kv['system']), {})[kv['round']] = float(kv['value'])
    if 'cpu_s' in kv:
        cpu.setdefault((kv['workload'], kv['system']), []).append(float(kv['cpu_s']))
print()
print('| workload | system | value (median) | vs libuv | vs tokio | vs node | vs blocking |')
print('|---|---|---|---|---|---|---|')
for (w, s), byround in sorted(rows.items()):
    med = statistics.median(byround.values())
    cells = []
    for peer in ('libuv', 'tokio', 'node', 'blocking'):
        ref = rows.get((w, peer))
        if not s.startswith('eventide') or not ref:
            cells.append('')
            continue
        ratios = [byround[r] / ref[r] for r in byround if r in ref]
        cells.append(f'{statistics.median(ratios):.2f}x' if ratios else '')
    unit = 'spawns/s' if w == 'W11' else 'MB/s'
    print(f'| {w} | {s} | {med:.1f} {unit} | ' + ' | '.join(cells) + ' |')
print()
print('| workload | system | CPU-s, median (W11: 2,000 spawns; W12: 1 GiB) |')
print('|---|---|---|')
for (w, s), v in sorted(cpu.items()):
    print(f'| {w} | {s} | {statistics.median(v):.3f} |')
PY
echo "RESULT lines in $out" >&2
exit "$failed"
