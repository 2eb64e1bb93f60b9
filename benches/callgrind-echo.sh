#!/usr/bin/env bash
# Instructions per echoed message of a W5/W14 echo server, counted by
# valgrind's callgrind (user space only; repeatable on a busy machine, where
# wall-clock and CPU-time figures are not). The server runs under callgrind
# with instrumentation off until its listeners are up; then it is switched
# on, the anchors' load generator runs CASE for SECS seconds, and the counts
# are dumped. Prints one line: instructions, messages (the load generator's
# timed messages plus one warm-up message per connection), instructions per
# message, reactor waits (calls of epoll_wait/epoll_pwait/io_uring_enter)
# per message, and the dump's path (read it with callgrind_annotate).
#
#   benches/callgrind-echo.sh CASE SERVER-COMMAND...
#   benches/callgrind-echo.sh c500s64 target/release/workloads echo-server --backend epoll
#   benches/callgrind-echo.sh c500s64 target/release/workloads echo-server --backend epoll --loops 2
#   benches/callgrind-echo.sh c1s64 target/floor/echo_reuseport --threads 1
#
# CASE: c1s64 (one connection: a turn per message), c50s512, c500s64.
# PORT and a lifetime are appended to the command. SECS (default 10).
# Valgrind runs the server's threads one at a time, so the 2-loop figure
# shows the instructions of each message and turn, not the scheduling of
# two CPUs. The load generator is the anchors'
# (/tmp/anchors/io/build/loadgen: run benches/run-scaling.sh once to build
# it). OUT_DIR keeps the dumps (default: a new directory under /tmp).
set -u
[ $# -ge 2 ] || { sed -n '2,24p' "$0" >&2; exit 64; }
case_="$1"
shift
case "$case_" in
  c1s64) conns=1 size=64 ;;
  c50s512) conns=50 size=512 ;;
  c500s64) conns=500 size=64 ;;
  *) echo "CASE: c1s64, c50s512 or c500s64" >&2; exit 64 ;;
esac
secs="${SECS:-10}"
loadgen=/tmp/anchors/io/build/loadgen
[ -x "$loadgen" ] || { echo "no $loadgen: run benches/run-scaling.sh once" >&2; exit 1; }
out_dir="${OUT_DIR:-$(mktemp -d /tmp/callgrind-echo.XXXXXX)}"
mkdir -p "$out_dir"
want=1
case " $* " in *" --loops 2 "* | *" --threads 2 "*) want=2 ;; esac
port=$((20000 + RANDOM % 10000))
hex="$(printf '%04X' "$port")"
tag="$(basename "$1")-${case_}-$$"
dump="$out_dir/callgrind.$tag.out"
log="$out_dir/server.$tag.log"

valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dump" \
  "$@" "$port" $((secs * 3 + 120)) 2>"$log" &
vpid=$!
n=0
for _ in $(seq 1 600); do
  n="$(awk -v h=":$hex" 'NR>1 && $4=="0A" && substr($2, length($2)-4)==h {n++} END{print n+0}' /proc/net/tcp)"
  [ "$n" -ge "$want" ] && break
  kill -0 "$vpid" 2>/dev/null || break
  sleep 0.1
done
if [ "$n" -lt "$want" ]; then
  echo "the server is not listening ($n of $want listeners); its log: $log" >&2
  kill -TERM "$vpid" 2>/dev/null
  exit 1
fi
callgrind_control -i on "$vpid" >/dev/null || { kill -TERM "$vpid"; exit 1; }
line="$("$loadgen" echo --port "$port" --conns "$conns" --size "$size" --secs "$secs" \
  --system callgrind --case "$case_" --workload W14)"
callgrind_control -i off "$vpid" >/dev/null
callgrind_control -d "$vpid" >/dev/null
kill -TERM "$vpid" 2>/dev/null
wait "$vpid" 2>/dev/null
# The dump of the -d request is the one with a part number; the exit's
# (instrumentation off) adds nothing.
file="$(ls -t "$dump".* 2>/dev/null | head -n 1)"
[ -n "$file" ] || file="$dump"
python3 - "$file" "$line" "$conns" "$*" <<'EOF'
import re
import sys

path, line, conns, cmd = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
kv = dict(p.split("=", 1) for p in line.split()[1:] if "=" in p)
msgs = int(kv["msgs"]) + conns
total = 0
waits = 0
names = {}
fn = ""
cfn = None
facade = 0  # eventide: its loop's calls of the reactor's wait
for l in open(path, errors="replace"):
    if l.startswith("summary:") or l.startswith("totals:"):
        total = max(total, int(l.split()[1]))
    m = re.match(r"fn=\((\d+)\)(?: (.*))?", l)
    if m:
        if m.group(2):
            names[m.group(1)] = m.group(2).strip()
        fn = names.get(m.group(1), "")
        continue
    m = re.match(r"cfn=\((\d+)\)(?: (.*))?", l)
    if m:
        if m.group(2):
            names[m.group(1)] = m.group(2).strip()
        cfn = names.get(m.group(1), "")
        continue
    if l.startswith("calls=") and cfn is not None:
        n = int(l.split("=")[1].split()[0])
        if re.fullmatch(r"(epoll_wait|epoll_pwait|epoll_pwait2|io_uring_enter)", cfn):
            waits += n
        if fn.startswith("eventide::event_loop::Loop::") and cfn == "eventide_reactor::Reactor::wait":
            facade += n
    cfn = None
if facade:
    waits = facade
print(f"{cmd} | {kv['case']} | instructions {total} | msgs {msgs} | "
      f"per msg {total / msgs:.0f} | waits per msg {waits / msgs:.3f} | {path}")
EOF
