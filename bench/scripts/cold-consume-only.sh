#!/usr/bin/env bash
# Cold catch-up consume only (data already filled): restart, drop caches, consume twice.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/wire-broker.sh"
DATA="${DATA:?set DATA to the data directory wire-consume-rerun.sh filled}"
sync; echo 3 > /proc/sys/vm/drop_caches; start
$B consume $S --topic cold --from beginning --json consume-cold.json | tail -1
$B consume $S --topic cold --from beginning --json consume-warm.json | tail -1
stop
