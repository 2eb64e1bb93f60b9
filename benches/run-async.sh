#!/usr/bin/env bash
# W4-async of shared/bench/WORKLOADS.md (W4's ping-pong written with
# async/await): eventide's executor on each reactor backend beside
# eventide's callback W4 on the same backend and the tokio
# `current_thread` peer in benches/peers/tokio, back to back in one run;
# then the RESULT lines and the ratios (round trips per second, and per
# process CPU second: the steadier figure on a shared machine).
#
#   benches/run-async.sh                  one round
#   ROUNDS=3 benches/run-async.sh         ratios are medians over rounds
#   BACKENDS="uring epoll" benches/run-async.sh
#
# Needs: cargo, python3. Builds: the runner with cargo build --release
# (CARGO_TARGET_DIR honoured); benches/peers/tokio with cargo --release in
# its own target directory (not the workspace's). Every RESULT line, tagged
# round=N, is kept in $OUT (default /tmp/async-<date>.txt). Exits 1 if a
# program failed or printed no RESULT line.
set -u

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rounds="${ROUNDS:-1}"
read -ra backends <<<"${BACKENDS:-uring epoll poll}"
out="${OUT:-/tmp/async-$(date +%Y%m%d-%H%M%S).txt}"

echo "== building eventide's workloads binary" >&2
(cd "$repo" && cargo build --release --quiet -p eventide-benches --bin workloads) || exit 1
bin="${CARGO_TARGET_DIR:-$repo/target}/release/workloads"
echo "== building the tokio peer" >&2
(cd "$repo/benches/peers/tokio" && env -u CARGO_TARGET_DIR cargo build --release --quiet --bin w4_pingpong) || exit 1
tokio="$repo/benches/peers/tokio/target/release"

failed=0
: >"$out"
keep() { # ROUND: RESULT lines from stdin to $out and stdout, tagged
  local n
  n="$(grep '^RESULT ' | sed "s/\$/ round=$1/" | tee -a "$out" | tee /dev/stderr | wc -l)"
  [ "$n" -gt 0 ] || { echo "FAIL: no RESULT line (round $1)" >&2; failed=1; }
}

for round in $(seq 1 "$rounds"); do
  echo "== round $round/$rounds" >&2
  timeout 60 "$tokio/w4_pingpong" | keep "$round"
  for b in "${backends[@]}"; do
    timeout 60 "$bin" W4 --backend "$b" | keep "$round"
    timeout 60 "$bin" W4-async --backend "$b" | keep "$round"
  done
done

python3 - "$out" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    kv = dict(re.findall(r'(\w+)=(\S+)', line))
    name = kv['system'] if kv['workload'] == 'W4-async' else kv['system'] + ' (callbacks)'
    r = rows.setdefault(name, {})
    r[kv['round']] = (float(kv['value']), float(kv['n']) / float(kv['cpu_s']))
def med(xs):
    return statistics.median(xs) if xs else float('nan')
print()
print('| system | round trips/s | per CPU-s | async vs tokio (rt/s, per CPU-s) | async vs callbacks (rt/s, per CPU-s) |')
print('|---|---|---|---|---|')
tok = rows.get('tokio', {})
for name in sorted(rows):
    byround = rows[name]
    cells = [f'{med([v[0] for v in byround.values()]):.0f}', f'{med([v[1] for v in byround.values()]):.0f}']
    vs_tokio = vs_cb = ''
    if name.startswith('eventide') and '(callbacks)' not in name:
        def ratio(ref):
            a = [byround[r][0] / ref[r][0] for r in byround if r in ref]
            c = [byround[r][1] / ref[r][1] for r in byround if r in ref]
            return f'{med(a):.2f}x, {med(c):.2f}x' if a else ''
        vs_tokio = ratio(tok)
        vs_cb = ratio(rows.get(name + ' (callbacks)', {}))
    print(f'| {name} | {cells[0]} | {cells[1]} | {vs_tokio} | {vs_cb} |')
PY
[ "$failed" = 0 ] || exit 1
