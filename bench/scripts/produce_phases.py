"""Cuts the requests of one producer (1 in flight) in a `perf script` trace of
the broker's shard into phases, from trace-produce.sh's tracepoints:

A1  previous response sent -> next request's 4-byte size read (the client's
    turnaround and the shard noticing the request)
A2  size read -> the append's write submitted
B   write submitted -> write completion posted (io_uring worker hand-off,
    the worker's wait for the CPU, the device)
C   write completion -> response sent

and the writes into: submission -> hand-off to an io_uring worker, hand-off
-> block I/O issued (the worker's wait for the CPU), issue -> completion.
A produce response is the 56-byte send of fjord-bench's single-partition
requests; the append is the request's first WRITE_FIXED.
"""

import re
import sys

EVENT = re.compile(r"\s(\d+\.\d+):\s+(\S+):")
REQ = re.compile(r"req (0x[0-9a-f]+)")
OPCODE = re.compile(r"opcode (\w+)")
RESPONSE_BYTES = 0x38


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def report(name, values):
    us = [v * 1e6 for v in values]
    print(f"{name:32s} p50 {percentile(us, .5):6.0f}  p90 {percentile(us, .9):6.0f}  "
          f"p99 {percentile(us, .99):6.0f}  max {max(us):6.0f} us")


def main(path):
    submitted = {}   # req -> write record while in flight
    writes = []      # completed write records
    handed_off = []  # writes handed to a worker, waiting for their block I/O
    timeline = []    # (time, kind)
    for line in open(path):
        match = EVENT.search(line)
        if not match:
            continue
        time, event = float(match.group(1)), match.group(2)
        if event == "io_uring:io_uring_submit_req" and "WRITE_FIXED" in line:
            write = {"submit": time}
            submitted[REQ.search(line).group(1)] = write
            timeline.append((time, "submit"))
        elif event == "io_uring:io_uring_queue_async_work":
            write = submitted.get(re.search(r"request (0x[0-9a-f]+)", line).group(1))
            if write is not None:
                write["handoff"] = time
                handed_off.append(write)
        elif event == "block:block_rq_issue" and " WS " in line and handed_off:
            handed_off.pop(0)["issue"] = time
        elif event == "io_uring:io_uring_complete":
            write = submitted.pop(REQ.search(line).group(1), None)
            if write is not None:
                write["done"] = time
                writes.append(write)
                timeline.append((time, "done"))
        elif "fjord-shard" in line and event == "syscalls:sys_exit_sendto":
            if int(line.split()[-1], 16) == RESPONSE_BYTES:
                timeline.append((time, "response"))
        elif "fjord-shard" in line and event == "syscalls:sys_exit_recvfrom":
            if int(line.split()[-1], 16) == 4:
                timeline.append((time, "size"))
    timeline.sort()
    requests, state = [], {}
    for time, kind in timeline:
        if kind == "response":
            if all(key in state for key in ("previous", "size", "submit", "done")):
                requests.append((state["size"] - state["previous"], state["submit"] - state["size"],
                                 state["done"] - state["submit"], time - state["done"],
                                 time - state["previous"]))
            state = {"previous": time}
        elif "previous" in state and kind not in state and (kind == "size" or "size" in state):
            state[kind] = time
    if not requests:
        sys.exit("no produce requests found in the trace")
    print(f"{len(requests)} requests")
    for index, name in enumerate(["A1 response -> next request", "A2 request -> write submitted",
                                  "B  write I/O", "C  write done -> response", "request cycle"]):
        report(name, [request[index] for request in requests])
    slowest = sorted(requests, key=lambda request: -request[4])[:max(1, len(requests) // 50)]
    means = [sum(request[i] for request in slowest) / len(slowest) * 1e6 for i in range(5)]
    print("slowest 2%%, mean: A1 %.0f  A2 %.0f  B %.0f  C %.0f  cycle %.0f us" % tuple(means))
    complete = [w for w in writes if all(key in w for key in ("handoff", "issue", "done"))]
    print(f"{len(writes)} writes, {len(complete)} handed to an io_uring worker")
    if complete:
        report("write: hand-off -> block issue", [w["issue"] - w["handoff"] for w in complete])
        report("write: block issue -> completion", [w["done"] - w["issue"] for w in complete])


if __name__ == "__main__":
    main(sys.argv[1])
