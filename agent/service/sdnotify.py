"""systemd readiness, status and watchdog notifications (sd_notify(3)), without libsystemd.

``Notifier`` writes datagrams to ``$NOTIFY_SOCKET`` and never raises into the agent; ``Watchdog`` sends
``WATCHDOG=1`` only while every watched loop has made progress recently, so a wedged loop gets the
service restarted by systemd (``WatchdogSec=`` with ``Restart=``).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Self

import structlog

log = structlog.get_logger("venue_agent.sdnotify")

STATUS_MAX_CHARS = 200


def _one_line(text: str) -> str:
    """Return ``text`` on one line: whitespace runs (newlines included) collapsed, trimmed, capped."""
    line = " ".join(text.split())
    return line if len(line) <= STATUS_MAX_CHARS else line[: STATUS_MAX_CHARS - 1] + "…"


class Notifier:
    """Sends sd_notify datagrams to one socket address; a no-op without one; never raises."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Self:
        """Return a notifier for ``$NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract socket); no-op if unset."""
        raw = environ.get("NOTIFY_SOCKET", "")
        if not raw:
            return cls(None)
        return cls("\0" + raw[1:] if raw.startswith("@") else raw)

    @property
    def enabled(self) -> bool:
        """Return whether there is a socket to notify."""
        return self.address is not None

    def send(self, message: str) -> bool:
        """Send one raw datagram; return whether it was sent (False when disabled or on an OS error)."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.setblocking(False)
                self._sock = sock
            self._sock.sendto(message.encode("utf-8"), self.address)
        except OSError as exc:
            # Warn once: a socket that is gone stays gone, and the journal must not fill with the same line.
            if not self._warned:
                self._warned = True
                log.warning("sd_notify_failed", socket=self.address.replace("\0", "@"), error=str(exc))
            return False
        return True

    def notify(self, **fields: object) -> bool:
        """Send ``KEY=value`` lines in one datagram; values are put on one line."""
        return self.send("\n".join(f"{key}={_one_line(str(value))}" for key, value in fields.items()))

    def ready(self) -> bool:
        """Tell systemd that start-up is complete (``READY=1``)."""
        return self.send("READY=1")

    def status(self, text: str) -> bool:
        """Set the one-line status ``systemctl status`` shows (``STATUS=…``)."""
        return self.send(f"STATUS={_one_line(text)}")

    def stopping(self) -> bool:
        """Tell systemd that shutdown has begun (``STOPPING=1``)."""
        return self.send("STOPPING=1")

    def watchdog(self) -> bool:
        """Send one keep-alive (``WATCHDOG=1``)."""
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        """Close the socket (a later send opens a new one)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval(environ: Mapping[str, str] = os.environ) -> float | None:
    """Return the keep-alive interval in seconds (half of ``$WATCHDOG_USEC``) if the watchdog is meant for us."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = environ.get("WATCHDOG_PID")
    if pid is not None:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 2_000_000


class Watchdog:
    """Pings ``WATCHDOG=1`` every ``interval`` while every probed loop progressed within ``stale_after`` seconds."""

    def __init__(
        self,
        notifier: Notifier,
        interval: float,
        probes: Mapping[str, Callable[[], float]],
        stale_after: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.notifier = notifier
        self.interval = interval
        self.probes = dict(probes)
        self.stale_after = stale_after
        self.clock = clock
        self.sleep = sleep
        self.stale: list[str] = []

    def ages(self, now: float) -> dict[str, float]:
        """Return seconds since each loop's last progress (infinite if its probe fails)."""
        ages: dict[str, float] = {}
        for name, probe in self.probes.items():
            try:
                ages[name] = now - probe()
            except Exception:  # a broken probe must read as "stuck", never end the watchdog
                ages[name] = float("inf")
        return ages

    def healthy(self, now: float) -> tuple[bool, list[str]]:
        """Return (every loop fresh, names of loops whose last progress is older than ``stale_after``)."""
        stale = [name for name, age in self.ages(now).items() if age > self.stale_after]
        return not stale, stale

    def check(self) -> bool:
        """Run one round: ping if every loop is fresh, else withhold (logged once per stall); return whether pinged."""
        now = self.clock()
        ok, stale = self.healthy(now)
        if ok:
            if self.stale:
                log.warning("watchdog_resumed", stale=self.stale)
                self.notifier.status("watchdog: every loop makes progress again")
            self.stale = []
            self.notifier.watchdog()
            return True
        if not self.stale:
            ages = self.ages(now)
            stuck = ", ".join(f"{name} {ages[name]:.0f} s" for name in stale)
            log.error("watchdog_withheld", stale=stale, stale_after=self.stale_after)
            self.notifier.status(f"stuck: no progress in {stuck}; watchdog withheld, systemd will restart")
        self.stale = stale
        return False

    async def run(self) -> None:
        """Check every ``interval`` seconds until cancelled."""
        while True:
            self.check()
            await self.sleep(self.interval)
