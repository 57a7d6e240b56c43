#!/usr/bin/env bash
# Produce throughput, acks=1: 2 producers, IN_FLIGHT (default 5) requests in
# flight each, 64 KiB batches of 1 KiB records, 2 GiB per run, RUNS (default
# 3) runs into topic p4 (4 partitions) of a fresh data directory DATA, which
# is deleted afterwards. FJORD and PIN as in wire-broker.sh.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/wire-broker.sh"
DATA="${DATA:?set DATA to a scratch data directory (it is deleted)}"
rm -rf "$DATA"; start
for run in $(seq "${RUNS:-3}"); do
  $B produce $S --topic p4 --partitions 4 --acks 1 --producers 2 --in-flight "${IN_FLIGHT:-5}" --total-bytes 2GiB --json "produce-$run.json" | grep -E "MB/s|latency" | tr '\n' ' '; echo
done
stop; rm -rf "$DATA"
