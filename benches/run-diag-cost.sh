#!/usr/bin/env bash
# The blocked-loop detector's cost on W3 (docs/diagnostics.md): the
# workloads binary with the detector off and on
# (WORKLOADS_DETECT_BLOCKING_MS=100), and, if BASE names the workloads
# binary of another build (the commit before the detector, say), that one
# too. Prints the instruction count of one whole run of each (valgrind
# callgrind: repeatable under load) and the median of ROUNDS (default 5)
# interleaved CPU ns per callback, then the ratios to "off".
#
#   benches/run-diag-cost.sh
#   BASE=/tmp/base/target/release/workloads BACKEND=uring benches/run-diag-cost.sh
#
# Needs: cargo, valgrind, python3.
set -u
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rounds="${ROUNDS:-5}"
backend="${BACKEND:-epoll}"
(cd "$repo" && cargo build --release --quiet -p eventide-benches --bin workloads) || exit 1
bin="${CARGO_TARGET_DIR:-$repo/target}/release/workloads"
configs=(off on)
[ -n "${BASE:-}" ] && configs=(base off on)
run() { # CONFIG ARGS...: runs the config's binary with ARGS
  local cfg="$1"
  shift
  case "$cfg" in
    base) "$BASE" "$@" ;;
    off) "$bin" "$@" ;;
    on) WORKLOADS_DETECT_BLOCKING_MS=100 "$bin" "$@" ;;
  esac
}
out="$(mktemp)"
for cfg in "${configs[@]}"; do
  ir="$(
    case "$cfg" in
      base) valgrind --tool=callgrind --callgrind-out-file=/dev/null "$BASE" W3 --backend "$backend" 2>&1 ;;
      off) valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" W3 --backend "$backend" 2>&1 ;;
      on) WORKLOADS_DETECT_BLOCKING_MS=100 valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" W3 --backend "$backend" 2>&1 ;;
    esac | awk '/Collected/ {print $4}'
  )"
  echo "ir $cfg $ir" | tee -a "$out"
done
for round in $(seq 1 "$rounds"); do
  for cfg in "${configs[@]}"; do
    ns="$(run "$cfg" W3 --backend "$backend" | grep -o 'cpu_ns=[0-9.]*' | cut -d= -f2)"
    echo "cpu $cfg $ns" | tee -a "$out"
  done
done
python3 - "$out" <<'PY'
import statistics, sys
ir, cpu = {}, {}
for line in open(sys.argv[1]):
    what, cfg, *value = line.split()
    if not value:
        continue
    if what == "ir":
        ir[cfg] = int(value[0])
    else:
        cpu.setdefault(cfg, []).append(float(value[0]))
med = {cfg: statistics.median(v) for cfg, v in cpu.items()}
print("| W3 | instructions (whole run) | ratio to off | CPU ns/callback (median) | ratio to off |")
print("|---|---|---|---|---|")
for cfg in ir:
    print(f"| {cfg} | {ir[cfg]:,} | {ir[cfg] / ir['off']:.3f} | {med[cfg]:.1f} | {med[cfg] / med['off']:.3f} |")
PY
rm -f "$out"
