#!/usr/bin/env bash
# Produce acks=1 against fio's sequential write of the same size and queue
# depth (#18 target 3), alternating, ROUNDS (default 3) rounds: fjord
# (`produce-throughput.sh`'s run: 2 producers x 5 in flight, 64 KiB
# batches, 2 GiB, fresh data directory DATA, deleted afterwards), then fio
# with 64 KiB writes at queue depth 8 twice: as fio runs by default (the
# file preallocated with fallocate, so every write lands inside it) and
# with --fallocate=none (every write grows the file, as a log's appends
# do). Prints MB/s for each and the broker's CPU seconds. FJORD and PIN as
# in wire-broker.sh.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/wire-broker.sh"
DATA="${DATA:?set DATA to a scratch data directory (it is deleted)}"
FIO_FILE="$(dirname "$DATA")/fio-baseline.tmp"
fio_mb_s() {
  rm -f "$FIO_FILE"
  fio --name=seq64k-qd8 --filename="$FIO_FILE" --direct=1 --ioengine=io_uring --rw=write \
    --bs=64k --iodepth=8 --size=2GiB "$@" | grep -o 'WRITE: bw=[^ ]* ([0-9.]*MB/s)' | grep -o '[0-9.]*MB/s'
  rm -f "$FIO_FILE"
}
for round in $(seq "${ROUNDS:-3}"); do
  rm -rf "$DATA"; start
  fjord=$($B produce $S --topic p4 --partitions 4 --acks 1 --producers 2 --in-flight 5 \
    --total-bytes 2GiB | grep -o '[0-9.]* MB/s' | head -1)
  cpu=$(awk '{print ($14 + $15) / 100}' "/proc/$(cat broker.pid)/stat")
  stop; rm -rf "$DATA"
  echo "round $round: fjord acks=1 $fjord (broker CPU ${cpu} s), fio preallocated $(fio_mb_s), fio growing the file $(fio_mb_s --fallocate=none)"
done
