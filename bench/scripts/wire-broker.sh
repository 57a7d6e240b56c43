# Sourced by the wire benchmark scripts: the release binaries, the bootstrap
# flag, and start/stop of one broker on DATA at 127.0.0.1:19092 with its pid
# in ./broker.pid and its output in ./broker.log.
F=/work/main/target/release/fjord; B=/work/main/target/release/fjord-bench
C=/work/main/target/release/fjordctl
S="--bootstrap-server localhost:19092"
start() { $F --set log.dirs="$DATA" --set listeners=PLAINTEXT://127.0.0.1:19092 --set advertised.listeners=PLAINTEXT://localhost:19092 > broker.log 2>&1 & echo $! > broker.pid; for i in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/19092) 2>/dev/null && return; sleep 0.1; done; echo "no broker"; exit 1; }
stop() { kill "$(cat broker.pid)"; while kill -0 "$(cat broker.pid)" 2>/dev/null; do sleep 0.1; done; }
