#!/usr/bin/env bash
# Where a W14 server's CPU per message goes: one W14 run of one server (as
# benches/run-scaling.sh runs it: same placement, same load generator), with
# per message: system calls by name and context switches (perf stat's
# tracepoints on the server's threads), user and system CPU microseconds
# (utime/stime of every thread, /proc/PID/task/*/stat, before the load
# starts and after it ends), per thread and in all.
#
#   benches/peers/floor/probe.sh CASE CPUS SERVER-COMMAND...
#   benches/peers/floor/probe.sh c50s512 0 target/floor/echo_reuseport --threads 1
#   benches/peers/floor/probe.sh c50s512 0,1 target/release/workloads echo-server --backend epoll --loops 2
#
# CASE: c50s512 or c500s64. PORT and a lifetime are appended to the
# command. SECS (default 10) is the timed window. The load generator is the
# anchors' (/tmp/anchors/io/build/loadgen: run benches/run-scaling.sh once
# to build it), on CPU 1. Needs perf (tracepoints readable: run as root or
# perf_event_paranoid <= 1 for other users' processes; same user is enough
# here). Prints a table on stdout; the server's stderr and perf's output go
# to stderr.
set -u
[ $# -ge 3 ] || { sed -n '2,20p' "$0" >&2; exit 64; }
case_="$1" cpus="$2"
shift 2
case "$case_" in
  c50s512) conns=50 size=512 ;;
  c500s64) conns=500 size=64 ;;
  *) echo "CASE: c50s512 or c500s64" >&2; exit 64 ;;
esac
secs="${SECS:-10}"
loadgen=/tmp/anchors/io/build/loadgen
[ -x "$loadgen" ] || { echo "no $loadgen: run benches/run-scaling.sh once" >&2; exit 1; }
port=$((20000 + RANDOM % 10000))
events="raw_syscalls:sys_enter,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_read,syscalls:sys_enter_recvfrom,syscalls:sys_enter_write,syscalls:sys_enter_sendto,syscalls:sys_enter_epoll_ctl,syscalls:sys_enter_futex,context-switches,cpu-migrations"

log="$(mktemp)"
perfout="$(mktemp)"
timeout -s KILL $((secs + 60)) taskset -c "$cpus" "$@" "$port" $((secs + 30)) 2>"$log" &
wpid=$!
spid=""
for _ in $(seq 1 200); do
  spid="$(pgrep -P "$wpid" | head -n 1)"
  [ -n "$spid" ] && break
  sleep 0.02
done
hex="$(printf '%04X' "$port")"
for _ in $(seq 1 300); do
  awk -v h=":$hex" 'NR>1 && $4=="0A" && substr($2, length($2)-4)==h {f=1} END{exit !f}' /proc/net/tcp && break
  sleep 0.02
done
sleep 0.3 # the other loops' listeners

ticks() { # TID utime stime, every thread of the server
  local t
  for t in /proc/"$spid"/task/*; do
    echo "$(basename "$t") $(sed 's/.*) //' "$t/stat" | awk '{print $12, $13}') $(cat "$t/comm")"
  done
}
t0="$(ticks)"
perf stat --per-thread -x, -e "$events" -p "$spid" -o "$perfout" &
ppid=$!
line="$(taskset -c 1 "$loadgen" echo --port "$port" --conns "$conns" --size "$size" --secs "$secs" \
  --system probe --case "$case_" --server-pid "$spid" --workload W14)"
t1="$(ticks)"
kill -INT "$ppid"
wait "$ppid" 2>/dev/null
kill -TERM "$spid" 2>/dev/null
wait "$wpid" 2>/dev/null
cat "$log" >&2
echo "$line" >&2
python3 - "$perfout" "$line" "$(getconf CLK_TCK)" <<EOF
import sys
perf, line, hz = sys.argv[1], sys.argv[2], int(sys.argv[3])
kv = dict(p.split("=", 1) for p in line.split()[1:] if "=" in p)
msgs = float(kv["msgs"])
def parse(s):
    d = {}
    for l in s.strip().splitlines():
        tid, u, st, *name = l.split()
        d[tid] = (int(u), int(st), " ".join(name))
    return d
a, b = parse("""$t0"""), parse("""$t1""")
print(f"server: msgs={msgs:.0f} msgs/s={float(kv['value']):.0f} (loadgen CPU {kv.get('loadgen_cpu_pct')}%, others {kv.get('others_cpu_pct')}%)")
tu = ts = 0
print("| thread | user us/msg | sys us/msg | |")
print("|---|---:|---:|---|")
for tid, (u1, s1, name) in b.items():
    u0, s0, _ = a.get(tid, (0, 0, name))
    du, ds = (u1 - u0) / hz, (s1 - s0) / hz
    tu += du; ts += ds
    if du + ds > 0:
        print(f"| {name} ({tid}) | {du / msgs * 1e6:.2f} | {ds / msgs * 1e6:.2f} | |")
print(f"| all | {tu / msgs * 1e6:.2f} | {ts / msgs * 1e6:.2f} | user {tu / (tu + ts) * 100:.1f}% |" if tu + ts else "| all | - | - | |")
print(f"msgs per server CPU-s: {msgs / (tu + ts):.0f}" if tu + ts else "")
tot = {}
per = {}
for l in open(perf):
    f = l.strip().split(",")
    if len(f) < 4 or not f[1].strip().replace(".", "").isdigit():
        continue
    thread, val, ev = f[0], float(f[1]), f[3]
    tot[ev] = tot.get(ev, 0) + val
    per.setdefault(thread, {})[ev] = val
print()
print("| event | per msg (all threads) | " + " | ".join(t for t in per if sum(per[t].values()) > 0) + " |")
print("|---|---:|" + "---:|" * sum(1 for t in per if sum(per[t].values()) > 0))
for ev, v in tot.items():
    if v == 0: continue
    cells = [f"{per[t].get(ev, 0) / msgs:.3f}" for t in per if sum(per[t].values()) > 0]
    print(f"| {ev.replace('syscalls:sys_enter_', '')} | {v / msgs:.3f} | " + " | ".join(cells) + " |")
EOF
rm -f "$log" "$perfout"
