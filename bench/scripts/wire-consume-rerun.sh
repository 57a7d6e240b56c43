#!/usr/bin/env bash
# Wire consume/latency measurements: fill, cold and warm catch-up consume, produce
# latency idle and under a cold catch-up consumer. Run from a scratch directory;
# DATA names the broker data directory (required).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/wire-broker.sh"
DATA="${DATA:?set DATA to the broker data directory to fill}"
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
