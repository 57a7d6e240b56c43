#!/usr/bin/env bash
# Runs the engine benchmarks recorded in bench/RESULTS.md and their fio
# baselines, in the current directory (data and the fio file live there, so
# both are on the same file system). Usage:
#   bench/run-engine-benchmarks.sh OUT_DIR
# Sizes can be lowered for a quick run: APPEND_BYTES, FLUSH_BYTES,
# RESTART_BIG_BYTES (defaults 4GiB, 256MiB, 10GiB), FLUSH_FILE_BYTES (each
# of the 8 files of the like-for-like fdatasync baseline, default 32MiB).
set -euo pipefail
out=${1:?usage: $0 OUT_DIR}
mkdir -p "$out"
bench=${FJORD_BENCH:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/release/fjord-bench}
append_bytes=${APPEND_BYTES:-4GiB}
flush_bytes=${FLUSH_BYTES:-256MiB}
restart_big_bytes=${RESTART_BIG_BYTES:-10GiB}
fio_file=./fio-baseline.tmp
trap 'rm -f "$fio_file"' EXIT

{
  date -u
  echo "nproc: $(nproc)"
  free -h
  df -hT .
  lsblk
  uname -r
  grep -m1 "model name" /proc/cpuinfo
  echo "ulimit -l: $(ulimit -l)  ulimit -n: $(ulimit -n)"
  fio --version
} > "$out/machine.txt" 2>&1

fio_write() { # name bs iodepth size [extra fio args...]
  local name=$1 bs=$2 depth=$3 size=$4
  shift 4
  fio --name="$name" --filename="$fio_file" --direct=1 --ioengine=io_uring --rw=write \
    --bs="$bs" --iodepth="$depth" --size="$size" "$@" --output-format=json+ \
    > "$out/fio-$name.json"
  rm -f "$fio_file"
}

# Throughput: 64 KiB batches one in flight per partition, and 1 MiB batches
# four in flight per partition.
fio_write seq64k-qd1 64k 1 "$append_bytes"
"$bench" engine append --batch-bytes 64KiB --concurrency 1 --total-bytes "$append_bytes" \
  --json "$out/append-64k-c1.json"
fio_write seq1m-qd4 1m 4 "$append_bytes"
"$bench" engine append --batch-bytes 1MiB --concurrency 4 --total-bytes "$append_bytes" \
  --json "$out/append-1m-c4.json"

# Durability latency: flush after every 64 KiB batch, vs fio fdatasync per
# write: one file, and like for like with the engine's 8 partitions, 8 files
# with one write + fdatasync in flight each (#18 target 4 compares with this).
fio_write fdatasync64k-qd1 64k 1 "$flush_bytes" --fdatasync=1
fio --name=fdatasync64k-8files --directory=. --direct=1 --ioengine=io_uring --rw=write \
  --bs=64k --iodepth=1 --numjobs=8 --size="${FLUSH_FILE_BYTES:-32MiB}" --fdatasync=1 \
  --group_reporting --output-format=json+ > "$out/fio-fdatasync64k-8files.json"
rm -f ./fdatasync64k-8files.*
"$bench" engine append --batch-bytes 64KiB --concurrency 1 --flush-every-batch \
  --total-bytes "$flush_bytes" --json "$out/append-64k-flush.json"

# Restart: small vs large log, clean and after kill -9.
"$bench" engine restart --total-bytes 10MiB --json "$out/restart-10mib.json"
"$bench" engine restart --total-bytes "$restart_big_bytes" --json "$out/restart-big.json"

# Idle partitions.
"$bench" engine idle-memory --partitions 1000 --json "$out/idle-1000.json"
"$bench" engine idle-memory --partitions 10000 --json "$out/idle-10000.json"
