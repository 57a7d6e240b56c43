#!/usr/bin/env bash
# Cold catch-up consume only (data already filled): restart, drop caches, consume twice.
set -euo pipefail
F=/work/main/target/release/fjord; B=/work/main/target/release/fjord-bench
DATA="${DATA:?set DATA to the data directory wire-consume-rerun.sh filled}"
S="--bootstrap-server localhost:19092"
start() { $F --set log.dirs="$DATA" --set listeners=PLAINTEXT://127.0.0.1:19092 --set advertised.listeners=PLAINTEXT://localhost:19092 > broker.log 2>&1 & echo $! > broker.pid; for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/19092) 2>/dev/null && return; sleep 0.1; done; echo "no broker"; exit 1; }
stop() { kill "$(cat broker.pid)"; while kill -0 "$(cat broker.pid)" 2>/dev/null; do sleep 0.1; done; }
sync; echo 3 > /proc/sys/vm/drop_caches; start
$B consume $S --topic cold --from beginning --json consume-cold.json | tail -1
$B consume $S --topic cold --from beginning --json consume-warm.json | tail -1
stop
