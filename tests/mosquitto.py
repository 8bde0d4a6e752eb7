"""A real ``mosquitto`` broker on a free loopback port, for tests: start, stop and restart on the same port.

Anonymous and plain by default; a broker can also listen with TLS (optionally requiring client certificates) and
check passwords from a ``mosquitto_passwd`` file.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or (
    "/usr/bin/mosquitto_passwd" if Path("/usr/bin/mosquitto_passwd").exists() else None
)


@dataclass(frozen=True)
class BrokerTLS:
    """The broker's TLS listener: its CA, certificate and key, and whether clients must present a certificate."""

    cafile: Path
    certfile: Path
    keyfile: Path
    require_certificate: bool = False
    # The client certificate's CN becomes the username (for ACLs); needs require_certificate.
    use_identity_as_username: bool = False

    def options(self) -> list[str]:
        """Return the listener's lines for mosquitto.conf."""
        lines = [f"cafile {self.cafile}", f"certfile {self.certfile}", f"keyfile {self.keyfile}"]
        if self.require_certificate:
            lines.append("require_certificate true")
        if self.use_identity_as_username:
            lines.append("use_identity_as_username true")
        return lines


def free_port() -> int:
    """Return a TCP port that is free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Mosquitto:
    """One broker process at a time on a fixed port; anonymous clients allowed unless ``passwords`` are given.

    ``persistent`` keeps sessions (subscriptions, queued QoS 1 messages) across a stop/restart; else nothing is kept.
    ``acl`` is the text of a Mosquitto ACL file (lines before any ``user`` apply to anonymous clients).
    ``tls`` makes the one listener a TLS listener. ``passwords`` (username -> password) turns anonymous access off and
    checks logins against a password file; with a TLS listener that takes identities from certificates, pass
    ``allow_anonymous=False`` alone instead.
    """

    def __init__(
        self,
        binary: str,
        directory: Path,
        *,
        persistent: bool = False,
        tls: BrokerTLS | None = None,
        passwords: dict[str, str] | None = None,
        allow_anonymous: bool | None = None,
        acl: str | None = None,
    ) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.tls = tls
        self.config = directory / "mosquitto.conf"
        if allow_anonymous is None:
            allow_anonymous = not passwords
        lines = [
            f"listener {self.port} 127.0.0.1",
            *(tls.options() if tls else []),
            f"allow_anonymous {str(allow_anonymous).lower()}",
            # As root, Mosquitto would switch to the `mosquitto` user, which cannot read the test's private tmp dir
            # (certificates, password file) nor write its persistence file there.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
        ]
        if passwords:
            lines.append(f"password_file {_password_file(directory / 'passwd', passwords)}")
        if acl is not None:
            (directory / "acl").write_text(acl, encoding="utf-8")
            lines.append(f"acl_file {directory / 'acl'}")
        if persistent:
            lines += ["persistence true", f"persistence_location {directory}/"]
        else:
            lines.append("persistence false")
        self.config.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
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

    def log(self) -> str:
        """Return what the latest broker process has logged so far."""
        path = self.directory / f"mosquitto-{self.starts}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _password_file(path: Path, passwords: dict[str, str]) -> Path:
    """Write ``passwords`` as a Mosquitto password file (hashed by ``mosquitto_passwd``); skip without that tool."""
    if MOSQUITTO_PASSWD is None:
        pytest.skip("mosquitto_passwd is not installed (it ships with the mosquitto package)")
    path.unlink(missing_ok=True)
    for i, (username, password) in enumerate(passwords.items()):
        create = ["-c"] if i == 0 else []
        subprocess.run(
            [MOSQUITTO_PASSWD, "-b", *create, str(path), username, password], check=True, capture_output=True
        )
    path.chmod(0o600)
    return path


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


class StartBroker(Protocol):
    """The ``start_broker`` fixture's value."""

    def __call__(
        self,
        *,
        persistent: bool = False,
        tls: BrokerTLS | None = None,
        passwords: dict[str, str] | None = None,
        allow_anonymous: bool | None = None,
        acl: str | None = None,
    ) -> Mosquitto: ...


@pytest.fixture(name="start_broker")
def _start_broker(tmp_path: Path) -> Iterator[StartBroker]:
    """Return ``start(...)``: run a broker with ``Mosquitto``'s keyword options (tls, passwords, ...).

    Each broker gets its own directory; all are stopped when the test ends, pass or fail.
    """
    if MOSQUITTO is None:
        pytest.skip("the mosquitto binary is not installed (apt-get install mosquitto)")
    binary = MOSQUITTO
    brokers: list[Mosquitto] = []

    def start(
        *,
        persistent: bool = False,
        tls: BrokerTLS | None = None,
        passwords: dict[str, str] | None = None,
        allow_anonymous: bool | None = None,
        acl: str | None = None,
    ) -> Mosquitto:
        directory = tmp_path / f"broker-{len(brokers) + 1}"
        directory.mkdir()
        broker = Mosquitto(
            binary,
            directory,
            persistent=persistent,
            tls=tls,
            passwords=passwords,
            allow_anonymous=allow_anonymous,
            acl=acl,
        )
        brokers.append(broker)
        broker.start()
        return broker

    try:
        yield start
    finally:
        for broker in brokers:
            broker.stop()
