# Sourced by the wire benchmark scripts: the release binaries, the bootstrap
# flag, and start/stop of one broker on DATA at 127.0.0.1:19092 with its pid
# in ./broker.pid and its output in ./broker.log.
# FJORD overrides the broker binary (to compare builds).
# PIN=1: the broker runs one shard on CPU 0 and the clients run on CPU 1, so
# the clients never take the broker's core (as on a real deployment, where
# they run on other machines) and every reader shares the producer's shard.
RELEASE="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/target/release"
F=${FJORD:-$RELEASE/fjord}; B=$RELEASE/fjord-bench
if [ "${PIN:-0}" = 1 ]; then F="taskset -c 0 $F --set cores=1"; B="taskset -c 1 $B"; fi
C=$RELEASE/fjordctl
S="--bootstrap-server localhost:19092"
# start_broker COMMAND...: runs a broker (any Kafka-compatible one) on
# 127.0.0.1:19092, its pid in ./broker.pid and its output in ./broker.log,
# and returns once it accepts connections.
start_broker() {
  if (exec 3<>/dev/tcp/127.0.0.1/19092) 2>/dev/null; then echo "another broker listens on 19092"; exit 1; fi
  "$@" > broker.log 2>&1 & echo $! > broker.pid
  for i in $(seq 600); do
    kill -0 "$(cat broker.pid)" 2>/dev/null || { echo "broker exited:"; tail -3 broker.log; exit 1; }
    (exec 3<>/dev/tcp/127.0.0.1/19092) 2>/dev/null && return
    sleep 0.1
  done
  echo "no broker"; exit 1
}
start() {
  start_broker $F --set log.dirs="$DATA" --set listeners=PLAINTEXT://127.0.0.1:19092 --set advertised.listeners=PLAINTEXT://localhost:19092
}
stop() { kill "$(cat broker.pid)"; while kill -0 "$(cat broker.pid)" 2>/dev/null; do sleep 0.1; done; }
# produce_under_reader LABEL RUN: consumes `cold` from the beginning in the
# background while one producer (acks=1, 1 in flight) measures on `live` for
# 2.5 s; prints both results, JSON in LABEL-*-RUN.json.
produce_under_reader() {
  $B consume $S --topic cold --from beginning --json "$1-consume-$2.json" > "consume-$1.log" &
  local consumer=$!
  sleep 0.3
  echo -n "produce with $1 reader: "; $B produce $S --topic live --partitions 4 --acks 1 --producers 1 --in-flight 1 --duration-secs 2.5 --json "$1-with-reader-$2.json" | tail -1
  wait "$consumer"; echo -n "$1 consume under the producer: "; tail -1 "consume-$1.log"
}
# produce_idle LABEL RUN: the same producer alone, 3 s.
produce_idle() {
  echo -n "produce idle: "; $B produce $S --topic live --partitions 4 --acks 1 --producers 1 --in-flight 1 --duration-secs 3 --json "$1-idle-$2.json" | tail -1
}
