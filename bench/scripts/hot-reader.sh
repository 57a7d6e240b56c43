#!/usr/bin/env bash
# Produce latency under a catch-up consumer whose data is in memory (page
# cache and batch cache, no disk reads), RUNS times, on the topic `cold` that
# wire-consume-rerun.sh filled: three warm-up passes over `cold` (the first
# reads the disk and verifies, the next ones send from the page cache), then
# a fourth while the producer measures (2.5 s), then the producer alone
# (3 s). Run from a scratch directory after `cargo build --release -p
# fjord-broker -p fjord-bench -p fjord-tools`; PIN=1 as in wire-broker.sh.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/wire-broker.sh"
DATA="${DATA:?set DATA to the data directory wire-consume-rerun.sh filled}"
RUNS="${RUNS:-2}"
for run in $(seq "$RUNS"); do
  echo "== run $run"
  start
  for pass in 1 2 3; do echo -n "warm-up consume $pass: "; $B consume $S --topic cold --from beginning | tail -1; done
  produce_under_reader hot "$run"
  produce_idle hot "$run"
  $C topics delete --bootstrap-server localhost:19092 --topic live > /dev/null
  stop
done
