#!/usr/bin/env bash
# Starts and stops the broker N times on DATA while two `yes` processes load
# both CPUs; reports the starts that never listened (a start may recover
# partitions, so give DATA a few topics with data). Used to find the glommio
# park hang that vendor/glommio/FJORD-PATCHES.md describes.
set -uo pipefail
F="${FJORD_BIN:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/target/release/fjord}"
DATA="${DATA:?set DATA to a data directory}"
N="${N:-30}"
yes > /dev/null & load1=$!
yes > /dev/null & load2=$!
trap 'kill $load1 $load2 2>/dev/null' EXIT
hangs=0
for i in $(seq "$N"); do
  $F --set log.dirs="$DATA" --set listeners=PLAINTEXT://127.0.0.1:19092 \
     --set advertised.listeners=PLAINTEXT://localhost:19092 > start-stop.log 2>&1 &
  broker=$!
  listened=no
  for _ in $(seq 150); do
    (exec 3<>/dev/tcp/127.0.0.1/19092) 2>/dev/null && { listened=yes; break; }
    sleep 0.1
  done
  if [ "$listened" = no ]; then
    hangs=$((hangs + 1))
    kill -9 "$broker"
  else
    kill "$broker"
  fi
  wait "$broker" 2>/dev/null
done
echo "starts that never listened: $hangs of $N"
