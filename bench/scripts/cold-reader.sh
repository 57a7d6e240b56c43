#!/usr/bin/env bash
# Cold catch-up consume and produce latency under a cold catch-up consumer,
# RUNS times, on a topic `cold` that wire-consume-rerun.sh filled.
# Each run: restart + drop caches, consume `cold` alone; produce latency
# idle (1 producer, 1 in flight, 3 s); restart + drop caches, consume `cold`
# again while the producer measures (2.5 s); then delete `live`, which
# otherwise grows by about 1 GB a run. Run from a scratch directory, after
# `cargo build --release -p fjord-broker -p fjord-bench -p fjord-tools`;
# PIN=1 as in wire-broker.sh.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/wire-broker.sh"
DATA="${DATA:?set DATA to the data directory wire-consume-rerun.sh filled}"
RUNS="${RUNS:-3}"
for run in $(seq "$RUNS"); do
  echo "== run $run"
  sync; echo 3 > /proc/sys/vm/drop_caches; start
  echo -n "cold consume alone: "; $B consume $S --topic cold --from beginning --json "cold-$run.json" | tail -1
  produce_idle cold "$run"
  stop; sync; echo 3 > /proc/sys/vm/drop_caches; start
  produce_under_reader cold "$run"
  $C topics delete --bootstrap-server localhost:19092 --topic live > /dev/null
  stop
done
