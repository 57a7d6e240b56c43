"""Cold-read Fetch benchmark: produce SIZE_MB into one partition, restart
the broker (empty cache), consume everything; report wall time and the
broker's CPU seconds (utime+stime) spent serving the consume."""
import os, signal, socket, subprocess, sys, time, shutil
from confluent_kafka import Producer, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

binary, data_dir, size_mb = sys.argv[1], sys.argv[2], int(sys.argv[3])
port = 19092 + (os.getpid() % 1000)
settings = [f"listeners=PLAINTEXT://127.0.0.1:{port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            f"log.dirs={data_dir}", "cores=1"]

def start():
    args = [binary]
    for s in settings:
        args += ["--set", s]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return p
        except OSError:
            time.sleep(0.05)
    raise SystemExit("no listen")

def cpu(p):
    fields = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

shutil.rmtree(data_dir, ignore_errors=True)
p = start()
boot = f"127.0.0.1:{port}"
admin = AdminClient({"bootstrap.servers": boot})
admin.create_topics(
    [NewTopic("bench", 1, 1, config={"segment.bytes": str(64 << 20)})])["bench"].result(10)
prod = Producer({"bootstrap.servers": boot, "linger.ms": 20, "batch.size": 1 << 20,
                 "acks": "1", "compression.type": "none", "queue.buffering.max.kbytes": 1 << 20})
value = os.urandom(1000)
n = size_mb * 1000
for i in range(n):
    while True:
        try:
            prod.produce("bench", value, partition=0)
            break
        except BufferError:
            prod.poll(0.01)
prod.flush(60)
p.send_signal(signal.SIGTERM); p.wait(60)
os.system("sync; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null")
p = start()
cons = Consumer({"bootstrap.servers": boot, "group.id": "b", "enable.auto.commit": False,
                 "fetch.max.bytes": 50 << 20, "max.partition.fetch.bytes": 8 << 20,
                 "fetch.wait.max.ms": 10})
cons.assign([TopicPartition("bench", 0, 0)])
before, t0, got = cpu(p), time.time(), 0
while got < n:
    for m in cons.consume(10000, 5):
        if m.error() is None:
            got += 1
wall, used = time.time() - t0, cpu(p) - before
cons.close()
print(f"{os.path.basename(os.path.dirname(os.path.dirname(binary)))}: {size_mb} MB cold read: "
      f"{wall:.2f} s wall ({size_mb / wall:.0f} MB/s), broker CPU {used:.2f} s "
      f"({used / size_mb * 1000:.2f} ms/MB)")
p.send_signal(signal.SIGTERM); p.wait(60)
shutil.rmtree(data_dir, ignore_errors=True)
