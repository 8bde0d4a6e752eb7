"""Rate limits for log lines: a repeated event is written a few times, then counted and summarised."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import structlog

SUMMARY_EVENT = "log_suppressed"
# Per event name, per window: a POS outage or an order rush stays visible line by line at these rates, a
# flood (asyncio once logged every failed accept(): 10,000 lines a second) is cut to this.
BURST = 100
INTERVAL_SECONDS = 10.0

Emit = Callable[[str, int], None]


@dataclass
class _Window:
    start: float
    passed: int = 0
    suppressed: int = 0


class RepeatLimiter:
    """Lets at most ``burst`` records of one key through per ``interval`` seconds and counts the rest."""

    def __init__(
        self, *, burst: int = BURST, interval: float = INTERVAL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst = burst
        self.interval = interval
        self.clock = clock
        self._windows: dict[str, _Window] = {}
        self._ended: list[tuple[str, int]] = []

    def admit(self, key: str) -> bool:
        """Return whether a record of ``key`` may be written now (False: it was counted instead)."""
        now = self.clock()
        window = self._windows.get(key)
        if window is None or now - window.start >= self.interval:
            if window is not None and window.suppressed:
                self._ended.append((key, window.suppressed))
            window = self._windows[key] = _Window(now)
        if window.passed < self.burst:
            window.passed += 1
            return True
        window.suppressed += 1
        return False

    def ended(self) -> list[tuple[str, int]]:
        """Return (key, count suppressed) of every window that has ended since the last call, and forget them."""
        now = self.clock()
        for key, window in list(self._windows.items()):
            if now - window.start >= self.interval:
                if window.suppressed:
                    self._ended.append((key, window.suppressed))
                del self._windows[key]
        ended, self._ended = self._ended, []
        return ended


class RateLimitProcessor:
    """A structlog processor: drops an event over its limit and writes ``log_suppressed`` when its window ends."""

    def __init__(self, limiter: RepeatLimiter, emit: Emit) -> None:
        self.limiter = limiter
        self.emit = emit

    def __call__(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        """Pass ``event_dict`` on, or raise DropEvent if its event name is over the limit."""
        name = str(event_dict.get("event", ""))
        if name == SUMMARY_EVENT:
            return event_dict
        self.flush()
        if not self.limiter.admit(name):
            raise structlog.DropEvent
        return event_dict

    def flush(self) -> None:
        """Write one ``log_suppressed`` line per window that ended with records suppressed."""
        for key, count in self.limiter.ended():
            self.emit(key, count)


class RateLimitFilter(logging.Filter):
    """The same limit for the standard library's loggers (asyncio, uvicorn), keyed by logger and message template."""

    def __init__(self, processor: RateLimitProcessor) -> None:
        super().__init__()
        self.processor = processor

    def filter(self, record: logging.LogRecord) -> bool:
        """Return whether ``record`` may be written."""
        self.processor.flush()
        return self.processor.limiter.admit(f"{record.name}: {record.msg}")


def emit_summary(interval: float) -> Emit:
    """Return an ``Emit`` that logs ``log_suppressed`` (name, count, seconds) through structlog."""
    log = structlog.get_logger("venue_agent.logs")

    def emit(name: str, count: int) -> None:
        log.warning(SUMMARY_EVENT, name=name, count=count, seconds=interval)

    return emit
