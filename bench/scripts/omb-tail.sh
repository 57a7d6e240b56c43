#!/usr/bin/env bash
# The OMB workload `1-topic-100-partitions-1kb-4p-4c` at 50k and 200k msg/s
# (#18 target 2), alternating, ROUNDS (default 3) rounds, a fresh broker
# on DATA (deleted) for every run, WARMUP (10) and DURATION (30) seconds.
# Prints per run the broker's CPU seconds, the publish p99 with its two
# parts (the load generator's delay behind its schedule and the request's
# round trip) and the end-to-end p99; the full reports land in
# ./out-RATE-ROUND. FJORD and PIN as in wire-broker.sh.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/wire-broker.sh"
DATA="${DATA:?set DATA to a scratch data directory (it is deleted)}"
WORKLOADS="$(cd "$(dirname "${BASH_SOURCE[0]}")/../workloads" && pwd)/1-topic-100-partitions-1kb-4p-4c"
for round in $(seq "${ROUNDS:-3}"); do
  for rate in 50k 200k; do
    rm -rf "$DATA"; start
    $B run $S --workload "$WORKLOADS-$rate.yaml" --warmup-secs "${WARMUP:-10}" \
      --duration-secs "${DURATION:-30}" --output-dir "out-$rate-$round" > "run-$rate-$round.txt" 2>&1
    cpu=$(awk '{print ($14 + $15) / 100}' "/proc/$(cat broker.pid)/stat")
    stop; rm -rf "$DATA"
    echo "round $round $rate: broker CPU ${cpu} s; $(grep -E 'publish msg/s|publish p99 ms|delay p99|request p99|e2e p99 ms' \
      "run-$rate-$round.txt" | tr -s ' ' | sed 's/^ //' | paste -sd ';')"
  done
done
