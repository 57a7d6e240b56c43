#!/usr/bin/env bash
# Runs the standard workloads (bench/workloads/*.yaml) against a fresh fjord on
# this machine, with an iperf3 loopback baseline from the same session, and
# compares them. Usage:
#   bench/scripts/run-standard-workloads.sh OUT_DIR [WARMUP MEASURED [MAX_WARMUP MAX_MEASURED]]
# Without numbers the workloads' own durations (60 s + 300 s) are used. The
# max-rate workload writes as fast as the broker takes it and the broker keeps
# it all (retention runs every 5 minutes), so its data must fit on the disk:
# MAX_WARMUP/MAX_MEASURED shorten it alone (400 MB/s for 40 s is 16 GB).
# Needs a release build (cargo build --release -p fjord-broker -p fjord-bench)
# and iperf3; CARGO_TARGET_DIR says where the binaries are.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT=$(realpath -m "${1:?usage: $0 OUT_DIR [WARMUP_SECS MEASURED_SECS]}")
DURATIONS=()
if [[ $# -ge 3 ]]; then DURATIONS=(--warmup-secs "$2" --duration-secs "$3"); fi
MAX_DURATIONS=("${DURATIONS[@]}")
if [[ $# -ge 5 ]]; then MAX_DURATIONS=(--warmup-secs "$4" --duration-secs "$5"); fi
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release"
# A free port: fjord listens with SO_REUSEPORT, so a second broker on a fixed
# port would share it silently and take some of the connections.
PORT=$(python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
mkdir -p "$OUT"
rm -rf "$OUT/data"

ulimit -l unlimited 2>/dev/null || true
{
  echo "date: $(date -u)"
  echo "commit: $(git rev-parse HEAD)"
  echo "cpus: $(nproc); $(grep -m1 'model name' /proc/cpuinfo)"
  echo "memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "kernel: $(uname -r)"
  echo "disk: $(lsblk -dno NAME,SIZE,TYPE | tr '\n' ' ')"
  echo "free disk: $(df -h --output=avail "$OUT" | tail -1)"
  echo "load before: $(cat /proc/loadavg)"
} > "$OUT/machine.txt"

echo "== iperf3 loopback baseline"
iperf3 -s -1 -p 5201 > /dev/null 2>&1 &
sleep 0.5
iperf3 -c 127.0.0.1 -p 5201 -t 10 -J > "$OUT/iperf3.json"
python3 -c "import json,sys; e=json.load(open(sys.argv[1]))['end']['sum_received']; print(f\"iperf3: {e['bits_per_second']/1e9:.1f} Gbit/s = {e['bits_per_second']/8e6:.0f} MB/s\")" "$OUT/iperf3.json" | tee -a "$OUT/machine.txt"

echo "== fjord on 127.0.0.1:$PORT, data in $OUT/data"
"$BIN/fjord" --set "log.dirs=$OUT/data" --set "listeners=PLAINTEXT://127.0.0.1:$PORT" \
    --set "advertised.listeners=PLAINTEXT://localhost:$PORT" > "$OUT/broker.log" 2>&1 &
BROKER=$!
trap 'kill $BROKER 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done

RESULTS=()
for workload in bench/workloads/1-topic-100-partitions-1kb-4p-4c-50k.yaml \
                bench/workloads/1-topic-100-partitions-1kb-4p-4c-200k.yaml \
                bench/workloads/1-topic-100-partitions-1kb-4p-4c-max.yaml; do
  name=$(basename "$workload" .yaml)
  durations=("${DURATIONS[@]}")
  if [[ $name == *-max ]]; then durations=("${MAX_DURATIONS[@]}"); fi
  echo "== $name"
  "$BIN/fjord-bench" run --bootstrap-server "localhost:$PORT" --workload "$workload" \
      --output-dir "$OUT" "${durations[@]}" | tee "$OUT/$name.txt"
  RESULTS+=("$OUT/$name.json")
done
echo "load after: $(cat /proc/loadavg)" >> "$OUT/machine.txt"

echo "== compare"
"$BIN/fjord-bench" compare "${RESULTS[@]}" --output-dir "$OUT" | tee "$OUT/compare.txt"
kill $BROKER
wait $BROKER 2>/dev/null || true
rm -rf "$OUT/data"
