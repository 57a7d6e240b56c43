"""Fixtures for the real-client tests: each test module gets a fresh `fjord`
broker process (the binary cargo built) on a free port with its own data
directory, and helpers to kill -9 and restart it on the same data."""

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FJORD = Path(os.environ.get("FJORD_BIN", REPO / "target" / "debug" / "fjord"))
START_DEADLINE_SECONDS = 30
LOG_TAIL_LINES = 60


def free_port():
    """A port nothing listens on, below Linux's ephemeral range (32768 and
    up by default): a port from bind(0) can meanwhile become the source port
    of some client connection, which a broker restarted on it would meet."""
    while True:
        port = random.randrange(20000, 30000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def wait_until(condition, deadline_seconds, what):
    """Polls `condition` until it returns a truthy value, which it returns;
    raises TimeoutError naming `what` once `deadline_seconds` pass."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not within {deadline_seconds}s")
        time.sleep(0.05)


def holds_throughout(check, seconds):
    """Calls `check`, which asserts what must stay true, every 50 ms for
    `seconds`: for what must not happen during a window (a stale leader
    elected, an ack while a partition is offline), as `wait_until` is for
    what must happen within one."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        check()
        time.sleep(0.05)


def produce_when_room(producer, topic, value, partition, on_delivery=None):
    """Produces one record, serving delivery reports while librdkafka's
    queue is full instead of failing with BufferError."""
    while True:
        try:
            producer.produce(topic, value, partition=partition, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.1)


def wait_for_port(port, process, deadline_seconds=START_DEADLINE_SECONDS):
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"fjord exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"fjord did not listen on {port} within {deadline_seconds}s")


class Broker:
    """One fjord process; `restart` keeps the port and data directory."""

    def __init__(self, data_dir, extra_settings=()):
        self.data_dir = data_dir
        self.port = free_port()
        self.extra_settings = list(extra_settings)
        self.process = None
        self.log_path = Path(data_dir).parent / f"fjord-{self.port}.log"

    @property
    def bootstrap(self):
        return f"localhost:{self.port}"

    def settings(self):
        """The `--set` settings the process starts with."""
        return [
            f"listeners=PLAINTEXT://127.0.0.1:{self.port}",
            f"advertised.listeners=PLAINTEXT://localhost:{self.port}",
            f"log.dirs={self.data_dir}",
            *self.extra_settings,
        ]

    def command(self):
        """What runs fjord (a wrapper, such as `ip netns exec`, goes first)."""
        return [str(FJORD)]

    # What runs in the child before fjord starts (process limits, say);
    # none by default, so that the child forks without a Python callback.
    before_exec = None

    def launch(self):
        """Starts the process, its output appended to `log_path`, without
        waiting for it to serve."""
        arguments = self.command()
        for setting in self.settings():
            arguments += ["--set", setting]
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            arguments,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1"},
            preexec_fn=self.before_exec,
        )

    def start(self):
        self.launch()
        wait_for_port(self.port, self.process)

    def kill9(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise

    def restart_after_kill9(self):
        self.kill9()
        self.start()

    def log_text(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def running_broker(tmp_path_factory, extra_settings=()):
    """A started broker on a fresh data directory, stopped on exit."""
    instance = Broker(tmp_path_factory.mktemp("fjord") / "data", extra_settings)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with running_broker(tmp_path_factory) as instance:
        yield instance


@pytest.fixture
def topic_name(request):
    """A topic name no other test uses, readable in the broker log."""
    return f"{request.node.name.removeprefix('test_')[:40]}-{uuid.uuid4().hex[:8]}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach the tail of the test's broker log to the report,
    and what a fixture with `report_sections()` (a cluster, a scenario)
    tells about itself."""
    report = yield
    if not report.failed:
        return report
    funcargs = getattr(item, "funcargs", {})
    broker = funcargs.get("broker")
    if isinstance(broker, Broker):
        tail = broker.log_text().splitlines()[-LOG_TAIL_LINES:]
        report.sections.append((f"fjord log tail ({broker.log_path})", "\n".join(tail)))
    for value in funcargs.values():
        if callable(getattr(value, "report_sections", None)):
            report.sections += value.report_sections()
    return report
