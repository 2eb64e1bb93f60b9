#!/usr/bin/env bash
# The cost of the loop's metrics (issue 16, docs/metrics.md): W3 and W4 of
# the workloads runner, built from BASE (a commit without the metrics) and
# from the work tree, run alternately; prints the medians of CPU ns per
# callback (W3) and CPU µs per round trip (W4), and their ratios. With
# CALLGRIND=1 it also counts W3's instructions under valgrind (repeatable on
# a loaded machine; about a minute per binary).
#
#   benches/metrics-cost.sh 262ee31            5 rounds, epoll and uring
#   ROUNDS=9 BACKENDS=uring benches/metrics-cost.sh 262ee31
#   CALLGRIND=1 benches/metrics-cost.sh 262ee31
#
# Needs: cargo, python3 (valgrind for CALLGRIND=1). CARGO_TARGET_DIR is
# honoured (the base is built from a `git archive` copy in a temporary
# directory, into the same target directory, so dependencies are shared).
set -eu

base="${1:?usage: benches/metrics-cost.sh BASE_COMMIT}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rounds="${ROUNDS:-5}"
read -ra backends <<<"${BACKENDS:-epoll uring}"
target="${CARGO_TARGET_DIR:-$repo/target}"
export CARGO_TARGET_DIR="$target"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "== building $base (base) and the work tree (metrics)" >&2
mkdir "$work/src"
git -C "$repo" archive "$base" | tar -x -C "$work/src"
(cd "$work/src" && cargo build --release --quiet -p eventide-benches --bin workloads)
cp "$target/release/workloads" "$work/base"
(cd "$repo" && cargo build --release --quiet -p eventide-benches --bin workloads)
cp "$target/release/workloads" "$work/metrics"

: >"$work/results"
for round in $(seq 1 "$rounds"); do
  for backend in "${backends[@]}"; do
    for w in W3 W4; do
      for build in base metrics; do
        echo "== round $round/$rounds: $w $backend $build" >&2
        line="$("$work/$build" "$w" --backend "$backend" | grep '^RESULT ')"
        echo "$build $backend $w $line" >>"$work/results"
      done
    done
  done
done

if [ "${CALLGRIND:-0}" = 1 ]; then
  for build in base metrics; do
    echo "== callgrind: W3 epoll $build" >&2
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$work/$build" W3 --backend epoll \
      2>&1 >/dev/null | sed -n "s/.*Collected : \([0-9]*\).*/callgrind $build \1/p" >>"$work/results"
  done
fi

python3 - "$work/results" <<'EOF'
import re, statistics, sys
rows = {}
instr = {}
for line in open(sys.argv[1]):
    parts = line.split()
    if parts[0] == "callgrind":
        instr[parts[1]] = int(parts[2])
        continue
    build, backend, w = parts[:3]
    fields = dict(re.findall(r"(\w+)=([\w.]+)", line))
    if w == "W3":
        value = float(fields["cpu_ns"])                         # CPU ns per callback
    else:
        value = float(fields["cpu_s"]) / int(fields["n"]) * 1e6  # CPU µs per round trip
    rows.setdefault((w, backend), {}).setdefault(build, []).append(value)
print("| workload | backend | base | metrics | metrics / base |")
print("|---|---|---|---|---|")
for (w, backend), by in sorted(rows.items()):
    unit = "CPU ns/callback" if w == "W3" else "CPU µs/round trip"
    b, m = statistics.median(by["base"]), statistics.median(by["metrics"])
    print(f"| {w} ({unit}) | {backend} | {b:.3f} | {m:.3f} | {m / b:.3f} |")
if instr:
    b, m = instr["base"], instr["metrics"]
    print(f"| W3 instructions (callgrind) | epoll | {b:,} | {m:,} | {m / b:.4f} |")
EOF
