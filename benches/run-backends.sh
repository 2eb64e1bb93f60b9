#!/usr/bin/env bash
# W3 W4 W5 W6 W7 W10 (shared/bench/WORKLOADS.md) on every reactor backend
# (uring, epoll, poll) beside libuv and tokio, back to back in one run; then
# a table of medians and of the medians of the same-round ratios to libuv
# and tokio (the machine is shared: a ratio within one round means more than
# an absolute figure).
#
#   benches/run-backends.sh               3 rounds
#   ROUNDS=5 benches/run-backends.sh      more rounds
#   BACKENDS="epoll poll" benches/run-backends.sh
#
# Needs: gcc, libuv1-dev (apt-get install -y libuv1-dev liburing-dev), cargo,
# python3. The anchors are copied to /tmp/anchors when not there yet
# (ANCHORS_SRC, default ../shared/anchors next to the repository; they build
# in place). Our binary: cargo build --release (CARGO_TARGET_DIR honoured).
# Every RESULT line, tagged round=N, is kept in $OUT (default
# /tmp/backends-<date>.txt). Each round runs, per workload, the anchors then
# eventide on each backend. W5 and W10 use the anchors' harness and load
# generator (server pinned to CPU 0, load to CPU 1), eventide through the
# runner's `echo-server`. Exits 1 if any program failed or printed no RESULT.
set -u

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rounds="${ROUNDS:-3}"
read -ra backends <<<"${BACKENDS:-uring epoll poll}"
anchors_src="${ANCHORS_SRC:-$repo/../shared/anchors}"
anchors=/tmp/anchors
out="${OUT:-/tmp/backends-$(date +%Y%m%d-%H%M%S).txt}"

echo "== building eventide's workloads binary (cargo build --release)" >&2
(cd "$repo" && cargo build --release --quiet -p eventide-benches --bin workloads) || exit 1
bin="${CARGO_TARGET_DIR:-$repo/target}/release/workloads"
[ -x "$bin" ] || { echo "no binary at $bin" >&2; exit 1; }

if [ ! -x "$anchors/cpu/run" ] || [ ! -x "$anchors/io/run" ]; then
  echo "== copying $anchors_src to $anchors" >&2
  cp -r "$anchors_src" "$anchors" || exit 1
fi
echo "== building the anchors" >&2
env -u CARGO_TARGET_DIR "$anchors/cpu/run" --build libuv tokio || exit 1

failed=0
: >"$out"
keep() { # ROUND: RESULT lines from stdin to $out, tagged with the round
  local n
  n="$(grep '^RESULT ' | sed "s/\$/ round=$1/" | tee -a "$out" | wc -l)"
  [ "$n" -gt 0 ] || { echo "FAIL: no RESULT line (round $1)" >&2; failed=1; }
}
ours() { # ROUND WORKLOAD BACKEND
  timeout 60 "$bin" "$2" --backend "$3" | keep "$1"
}
served() { # ROUND WORKLOAD BACKEND: W5 or W10 against the runner's echo server
  ANCHOR_SYSTEMS=custom CUSTOM_NAME="eventide-$3" CUSTOM_SERVER="$bin echo-server --backend $3" \
    env -u CARGO_TARGET_DIR "$anchors/io/run" "$2" | keep "$1"
}

for round in $(seq 1 "$rounds"); do
  for w in W3 W6 W7; do
    echo "== round $round/$rounds: $w" >&2
    env -u CARGO_TARGET_DIR "$anchors/cpu/run" "$w" libuv tokio | keep "$round"
    for b in "${backends[@]}"; do ours "$round" "$w" "$b"; done
  done
  echo "== round $round/$rounds: W4" >&2
  ANCHOR_SYSTEMS="libuv tokio" env -u CARGO_TARGET_DIR "$anchors/io/run" W4 | keep "$round"
  for b in "${backends[@]}"; do ours "$round" W4 "$b"; done
  for w in W5 W10; do
    echo "== round $round/$rounds: $w" >&2
    ANCHOR_SYSTEMS="libuv tokio" env -u CARGO_TARGET_DIR "$anchors/io/run" "$w" | keep "$round"
    for b in "${backends[@]}"; do served "$round" "$w" "$b"; done
  done
done
echo "== RESULT lines in $out" >&2

echo
echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(nproc) CPUs, $(uname -sr);" \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); $rounds rounds"
echo
python3 - "$out" "${backends[@]}" <<'EOF'
import statistics
import sys

path, backends = sys.argv[1], sys.argv[2:]
rows = {}  # (workload, case, system) -> {round: value dict}
for line in open(path):
    if not line.startswith("RESULT "):
        continue
    kv = dict(p.split("=", 1) for p in line.split()[1:] if "=" in p)
    key = (kv["workload"], kv.get("case", ""), kv["system"])
    rows.setdefault(key, {})[kv["round"]] = kv

# (workload, case, label, key, higher is better)
figures = [
    ("W3", "", "CPU ns / callback", "cpu_ns", False),
    ("W4", "", "round trips/s", "value", True),
    ("W5", "c50s512", "msgs / server CPU-s", "msgs_per_server_cpu_s", True),
    ("W5", "c500s64", "msgs / server CPU-s", "msgs_per_server_cpu_s", True),
    ("W6", "", "items/s", "value", True),
    ("W7", "", "msgs/s", "value", True),
    ("W10", "", "bytes / idle conn", "value", False),
]


def values(w, case, system, key):
    return {r: float(kv[key]) for r, kv in rows.get((w, case, system), {}).items() if key in kv}


def fmt(x):
    if x is None:
        return "-"
    if abs(x) >= 1e6:
        return f"{x / 1e6:.2f} M"
    if abs(x) >= 1e4:
        return f"{x / 1e3:.1f} k"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.3g}"


def med(d):
    return statistics.median(d.values()) if d else None


def ratio(ours, theirs, higher):
    """Median over rounds of the same-round ratio, as 'better than' >= 1."""
    rs = [ours[r] / theirs[r] if higher else theirs[r] / ours[r]
          for r in ours if r in theirs and ours[r] and theirs[r]]
    return f"{statistics.median(rs):.2f}x" if rs else "-"


systems = ["libuv", "tokio"] + [f"eventide-{b}" for b in backends]
print("Medians (W3 and W10: lower is better):")
print()
print("| workload | figure | " + " | ".join(systems) + " |")
print("|---|---|" + "---:|" * len(systems))
for w, case, label, key, higher in figures:
    cells = [fmt(med(values(w, case, s, key))) for s in systems]
    print(f"| {w} {case} | {label} | " + " | ".join(cells) + " |")
print()
print("eventide's advantage, median of the same-round ratios (>= 1x: as good or better;")
print("W3 and W10 inverted, so that >= 1x is better there too):")
print()
head = [f"{b} / {a}" for b in backends for a in ("libuv", "tokio")]
print("| workload | " + " | ".join(head) + " |")
print("|---|" + "---:|" * len(head))
for w, case, label, key, higher in figures:
    lib = values(w, case, "libuv", key)
    tok = values(w, case, "tokio", key)
    cells = []
    for b in backends:
        ours = values(w, case, f"eventide-{b}", key)
        cells += [ratio(ours, lib, higher), ratio(ours, tok, higher)]
    print(f"| {w} {case} | " + " | ".join(cells) + " |")
EOF
exit $failed
