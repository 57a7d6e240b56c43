"""Fixtures for the real-client tests: each test module gets a fresh `fjord`
broker process (the binary cargo built) on a free port with its own data
directory, and helpers to kill -9 and restart it on the same data."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FJORD = Path(os.environ.get("FJORD_BIN", REPO / "target" / "debug" / "fjord"))
START_DEADLINE_SECONDS = 30


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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

    def start(self):
        settings = [
            f"listeners=PLAINTEXT://127.0.0.1:{self.port}",
            f"advertised.listeners=PLAINTEXT://localhost:{self.port}",
            f"log.dirs={self.data_dir}",
            *self.extra_settings,
        ]
        arguments = [str(FJORD)]
        for setting in settings:
            arguments += ["--set", setting]
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(arguments, stdout=log, stderr=subprocess.STDOUT)
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


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    instance = Broker(tmp_path_factory.mktemp("fjord") / "data")
    instance.start()
    yield instance
    instance.stop()
