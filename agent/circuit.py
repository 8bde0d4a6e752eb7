"""A circuit breaker for the POS: stop sending orders one by one into a dead POS, probe until it is back.

Pure state machine: the caller passes the time in and reads decisions out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

FAILURES_TO_OPEN = 3
FIRST_PROBE_SECONDS = 5.0
MAX_PROBE_SECONDS = 60.0


class CircuitState(StrEnum):
    """Closed: orders flow. Open: nothing is sent; probes only. Half-open: one probe in flight."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class Circuit:
    """Counts consecutive POS failures and decides whether orders may be sent."""

    failures_to_open: int = FAILURES_TO_OPEN
    first_probe_seconds: float = FIRST_PROBE_SECONDS
    max_probe_seconds: float = MAX_PROBE_SECONDS
    state: CircuitState = CircuitState.CLOSED
    failures: int = 0
    opened_at: datetime | None = None
    next_probe_at: datetime | None = None
    _probe_delay: float = FIRST_PROBE_SECONDS
    reason: str = ""

    def allows_orders(self) -> bool:
        """Return whether queued orders may be sent now."""
        return self.state is CircuitState.CLOSED

    def record_success(self) -> bool:
        """Note a POS success; return True if this closed an open circuit."""
        was_open = self.state is not CircuitState.CLOSED
        self.state = CircuitState.CLOSED
        self.failures = 0
        self.opened_at = None
        self.next_probe_at = None
        self._probe_delay = self.first_probe_seconds
        self.reason = ""
        return was_open

    def record_failure(self, now: datetime, reason: str) -> bool:
        """Note a transient POS failure; return True if this opened the circuit."""
        self.failures += 1
        if self.state is CircuitState.CLOSED and self.failures >= self.failures_to_open:
            self.trip(now, reason)
            return True
        if self.state is CircuitState.HALF_OPEN:
            self._reopen(now, reason)
        return False

    def trip(self, now: datetime, reason: str) -> bool:
        """Open the circuit at once (the POS said it is not ready); return True if it was closed."""
        was_closed = self.state is CircuitState.CLOSED
        if was_closed:
            self.opened_at = now
            self._probe_delay = self.first_probe_seconds
        self._reopen(now, reason, backoff=not was_closed)
        return was_closed

    def probe_due(self, now: datetime) -> bool:
        """Return whether it is time to probe an open circuit."""
        return self.state is CircuitState.OPEN and self.next_probe_at is not None and now >= self.next_probe_at

    def start_probe(self) -> None:
        """Mark a probe as in flight."""
        self.state = CircuitState.HALF_OPEN

    def probe_failed(self, now: datetime, reason: str) -> None:
        """Note that the probe found the POS still down; the next probe waits longer."""
        self._reopen(now, reason)

    def _reopen(self, now: datetime, reason: str, *, backoff: bool = True) -> None:
        if backoff and self.state is not CircuitState.CLOSED:
            self._probe_delay = min(self.max_probe_seconds, self._probe_delay * 2)
        self.state = CircuitState.OPEN
        self.reason = reason
        self.next_probe_at = now + timedelta(seconds=self._probe_delay)
