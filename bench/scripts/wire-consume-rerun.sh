#!/usr/bin/env bash
# Wire consume/latency measurements: fill, cold and warm catch-up consume, produce
# latency idle and under a cold catch-up consumer. Run from a scratch directory;
# DATA names the broker data directory (default /work/wire2/data).
set -euo pipefail
F=/work/main/target/release/fjord; B=/work/main/target/release/fjord-bench
DATA="${DATA:-/work/wire2/data}"
S="--bootstrap-server localhost:19092"
start() { $F --set log.dirs="$DATA" --set listeners=PLAINTEXT://127.0.0.1:19092 --set advertised.listeners=PLAINTEXT://localhost:19092 > broker.log 2>&1 & echo $! > broker.pid; for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/19092) 2>/dev/null && return; sleep 0.1; done; echo "no broker"; exit 1; }
stop() { kill "$(cat broker.pid)"; while kill -0 "$(cat broker.pid)" 2>/dev/null; do sleep 0.1; done; }
start
$B produce $S --topic cold --partitions 4 --acks 1 --producers 2 --total-bytes 3GiB --json fill.json | tail -1
stop; sync; echo 3 > /proc/sys/vm/drop_caches; start
$B consume $S --topic cold --from beginning --json consume-cold.json | tail -1
$B consume $S --topic cold --from beginning --json consume-warm.json | tail -1
$B produce $S --topic live --partitions 4 --acks 1 --producers 1 --in-flight 1 --duration-secs 8 --json produce-idle.json | tail -1
stop; sync; echo 3 > /proc/sys/vm/drop_caches; start
$B consume $S --topic cold --from beginning --json consume-cold-concurrent.json > consume-concurrent.log &
consumer=$!
sleep 0.3
$B produce $S --topic live --acks 1 --producers 1 --in-flight 1 --duration-secs 8 --json produce-with-cold-consumer.json | tail -1
wait "$consumer"; tail -1 consume-concurrent.log
stop
