#!/usr/bin/env bash
# Catch-up reads of verified data, sent with sendfile from the page cache,
# against how long ago their pages were evicted: one broker over DATA (topic
# `cold` from wire-consume-rerun.sh), five consumes in a row. The first reads
# with O_DIRECT and verifies every batch; the rest are verified data not in
# the engine's cache, so they go out with sendfile: page cache dropped at the
# start, warm, evicted just before, and evicted WAIT seconds (default 20)
# before. On a VM whose balloon reports free pages to the host, the last one
# refills the page cache into memory the host took back (tuning/cpu-and-irq.md).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/wire-broker.sh"
DATA="${DATA:?set DATA to the data directory wire-consume-rerun.sh filled}"
evict() {
  python3 - "$DATA" <<'PY'
import glob, os, sys
for path in glob.glob(os.path.join(sys.argv[1], "cold-*", "*.log")):
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
PY
}
consume() { echo -n "$1: "; $B consume $S --topic cold --from beginning | tail -1; }
sync; echo 3 > /proc/sys/vm/drop_caches; start
consume "O_DIRECT, unverified"
consume "sendfile, page cache dropped at start"
consume "sendfile, page cache warm"
evict; consume "sendfile, evicted just before"
evict; sleep "${WAIT:-20}"; consume "sendfile, evicted ${WAIT:-20} s before"
stop
