#!/usr/bin/env bash
# Replication (#17): `fjord-bench run` of 1 KiB records against one node
# (acks=1, acks=all) and against three nodes on this host (RF=3,
# min.insync.replicas=2, acks=all), each at the maximum rate and at a fixed
# RATE (default 51200 msg/s, 50 MiB/s); ROUNDS (default 2) rounds, the
# configurations alternating. Prints per run: publish MB/s, publish p99 and
# end-to-end p99 (ms), and the brokers' CPU seconds per GiB published (for
# RF=3 summed over the three nodes; the brokers also serve two consumers).
# JSON and .hgrm files go to OUT.
# DATA is a scratch directory (deleted). FJORD overrides the broker binary.
# Every node of the cluster runs one shard (`cores=1`): three brokers share
# this host's cores; the single node runs its default shard count.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
R="$ROOT/target/release"; F=${FJORD:-$R/fjord}; B=$R/fjord-bench
DATA="${DATA:?set DATA to a scratch data directory (it is deleted)}"
OUT="${OUT:-$PWD/replication-results}"
RATE="${RATE:-51200}"; WARMUP="${WARMUP:-10}"; DURATION="${DURATION:-30}"
CLK=$(getconf CLK_TCK)
PIDS=()
# Bounded disk use: each partition keeps at most 256 MiB.
RETENTION=(--set log.retention.bytes=268435456 --set log.segment.bytes=67108864
           --set log.retention.check.interval.ms=5000)

listening() { (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; }
wait_listening() {
  for _ in $(seq 600); do listening "$1" && return; sleep 0.1; done
  echo "nothing listens on $1"; exit 1
}
start_single() {
  rm -rf "$DATA"; mkdir -p "$DATA"
  $F --set log.dirs="$DATA/single" --set listeners=PLAINTEXT://127.0.0.1:19092 \
     --set advertised.listeners=PLAINTEXT://127.0.0.1:19092 "${RETENTION[@]}" \
     > "$DATA/single.log" 2>&1 &
  PIDS=($!); wait_listening 19092
}
start_cluster() {
  rm -rf "$DATA"; mkdir -p "$DATA"; PIDS=()
  for n in 1 2 3; do
    $F --config "$ROOT/tuning/cluster/node$n.properties" --set log.dirs="$DATA/node$n" \
       --set cores=1 --set min.insync.replicas=2 "${RETENTION[@]}" > "$DATA/node$n.log" 2>&1 &
    PIDS+=($!)
  done
  for port in 19092 19192 19292; do wait_listening "$port"; done
}
stop_all() {
  kill "${PIDS[@]}" 2>/dev/null || true
  for pid in "${PIDS[@]}"; do while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done; done
}
cpu_seconds() {
  local total=0
  for pid in "${PIDS[@]}"; do
    total=$(awk -v clk="$CLK" -v t="$total" '{print t + ($14 + $15) / clk}' "/proc/$pid/stat")
  done
  echo "$total"
}
# run NAME RF ACKS RATE
run() {
  local before after
  before=$(cpu_seconds)
  $B run --bootstrap-server 127.0.0.1:19092 --name "$1" --topics 1 --partitions 12 \
     --replication-factor "$2" --acks "$3" --rate "$4" --message-size 1KiB \
     --payload-randomness 1.0 --producers 2 --consumers 2 --linger-ms 1 --batch-size 64KiB \
     --max-in-flight 5 --compression none --warmup-secs "$WARMUP" --duration-secs "$DURATION" \
     --output-dir "$OUT" > "$OUT/$1.log"
  after=$(cpu_seconds)
  python3 - "$OUT/$1.json" "$before" "$after" "$((WARMUP + DURATION))" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
cpu = float(sys.argv[3]) - float(sys.argv[2])
p, e = report["publish"], report["end_to_end"]
# The CPU counts the warm-up too: divide by what the whole run published.
gib = p["mb_per_sec"] * 1e6 * float(sys.argv[4]) / 2**30 or float("nan")
print(f'{report["workload"]["name"]:24} {p["mb_per_sec"]:8.1f} MB/s  publish p99 '
      f'{p["latency"]["p99_us"] / 1000:8.2f} ms  e2e p99 {e["latency"]["p99_us"] / 1000:8.2f} ms  '
      f'broker CPU {cpu / gib:6.2f} s/GiB (whole run incl. warm-up: {cpu:.1f} s)')
EOF
}
mkdir -p "$OUT"
trap stop_all EXIT
for round in $(seq "${ROUNDS:-2}"); do
  start_single
  run "single-acks1-max-$round" 1 1 0
  run "single-acksall-max-$round" 1 -1 0
  run "single-acksall-50m-$round" 1 -1 "$RATE"
  stop_all
  start_cluster
  run "rf3-acksall-max-$round" 3 -1 0
  run "rf3-acksall-50m-$round" 3 -1 "$RATE"
  stop_all
done
