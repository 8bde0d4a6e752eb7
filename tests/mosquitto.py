"""A real ``mosquitto`` broker on a free loopback port, for tests: start, stop and restart on the same port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


def free_port() -> int:
    """Return a TCP port that is free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Mosquitto:
    """One broker process at a time on a fixed port, anonymous clients allowed.

    ``persistent`` keeps sessions (subscriptions, queued QoS 1 messages) across a stop/restart; else nothing is kept.
    """

    def __init__(self, binary: str, directory: Path, *, persistent: bool = False) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.config = directory / "mosquitto.conf"
        persistence = f"persistence true\npersistence_location {directory}/\n" if persistent else "persistence false\n"
        self.config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n{persistence}", encoding="utf-8")
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, *, timeout: float = 5.0) -> None:
        """Start the broker and return once it accepts TCP connections."""
        assert self.popen is None, "the broker is already running"
        self.starts += 1
        log_path = self.directory / f"mosquitto-{self.starts}.log"
        with log_path.open("wb") as log_file:
            self.popen = subprocess.Popen(
                [self.binary, "-c", str(self.config)], stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.popen.poll() is not None:
                pytest.fail(f"mosquitto exited with {self.popen.returncode}: {log_path.read_text(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"mosquitto did not listen on {self.port} within {timeout} s")
                time.sleep(0.02)

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL) and wait until it has exited."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)
        self.popen = None

    def restart(self) -> None:
        """Stop the broker if it runs, then start it again on the same port."""
        self.stop()
        self.start()


def _running(tmp_path: Path, *, persistent: bool) -> Iterator[Mosquitto]:
    if MOSQUITTO is None:
        pytest.skip("the mosquitto binary is not installed (apt-get install mosquitto)")
    broker = Mosquitto(MOSQUITTO, tmp_path, persistent=persistent)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(name="broker")
def _broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """Return a running mosquitto on loopback that keeps nothing; stopped when the test ends, pass or fail."""
    yield from _running(tmp_path, persistent=False)


@pytest.fixture(name="persistent_broker")
def _persistent_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """Return a running mosquitto that keeps sessions across restarts; stopped when the test ends."""
    yield from _running(tmp_path, persistent=True)
