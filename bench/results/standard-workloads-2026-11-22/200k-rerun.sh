#!/usr/bin/env bash
# Re-run of the 200k workload alone, to see whether its 0.6 s stall repeats.
set -euo pipefail
BIN=/work/target-tooling/release
OUT=/work/bench-tooling/run3
cat /proc/loadavg > "$OUT/load-before.txt"
"$BIN/fjord" --set "log.dirs=$OUT/data" --set "listeners=PLAINTEXT://127.0.0.1:41477" \
    --set "advertised.listeners=PLAINTEXT://localhost:41477" > "$OUT/broker.log" 2>&1 &
BROKER=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/41477) 2>/dev/null && break; sleep 0.1; done
"$BIN/fjord-bench" run --bootstrap-server localhost:41477 \
    --workload /work/wt/tooling/bench/workloads/1-topic-100-partitions-1kb-4p-4c-200k.yaml \
    --warmup-secs 20 --duration-secs 120 --name 200k-rerun --output-dir "$OUT" > "$OUT/200k-rerun.txt"
cat /proc/loadavg > "$OUT/load-after.txt"
kill $BROKER; wait $BROKER || true
rm -rf "$OUT/data"
