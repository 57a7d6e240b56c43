#!/usr/bin/env bash
# Where a slow produce goes: records the broker's CPU 0 (io_uring, block,
# socket syscall and scheduler tracepoints) for 2 s while one producer (acks=1,
# 1 request in flight) runs, with a cold catch-up consumer of `cold`
# (READER=1, the default) or alone (READER=0), then cuts each request into
# phases with produce_phases.py. Needs perf and PIN=1 (one shard on CPU 0,
# clients and perf on CPU 1); DATA as in cold-reader.sh. The raw trace is
# left in ./trace.txt.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/wire-broker.sh"
DATA="${DATA:?set DATA to the data directory wire-consume-rerun.sh filled}"
[ "${PIN:-0}" = 1 ] || { echo "run with PIN=1: the trace follows the broker's shard on CPU 0"; exit 1; }
events=io_uring:io_uring_submit_req,io_uring:io_uring_complete,io_uring:io_uring_queue_async_work
events=$events,block:block_rq_issue,syscalls:sys_exit_sendto,syscalls:sys_exit_recvfrom
events=$events,sched:sched_switch,sched:sched_wakeup
sync; echo 3 > /proc/sys/vm/drop_caches; start
if [ "${READER:-1}" = 1 ]; then
  $B consume $S --topic cold --from beginning > trace-consume.log & consumer=$!
fi
sleep 0.3
taskset -c 1 perf record -q -C 0 -e "$events" -o trace.data -- sleep 2 2>/dev/null & recorder=$!
echo -n "produce: "; $B produce $S --topic live --partitions 4 --acks 1 --producers 1 --in-flight 1 --duration-secs 2.5 | tail -1
wait $recorder
if [ "${READER:-1}" = 1 ]; then wait "$consumer"; echo -n "consume: "; tail -1 trace-consume.log; fi
$C topics delete --bootstrap-server localhost:19092 --topic live > /dev/null
stop
perf script -i trace.data > trace.txt 2>/dev/null
python3 "$(dirname "${BASH_SOURCE[0]}")/produce_phases.py" trace.txt
