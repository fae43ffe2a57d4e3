#!/bin/bash
# Steady-state cost of one edge process under sipp: the edge is started once, warmed up at a low
# rate, then CPU (utime/stime from /proc) is read around one sipp run only, so start-up and JIT
# warm-up are excluded. Same scenario files as sipp-load (uac-rr.xml -> edge -> uas.xml).
#
#   npm run build && bash bench/steady.sh RATE [CALLS] [OVERLOAD=false|true]
#
# Bounded: sipp gets -m CALLS and -timeout, and a hard `timeout 90` around it. Loopback only
# (edge 127.0.0.1, PBX stand-in 127.0.0.2). Ports are chosen at random in 20000-59999.
set -u
RATE=${1:-1000}; CALLS=${2:-$((RATE * 8))}; OVERLOAD=${3:-false}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
S=$ROOT/test/sipp
D=$(mktemp -d /tmp/sipedge-steady-XXXX); cd "$D"
P=$((20000 + RANDOM % 40000)); EP=$((P + 1)); CP=$((P + 2))
sipp -sf "$S/uas.xml" -i 127.0.0.2 -p "$P" -bg -max_recv_loops 10000 -max_sched_loops 10000 >/dev/null 2>&1
sleep 0.5
printf 'health:\n  intervalMs: 0\nmetrics:\n  listen: null\noverload:\n  enabled: %s\n' "$OVERLOAD" > edge.yaml
node "$ROOT/dist/edge/cli.js" run --config edge.yaml --listen "udp:127.0.0.1:$EP" --upstream "udp:127.0.0.2:$P" --trusted 127.0.0.1/32 > edge.log 2>&1 &
EPID=$!
cleanup() { kill -TERM $EPID 2>/dev/null; wait $EPID 2>/dev/null; pkill -f "sipp -sf $S/uas.xml -i 127.0.0.2 -p $P" ; }
trap cleanup EXIT
sleep 1.5
timeout 90 sipp -sf "$S/uac-rr.xml" "127.0.0.1:$EP" -i 127.0.0.1 -p "$CP" -r 300 -m 1500 -l 5000 -timeout 30 -max_recv_loops 10000 -max_sched_loops 10000 >/dev/null 2>&1
read -r u1 s1 < <(awk '{print $14, $15}' /proc/$EPID/stat)
read -r mu1 ms1 < <(awk '{print $14, $15}' /proc/$EPID/task/$EPID/stat)
T0=$(date +%s.%N)
timeout 90 sipp -sf "$S/uac-rr.xml" "127.0.0.1:$EP" -i 127.0.0.1 -p "$CP" -r "$RATE" -m "$CALLS" -l 20000 -timeout 60 -max_recv_loops 10000 -max_sched_loops 10000 -trace_stat -fd 100 >/dev/null 2>&1
T1=$(date +%s.%N)
read -r u2 s2 < <(awk '{print $14, $15}' /proc/$EPID/stat)
read -r mu2 ms2 < <(awk '{print $14, $15}' /proc/$EPID/task/$EPID/stat)
python3 - "$(ls "$D"/*_.csv | head -1)" "$u1" "$s1" "$u2" "$s2" "$T0" "$T1" "$(getconf CLK_TCK)" "$RATE" "$((mu2 - mu1 + ms2 - ms1))" <<'PY'
import sys, csv
f = sys.argv[1]; u1, s1, u2, s2 = map(int, sys.argv[2:6]); t0, t1 = map(float, sys.argv[6:8]); tck = int(sys.argv[8])
rows = list(csv.reader(open(f), delimiter=';')); d = dict(zip(rows[0], rows[-1]))
ok = int(d['SuccessfulCall(C)']); fail = int(d['FailedCall(C)']); retr = int(d['Retransmissions(C)'])
n = max(ok, 1)
print(f"offered={sys.argv[9]}cps ok={ok} failed={fail} retrans={retr} achieved={ok/(t1-t0):.0f}cps "
      f"user={(u2-u1)/tck/n*1000:.3f}ms sys={(s2-s1)/tck/n*1000:.3f}ms per call "
      f"(main thread {int(sys.argv[10])/tck/n*1000:.3f}ms); edge CPU {(u2-u1+s2-s1)/tck/(t1-t0)*100:.0f}% of a core")
PY
grep -c '"overload_on"' edge.log | sed 's/^/overload_on events: /'
