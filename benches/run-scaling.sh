#!/usr/bin/env bash
# W14 echo-scaling (shared/bench/WORKLOADS.md): W5's echo with eventide's
# server on 1 loop and on 2 loops (one per core, each with its own listener
# on the port: SO_REUSEPORT), beside the peers in benches/peers/: Node
# `cluster` with 2 workers and tokio `multi_thread` with 2 workers; for
# reference, the single-threaded anchors' servers (node, tokio
# current_thread) too; and the floor: the same server on 1 and on 2 threads
# written straight on raw epoll in C (benches/peers/floor/echo_reuseport.c,
# one epoll set and one SO_REUSEPORT listener per thread), which says what
# the second thread costs on this machine with no library at all. With
# PINNED=1, also the floor's 2 threads and eventide's 2 loops pinned one per
# CPU (--pin): what the scheduler's placement costs or saves. Back to
# back in one run; then a table of medians and of the medians of the
# same-round ratios.
#
#   benches/run-scaling.sh                    3 rounds, backends uring and epoll
#   ROUNDS=1 benches/run-scaling.sh
#   BACKENDS="epoll poll" benches/run-scaling.sh
#   SECS=5 benches/run-scaling.sh             a shorter timed window (default 10)
#   SYSTEMS="eventide floor" benches/run-scaling.sh   some systems only
#                                             (of: eventide floor node tokio)
#   PINNED=1 benches/run-scaling.sh           the pinned rows too
#
# The figure: echoed messages per CPU-second of the server, where the
# server's CPU is user+sys of every thread of every process of it (for Node
# cluster: the primary and the workers), read from /proc/PID/stat of the
# server and its descendants right before the load generator starts and
# right after it exits (so it also counts the connects, one warm-up message
# per connection and the closes: under 1% of a run, the same for everyone).
# The load generator's own figure (msgs_per_server_cpu_s, the main pid's
# CPU over the timed window only) is kept as lg_msgs_per_pid_cpu_s.
#
# Placement (2 cores): the 1-loop servers run on CPU 0, the 2-loop/2-worker
# servers on CPUs 0 and 1 (the scheduler places their threads), the anchors'
# load generator on CPU 1, as in W5. Cases as W5: c50s512 and c500s64.
#
# Needs: gcc (with -pthread), cargo, node, python3, taskset. The anchors are copied to
# /tmp/anchors when not there yet (ANCHORS_SRC, default ../shared/anchors
# next to the repository); their load generator and tokio server are built
# in place. Our binary: cargo build --release (CARGO_TARGET_DIR honoured);
# benches/peers/tokio with cargo --release in its own target directory;
# the floor with gcc -O2 into <target>/floor/.
# Every RESULT line, tagged round=N, is kept in $OUT (default
# /tmp/scaling-<date>.txt). Exits 1 if any program failed or printed no
# RESULT line.
set -u

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
peers="$repo/benches/peers"
rounds="${ROUNDS:-3}"
secs="${SECS:-10}"
read -ra backends <<<"${BACKENDS:-uring epoll}"
read -ra systems <<<"${SYSTEMS:-eventide floor node tokio}"
pinned="${PINNED:-}"
want_system() { [[ " ${systems[*]} " == *" $1 "* ]]; }
anchors_src="${ANCHORS_SRC:-$repo/../shared/anchors}"
anchors=/tmp/anchors
out="${OUT:-/tmp/scaling-$(date +%Y%m%d-%H%M%S).txt}"

echo "== building eventide's workloads binary (cargo build --release)" >&2
(cd "$repo" && cargo build --release --quiet -p eventide-benches --bin workloads) || exit 1
bin="${CARGO_TARGET_DIR:-$repo/target}/release/workloads"
[ -x "$bin" ] || { echo "no binary at $bin" >&2; exit 1; }
tokio_mt="$peers/tokio/target/release/w14_echo_mt"
if want_system tokio; then
  echo "== building the tokio peers" >&2
  (cd "$peers/tokio" && env -u CARGO_TARGET_DIR cargo build --release --quiet) || exit 1
fi
if want_system node; then
  command -v node >/dev/null || { echo "node not found" >&2; exit 1; }
fi
echo "== building the floor (gcc)" >&2
floor="${CARGO_TARGET_DIR:-$repo/target}/floor/echo_reuseport"
mkdir -p "$(dirname "$floor")"
gcc -O2 -Wall -Wextra -pthread -o "$floor" "$peers/floor/echo_reuseport.c" || exit 1

if [ ! -d "$anchors/io" ]; then
  echo "== copying $anchors_src to $anchors" >&2
  cp -r "$anchors_src" "$anchors" || exit 1
fi
echo "== building the anchors' load generator and tokio echo server" >&2
loadgen="$anchors/io/build/loadgen"
mkdir -p "$anchors/io/build"
if [ ! -x "$loadgen" ] || [ "$anchors/io/loadgen/loadgen.c" -nt "$loadgen" ]; then
  gcc -O2 -Wall -Wextra -o "$loadgen" "$anchors/io/loadgen/loadgen.c" || exit 1
fi
if want_system tokio; then
  (cd "$anchors/io/tokio" && env -u CARGO_TARGET_DIR cargo build --release --locked --quiet) || exit 1
fi
tokio_ct="$anchors/io/tokio/target/release/echo_server"

# Runs: NAME|CPUS|COMMAND (PORT and a lifetime in seconds are appended).
runs=()
if want_system eventide; then
  for b in "${backends[@]}"; do
    runs+=("eventide-$b-1loop|0|$bin echo-server --backend $b")
    runs+=("eventide-$b-2loops|0,1|$bin echo-server --backend $b --loops 2")
    [ -n "$pinned" ] && runs+=("eventide-$b-2loops-pinned|0,1|$bin echo-server --backend $b --loops 2 --pin")
  done
fi
if want_system floor; then
  runs+=("floor-epoll-1thread|0|$floor --threads 1")
  runs+=("floor-epoll-2threads|0,1|$floor --threads 2")
  [ -n "$pinned" ] && runs+=("floor-epoll-2threads-pinned|0,1|$floor --threads 2 --pin")
fi
if want_system node; then
  runs+=("node-1proc|0|node $anchors/io/node/echo_server.js")
  runs+=("node-cluster-2|0,1|node $peers/node/w14_echo_cluster.js")
fi
if want_system tokio; then
  runs+=("tokio-current_thread|0|$tokio_ct")
  runs+=("tokio-multi_thread-2|0,1|$tokio_mt")
fi

failed=0
WPID=""
SPID=""
cleanup() { # only what this script started, by pid
  [ -n "$SPID" ] && kill -KILL "$SPID" 2>/dev/null
  [ -n "$WPID" ] && kill -KILL "$WPID" 2>/dev/null
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

port_in_use() {
  local hex
  hex="$(printf '%04X' "$1")"
  awk -v h=":$hex" 'NR>1 && substr($2, length($2)-4)==h {f=1} END{exit !f}' /proc/net/tcp /proc/net/tcp6
}
listeners() { # how many sockets listen on 127.0.0.1:PORT
  local hex
  hex="$(printf '%04X' "$1")"
  awk -v h=":$hex" 'NR>1 && $4=="0A" && substr($2, length($2)-4)==h {n++} END{print n+0}' /proc/net/tcp
}
pick_port() { # below the ephemeral range
  local p i
  for i in $(seq 1 50); do
    p=$((20000 + RANDOM % 10000))
    if ! port_in_use "$p"; then echo "$p"; return 0; fi
  done
  return 1
}
tree_pids() { # PID and all its descendants
  local p
  echo "$1"
  for p in $(pgrep -P "$1"); do tree_pids "$p"; done
}
tree_ticks() { # utime+stime (clock ticks) of every process of the tree, all threads
  local p total=0 t
  for p in $(tree_pids "$1"); do
    # fields after the ")" that ends the command name: utime is the 12th, stime the 13th
    t="$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}')"
    total=$((total + ${t:-0}))
  done
  echo "$total"
}

# one NAME CPUS COMMAND ROUND CASE CONNS SIZE
one() {
  local name="$1" cpus="$2" cmd="$3" round="$4" case="$5" conns="$6" size="$7"
  local port want want_line log i n t0 t1 line rc
  port="$(pick_port)" || { echo "FAIL: no free port" >&2; failed=1; return; }
  want=1
  want_line=""
  case "$cmd" in
    *"--loops 2"* | *"--threads 2"*) want=2 ;;
    *w14_echo_cluster*) want_line="workers listening" ;;
  esac
  log="$(mktemp "${TMPDIR:-/tmp}/scaling-server.XXXXXX")"
  # shellcheck disable=SC2086 # the command is words
  timeout -s KILL 120 taskset -c "$cpus" $cmd "$port" 100 2>"$log" &
  WPID=$!
  SPID=""
  for i in $(seq 1 200); do
    SPID="$(pgrep -P "$WPID" | head -n 1)"
    [ -n "$SPID" ] && break
    sleep 0.02
  done
  n=0
  for i in $(seq 1 500); do
    n="$(listeners "$port")"
    # Node cluster: the primary listens for the first worker; wait for all
    [ "$n" -ge "$want" ] && { [ "$want_line" = "" ] || grep -q "$want_line" "$log"; } && break
    [ -n "$SPID" ] && ! kill -0 "$SPID" 2>/dev/null && break
    sleep 0.02
  done
  if [ -z "$SPID" ] || [ "$n" -lt "$want" ] || { [ -n "$want_line" ] && ! grep -q "$want_line" "$log"; }; then
    echo "FAIL: $name is not listening on 127.0.0.1:$port ($n of $want listeners)" >&2
    failed=1
  else
    t0="$(tree_ticks "$SPID")"
    line="$(timeout -s KILL 60 taskset -c 1 "$loadgen" echo --port "$port" --conns "$conns" --size "$size" \
      --secs "$secs" --system "$name" --case "$case" --server-pid "$SPID" --workload W14)"
    rc=$?
    t1="$(tree_ticks "$SPID")"
    if [ "$rc" -ne 0 ] || [ -z "$line" ]; then
      echo "FAIL: $name $case (load generator exit $rc)" >&2
      failed=1
    else
      echo "$line" | sed "s/msgs_per_server_cpu_s=/lg_msgs_per_pid_cpu_s=/" |
        awk -v t0="$t0" -v t1="$t1" -v hz="$(getconf CLK_TCK)" -v r="$round" -v p="$(tree_pids "$SPID" | wc -l)" '{
          for (i = 1; i <= NF; i++) if ($i ~ /^msgs=/) { split($i, kv, "="); msgs = kv[2] }
          cpu = (t1 - t0) / hz
          printf "%s server_procs=%d server_cpu_s=%.2f msgs_per_server_cpu_s=%.0f round=%s\n", $0, p, cpu, (cpu > 0 ? msgs / cpu : -1), r
        }' | tee -a "$out"
    fi
  fi
  kill -TERM "$SPID" 2>/dev/null
  for i in $(seq 1 100); do
    kill -0 "$SPID" 2>/dev/null || break
    sleep 0.03
  done
  kill -0 "$SPID" 2>/dev/null && kill -KILL "$SPID" 2>/dev/null
  wait "$WPID" 2>/dev/null
  cat "$log" >&2
  rm -f "$log"
  WPID=""
  SPID=""
}

: >"$out"
for round in $(seq 1 "$rounds"); do
  for c in "c50s512 50 512" "c500s64 500 64"; do
    read -r case conns size <<<"$c"
    for r in "${runs[@]}"; do
      IFS='|' read -r name cpus cmd <<<"$r"
      echo "== round $round/$rounds: W14 $case $name (CPUs $cpus)" >&2
      one "$name" "$cpus" "$cmd" "$round" "$case" "$conns" "$size"
    done
  done
done
echo "== RESULT lines in $out" >&2

echo
echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(nproc) CPUs, $(uname -sr);" \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); $rounds rounds of $secs s"
echo
python3 - "$out" "${backends[@]}" <<'EOF'
import statistics
import sys

path, backends = sys.argv[1], sys.argv[2:]
rows = {}  # (case, system) -> {round: kv}
for line in open(path):
    if not line.startswith("RESULT "):
        continue
    kv = dict(p.split("=", 1) for p in line.split()[1:] if "=" in p)
    rows.setdefault((kv["case"], kv["system"]), {})[kv["round"]] = kv
cases = ["c50s512", "c500s64"]


def vals(case, system, key="msgs_per_server_cpu_s"):
    return {r: float(kv[key]) for r, kv in rows.get((case, system), {}).items()}


def cpu_pct(case, system):
    return {r: float(kv["server_cpu_s"]) / float(kv["secs"]) * 100
            for r, kv in rows.get((case, system), {}).items()}


def med(d):
    return statistics.median(d.values()) if d else None


def fmt(x, unit=""):
    return "-" if x is None else (f"{x / 1e3:.1f} k" if unit == "k" else f"{x:.0f}")


def ratio(a, b):
    rs = [a[r] / b[r] for r in a if r in b and b[r] > 0]
    return f"{statistics.median(rs):.2f}x" if rs else "-"


systems = []
for b in backends:
    systems += [f"eventide-{b}-1loop", f"eventide-{b}-2loops", f"eventide-{b}-2loops-pinned"]
systems += ["floor-epoll-1thread", "floor-epoll-2threads", "floor-epoll-2threads-pinned",
            "node-1proc", "node-cluster-2", "tokio-current_thread", "tokio-multi_thread-2"]
print("Medians: messages per server CPU-second (all threads and processes of the server),")
print("server CPU % (100 = one core), messages per second, and the share of both CPUs")
print("taken by other processes meanwhile (the load generator's others_cpu_pct; a quiet")
print("machine shows a few %):")
print()
print("| system | " + " | ".join(f"{c} msgs/CPU-s | {c} CPU % | {c} msgs/s | {c} others %" for c in cases) + " |")
print("|---|" + "---:|" * (4 * len(cases)))
for s in systems:
    if not any(vals(c, s) for c in cases):
        continue  # not run
    cells = []
    for c in cases:
        cells.append(fmt(med(vals(c, s)), "k"))
        cells.append(fmt(med(cpu_pct(c, s))))
        cells.append(fmt(med(vals(c, s, "value")), "k"))
        cells.append(fmt(med(vals(c, s, "others_cpu_pct"))))
    print(f"| {s} | " + " | ".join(cells) + " |")
print()
print("Ratios of messages per server CPU-second, median of the same-round ratios")
print("(goal: 2 loops / 1 loop >= 0.95x; 2 loops / each 2-worker peer >= 1x):")
print()
head = ["2 loops / 1 loop", "2 loops / node cluster 2", "2 loops / tokio multi_thread 2",
        "1 loop / node 1", "1 loop / tokio current_thread"]
print("| backend | case | " + " | ".join(head) + " |")
print("|---|---|" + "---:|" * len(head))
for b in backends:
    for c in cases:
        one, two = vals(c, f"eventide-{b}-1loop"), vals(c, f"eventide-{b}-2loops")
        cells = [ratio(two, one), ratio(two, vals(c, "node-cluster-2")),
                 ratio(two, vals(c, "tokio-multi_thread-2")),
                 ratio(one, vals(c, "node-1proc")), ratio(one, vals(c, "tokio-current_thread"))]
        print(f"| {b} | {c} | " + " | ".join(cells) + " |")
print()
print("Scaling of the floor and the peers (2 threads or workers / 1):")
print()
print("| case | floor (raw epoll) 2 / 1 | floor 2 pinned / 1 | node cluster 2 / node 1 | tokio multi_thread 2 / current_thread |")
print("|---|---:|---:|---:|---:|")
for c in cases:
    print(f"| {c} | {ratio(vals(c, 'floor-epoll-2threads'), vals(c, 'floor-epoll-1thread'))} | "
          f"{ratio(vals(c, 'floor-epoll-2threads-pinned'), vals(c, 'floor-epoll-1thread'))} | "
          f"{ratio(vals(c, 'node-cluster-2'), vals(c, 'node-1proc'))} | "
          f"{ratio(vals(c, 'tokio-multi_thread-2'), vals(c, 'tokio-current_thread'))} |")
print()
print("eventide beside the floor: 2 loops / 1 loop, the floor's 2 threads / 1 thread,")
print("and 1 loop and 2 loops / the floor's 1 and 2 threads:")
print()
print("| backend | case | eventide 2 / 1 | floor 2 / 1 | eventide 2 pinned / 1 | floor 2 pinned / 1 | 1 loop / floor 1 | 2 loops / floor 2 | 2 pinned / floor 2 pinned |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
f1 = {c: vals(c, "floor-epoll-1thread") for c in cases}
f2 = {c: vals(c, "floor-epoll-2threads") for c in cases}
f2p = {c: vals(c, "floor-epoll-2threads-pinned") for c in cases}
for b in backends:
    for c in cases:
        one, two = vals(c, f"eventide-{b}-1loop"), vals(c, f"eventide-{b}-2loops")
        twop = vals(c, f"eventide-{b}-2loops-pinned")
        print(f"| {b} | {c} | {ratio(two, one)} | {ratio(f2[c], f1[c])} | {ratio(twop, one)} | "
              f"{ratio(f2p[c], f1[c])} | {ratio(one, f1[c])} | {ratio(two, f2[c])} | {ratio(twop, f2p[c])} |")
EOF
exit $failed
