#!/usr/bin/env bash
# Loop-level workloads W1 W2 W2b W3 W6 W7 (shared/bench/WORKLOADS.md):
# eventide's `workloads` binary on both backends, side by side with the CPU
# anchors (libuv, Node, tokio), back to back in one run; then a table of
# medians with eventide's ratios to libuv and tokio and the goals.
#
#   benches/run-cpu-workloads.sh            3 rounds
#   ROUNDS=5 benches/run-cpu-workloads.sh   more rounds
#
# Needs: gcc, libuv1-dev (apt-get install -y libuv1-dev liburing-dev), node,
# cargo, python3. The anchors are copied to /tmp/anchors when not there yet
# (ANCHORS_SRC, default ../shared/anchors next to the repository; they build
# in place). Our binary: cargo build --release (CARGO_TARGET_DIR honoured).
# Every RESULT line is kept in $OUT (default /tmp/cpu-workloads-<date>.txt).
# Exits 1 if any program failed its self-check or printed no RESULT line.
set -u

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rounds="${ROUNDS:-3}"
anchors_src="${ANCHORS_SRC:-$repo/../shared/anchors}"
anchors=/tmp/anchors
out="${OUT:-/tmp/cpu-workloads-$(date +%Y%m%d-%H%M%S).txt}"
workloads=(W1 W2 W2b W3 W6 W7)
backends=(uring poll)

echo "== building eventide's workloads binary (cargo build --release)" >&2
(cd "$repo" && cargo build --release --quiet -p eventide-benches --bin workloads) || exit 1
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
bin="$target_dir/release/workloads"
[ -x "$bin" ] || { echo "no binary at $bin" >&2; exit 1; }

if [ ! -x "$anchors/cpu/run" ]; then
  echo "== copying $anchors_src to $anchors" >&2
  cp -r "$anchors_src" "$anchors" || exit 1
fi
echo "== building the anchors" >&2
env -u CARGO_TARGET_DIR "$anchors/cpu/run" --build || exit 1

failed=0
: >"$out"
for round in $(seq 1 "$rounds"); do
  for w in "${workloads[@]}"; do
    echo "== round $round/$rounds: $w" >&2
    env -u CARGO_TARGET_DIR "$anchors/cpu/run" "$w" >>"$out" || failed=1
    for b in "${backends[@]}"; do
      line="$(timeout 60 "$bin" "$w" --backend "$b" | grep '^RESULT ')"
      if [ -z "$line" ]; then
        echo "FAIL workload=$w system=eventide-$b: no RESULT line" >&2
        failed=1
      else
        printf '%s\n' "$line" >>"$out"
      fi
    done
  done
done
echo "== RESULT lines in $out" >&2

echo
echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(nproc) CPUs, $(uname -sr);" \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); $rounds rounds"
echo
echo "All systems (anchors/cpu/median):"
echo
"$anchors/cpu/median" "$out"
echo
echo "eventide vs the anchors (medians; the compared figure of each workload):"
echo
python3 - "$out" <<'EOF'
import statistics
import sys

rows = {}
for line in open(sys.argv[1]):
    if not line.startswith("RESULT "):
        continue
    kv = dict(p.split("=", 1) for p in line.split()[1:] if "=" in p)
    rows.setdefault((kv["workload"], kv["system"]), []).append(kv)


def med(workload, system, key):
    vals = [float(r[key]) for r in rows.get((workload, system), []) if key in r]
    return statistics.median(vals) if vals else None


# (workload, label, key, higher is better, goal ratio vs libuv on uring, also below tokio)
figures = [
    ("W1", "CPU s", "value", False, 0.30, False),
    ("W1", "peak RSS MB", "rss_mb", False, 0.50, False),
    ("W2", "CPU ns / start+cancel", "cpu_ns", False, 0.20, False),
    ("W2b", "CPU ns / re-arm", "cpu_ns", False, 0.30, True),
    ("W3", "CPU ns / callback", "cpu_ns", False, 0.25, False),
    ("W6", "items/s", "value", True, 2.0, False),
    ("W7", "msgs/s", "value", True, 1.0, False),
]


def fmt(x):
    if x is None:
        return "-"
    if abs(x) >= 1e5:
        return f"{x / 1e6:.2f} M"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def ratio(a, b):
    return f"{a / b:.2f}x" if a is not None and b else "-"


print("| workload | figure | libuv | node | tokio | eventide-uring | eventide-poll "
      "| uring / libuv | poll / libuv | uring / tokio | goal (uring) | met? |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
for w, label, key, higher, goal, below_tokio in figures:
    v = {s: med(w, s, key) for s in ("libuv", "node", "tokio", "eventide-uring", "eventide-poll")}
    lib, tok, uring = v["libuv"], v["tokio"], v["eventide-uring"]
    sign = ">=" if higher else "<="
    goal_text = f"{sign} {goal:g}x libuv" + (" and < tokio" if below_tokio else "")
    if uring is None or not lib:
        met = "no data"
    else:
        r = uring / lib
        ok = r >= goal if higher else r <= goal
        if below_tokio:
            ok = ok and tok is not None and uring < tok
        met = "met" if ok else "NOT met"
    print(f"| {w} | {label} | {fmt(lib)} | {fmt(v['node'])} | {fmt(tok)} | {fmt(uring)} | "
          f"{fmt(v['eventide-poll'])} | {ratio(uring, lib)} | {ratio(v['eventide-poll'], lib)} | "
          f"{ratio(uring, tok)} | {goal_text} | {met} |")
EOF
exit $failed
