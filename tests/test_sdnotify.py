"""systemd notifications over real AF_UNIX datagram sockets, the progress watchdog, and ``venue-agent run``.

The end-to-end test starts the agent as a real process with ``$NOTIFY_SOCKET`` pointing at a socket the
test binds, exactly as systemd would, and reads what the agent tells systemd.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from agent.service.daemon import status_line
from agent.service.sdnotify import Notifier, Watchdog, watchdog_interval
from tests.conftest import Sim
from tests.test_crash_recovery import BIN, AgentProcess, Processes, _child_env

# ---- sockets ---------------------------------------------------------------------------------


def bind_datagram(address: str) -> socket.socket:
    """Return a non-blocking AF_UNIX datagram socket bound to ``address`` (a path, or "\\0name")."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.setblocking(False)
    return sock


def received(sock: socket.socket) -> list[str]:
    """Return every datagram waiting on ``sock``, oldest first."""
    messages = []
    while True:
        try:
            messages.append(sock.recv(65536).decode("utf-8"))
        except BlockingIOError:
            return messages


@pytest.fixture(name="listener")
def _listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """Return a datagram socket bound to a path in ``tmp_path``, and that path."""
    path = str(tmp_path / "notify.sock")
    assert len(path) < 100, f"AF_UNIX paths are limited to 108 bytes: {path}"
    sock = bind_datagram(path)
    try:
        yield sock, path
    finally:
        sock.close()


# ---- Notifier --------------------------------------------------------------------------------


def test_datagrams_to_a_path_socket(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.ready()
    assert notifier.status("  12 queued,\n1 failed\r\n ")
    assert notifier.watchdog()
    assert notifier.stopping()
    assert notifier.notify(READY=1, STATUS="up\nand running")
    assert notifier.send("EXTEND_TIMEOUT_USEC=5000000")
    notifier.close()
    assert received(sock) == [
        "READY=1",
        "STATUS=12 queued, 1 failed",
        "WATCHDOG=1",
        "STOPPING=1",
        "READY=1\nSTATUS=up and running",
        "EXTEND_TIMEOUT_USEC=5000000",
    ]


def test_status_is_capped_to_one_short_line(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
    notifier.status("x" * 500)
    notifier.close()
    (message,) = received(sock)
    assert message.startswith("STATUS=xxx")
    assert "\n" not in message
    assert len(message) == len("STATUS=") + 200


def test_datagrams_to_an_abstract_socket() -> None:
    name = f"venue-agent-test-{secrets.token_hex(6)}"
    sock = bind_datagram("\0" + name)
    try:
        notifier = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert notifier.address == "\0" + name
        assert notifier.ready()
        assert notifier.watchdog()
        notifier.close()
        assert received(sock) == ["READY=1", "WATCHDOG=1"]
    finally:
        sock.close()


def test_without_notify_socket_nothing_is_sent_or_raised() -> None:
    with capture_logs() as logs:
        notifier = Notifier.from_env({})
        assert not notifier.enabled
        assert not notifier.ready()
        assert not notifier.status("anything")
        assert not notifier.watchdog()
        assert not notifier.stopping()
        assert not notifier.notify(READY=1)
        notifier.close()
    assert logs == []
    assert not Notifier.from_env({"NOTIFY_SOCKET": ""}).enabled


def test_a_vanished_socket_is_logged_once_and_never_raises(tmp_path: Path) -> None:
    path = tmp_path / "gone.sock"
    sock = bind_datagram(str(path))
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(path)})
    assert notifier.ready()
    sock.close()
    path.unlink()
    with capture_logs() as logs:
        assert not notifier.watchdog()
        assert not notifier.watchdog()
        assert not notifier.status("still here")
    notifier.close()
    failures = [e for e in logs if e["event"] == "sd_notify_failed"]
    assert len(failures) == 1, logs
    assert failures[0]["log_level"] == "warning"
    assert failures[0]["socket"] == str(path)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "2000000"}, 1.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "nope"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_PID": str(os.getpid())}, None),
    ],
)
def test_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(environ) == expected


# ---- Watchdog --------------------------------------------------------------------------------


class Stop(Exception):
    """Raised by the fake sleeper to end ``Watchdog.run`` after the scripted rounds."""


class FakeTime:
    """A monotonic clock and a sleeper that advances it; loops mark progress unless wedged."""

    def __init__(self, sock: socket.socket, loops: tuple[str, ...], *, rounds: int) -> None:
        self.now = 1000.0
        self.sock = sock
        self.rounds = rounds
        self.progress = dict.fromkeys(loops, self.now)
        self.wedged: dict[str, tuple[float, float]] = {}  # loop -> [from, until) in seconds since start
        self.sleeps: list[float] = []
        self.sent: list[tuple[float, str]] = []  # (seconds since start, datagram)

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sent.extend((self.now - 1000.0, m) for m in received(self.sock))
        self.sleeps.append(seconds)
        if len(self.sleeps) >= self.rounds:
            raise Stop
        self.now += seconds
        elapsed = self.now - 1000.0
        for name in self.progress:
            start, until = self.wedged.get(name, (float("inf"), float("inf")))
            if not start <= elapsed < until:
                self.progress[name] = self.now
        await asyncio.sleep(0)


async def test_watchdog_pings_while_fresh_withholds_while_wedged_and_resumes(
    listener: tuple[socket.socket, str],
) -> None:
    sock, path = listener
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
    fake = FakeTime(sock, ("sender", "scheduler", "prober"), rounds=16)
    fake.wedged["scheduler"] = (3.0, 12.0)  # last progress at t=2, marks again at t=12
    probes = {name: (lambda n=name: fake.progress[n]) for name in fake.progress}
    watchdog = Watchdog(notifier, 1.0, probes, stale_after=5.0, clock=fake.clock, sleep=fake.sleep)
    with capture_logs() as logs, pytest.raises(Stop):
        await watchdog.run()
    notifier.close()

    assert fake.sleeps == [1.0] * 16
    pings = [t for t, m in fake.sent if m == "WATCHDOG=1"]
    # Stale once more than 5 s passed since t=2: from t=8 (age 6) until the loop marks again at t=12.
    assert pings == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 12.0, 13.0, 14.0, 15.0]
    statuses = [(t, m) for t, m in fake.sent if m.startswith("STATUS=")]
    assert statuses == [
        (8.0, "STATUS=stuck: no progress in scheduler 6 s; watchdog withheld, systemd will restart"),
        (12.0, "STATUS=watchdog: every loop makes progress again"),
    ]
    withheld = [e for e in logs if e["event"] == "watchdog_withheld"]
    assert len(withheld) == 1
    assert withheld[0]["stale"] == ["scheduler"]
    assert withheld[0]["log_level"] == "error"
    assert [e["stale"] for e in logs if e["event"] == "watchdog_resumed"] == [["scheduler"]]


def test_healthy_names_the_stale_loops_and_a_broken_probe() -> None:
    def broken() -> float:
        raise RuntimeError("probe bug")

    probes = {"sender": lambda: 100.0, "scheduler": lambda: 80.0, "printer": broken}
    watchdog = Watchdog(Notifier(None), 1.0, probes, stale_after=10.0)
    assert watchdog.healthy(105.0) == (False, ["scheduler", "printer"])
    assert watchdog.healthy(90.0) == (False, ["printer"])
    fresh = Watchdog(Notifier(None), 1.0, {"sender": lambda: 100.0}, stale_after=10.0)
    assert fresh.healthy(110.0) == (True, [])
    assert fresh.healthy(110.5) == (False, ["sender"])


def test_status_line_is_short_and_readable() -> None:
    snapshot: dict[str, Any] = {
        "outbox": {"held": 0, "scheduled": 0, "queued": 12, "retrying": 0, "awaiting_pos": 0, "failed": 1},
        "pos": {"driver": "lightspeed_k", "state": "ok"},
        "printers": [{"name": "pass", "state": "ok"}, {"name": "bar", "state": "paper_out"}],
    }
    assert status_line(True, snapshot) == "12 queued, 1 failed; POS ok (lightspeed_k); printers: pass ok, bar paper_out"
    empty: dict[str, Any] = {"outbox": {}, "pos": {"driver": "http", "state": "down"}, "printers": []}
    assert status_line(False, empty) == "not ready; 0 queued; POS down (http); printers: none"


# ---- venue-agent run under a fake systemd ----------------------------------------------------


@pytest.fixture(name="client")
async def _client() -> AsyncIterator[httpx.AsyncClient]:
    """Return an HTTP client for loopback."""
    async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
        yield client


class SystemdAgent(AgentProcess):
    """``venue-agent run`` started the way systemd starts a Type=notify unit with WatchdogSec=2."""

    def __init__(self, procs: Processes, tmp_path: Path, sim_port: int, notify_socket: str) -> None:
        super().__init__(procs, tmp_path, sim_port)
        with self.config.open("a", encoding="utf-8") as config:
            config.write("\n[discovery]\nadvertise = false\n")
        self.notify_socket = notify_socket

    def start(self) -> None:
        """Start the agent with NOTIFY_SOCKET and WATCHDOG_USEC set (the harness's env drops both)."""
        env = _child_env() | {"NOTIFY_SOCKET": self.notify_socket, "WATCHDOG_USEC": "2000000"}
        log_path = self.procs.logs / f"agent-{len(self.procs.started):02d}.log"
        with log_path.open("wb") as log_file:
            self.popen = subprocess.Popen(
                [str(BIN), "run", "--config", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.procs.started.append(self.popen)
        self.log_paths.append(log_path)


def intake_accepts(port: int) -> bool:
    """Return whether a TCP connection to the intake port is accepted right now."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.slow
async def test_run_under_systemd_notifies_ready_status_watchdog_and_stopping(
    tmp_path: Path, procs: Processes, client: httpx.AsyncClient, sim: Sim, listener: tuple[socket.socket, str]
) -> None:
    sock, path = listener
    agent = SystemdAgent(procs, tmp_path, sim.port, path)
    loop = asyncio.get_running_loop()
    messages: list[tuple[float, str]] = []
    ready_seen = asyncio.Event()
    stopping_seen = asyncio.Event()
    accepting_at_ready: list[bool] = []

    async def receive() -> None:
        while True:
            message = (await loop.sock_recv(sock, 65536)).decode("utf-8")
            messages.append((time.monotonic(), message))
            if "READY=1" in message.splitlines() and not ready_seen.is_set():
                accepting_at_ready.append(intake_accepts(agent.port))  # at once: before anything else runs
                ready_seen.set()
            if "STOPPING=1" in message.splitlines():
                stopping_seen.set()

    receiver = asyncio.create_task(receive(), name="test notify receiver")
    try:
        agent.start()
        await asyncio.wait_for(ready_seen.wait(), timeout=10)
        assert accepting_at_ready == [True]
        health = await client.get(f"{agent.base}/v1/health")
        assert health.status_code == 200, health.text
        assert health.json()["ready"] is True
        ready_at = next(t for t, m in messages if m == "READY=1")

        await asyncio.sleep(3.6)
        pings = [t for t, m in messages if m == "WATCHDOG=1"]
        assert len(pings) >= 3, messages
        assert all(t >= ready_at for t in pings)
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert all(0.7 <= gap <= 1.5 for gap in gaps), gaps
        statuses = [m for _, m in messages if m.startswith("STATUS=")]
        assert any("queued" in s and "POS ok (http)" in s and "printers: pass" in s for s in statuses), statuses

        assert agent.popen is not None
        agent.popen.send_signal(signal.SIGTERM)
        await asyncio.wait_for(stopping_seen.wait(), timeout=5)
        deadline = time.monotonic() + 10
        while agent.popen.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert agent.popen.returncode == 0, agent.logs()[-3000:]
    finally:
        receiver.cancel()
        with pytest.raises(asyncio.CancelledError):
            await receiver
    texts = [m for _, m in messages]
    stopping = texts.index("STOPPING=1")
    assert "STATUS=stopping: finishing POS calls" in texts[stopping:]
    assert "WATCHDOG=1" not in texts[stopping:], "no keep-alive once shutdown has begun"
    assert texts.index("READY=1") < stopping
    assert not agent.log_events("sd_notify_failed")
    assert not agent.log_events("watchdog_withheld")
