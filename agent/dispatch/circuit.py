"""A circuit breaker for the POS: stop sending orders one by one into a dead POS, probe until it is back.

Pure state machine: the caller passes the time in and reads decisions out. A probe is a readiness check
where the POS has one; where it has none (``readiness_unsupported``), the probe is ONE real order, the
oldest due (docs/robustness.md). Only attempts made while the circuit is closed count towards ``max_attempts``.
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
    # Half-open with no readiness check: the next claimed order is the probe; True until it is claimed.
    order_probe_wanted: bool = False
    order_probe_in_flight: bool = False

    def allows_orders(self) -> bool:
        """Return whether queued orders may be sent now."""
        return self.state is CircuitState.CLOSED

    def orders_to_claim(self, free: int) -> int:
        """Return how many orders the sender may claim now: all free slots when closed, one probe order, or 0."""
        if self.state is CircuitState.CLOSED:
            return free
        return 1 if self.order_probe_wanted and free > 0 else 0

    def counts_attempt(self) -> bool:
        """Return whether an order claimed now spends one of its ``max_attempts`` (only while believed up)."""
        return self.state is CircuitState.CLOSED

    def readiness_unsupported(self) -> None:
        """The readiness probe could not tell (no endpoint): make the next order the probe."""
        if self.state is CircuitState.HALF_OPEN and not self.order_probe_in_flight:
            self.order_probe_wanted = True

    def order_probe_claimed(self) -> None:
        """Note that the probe order was claimed and is on its way."""
        self.order_probe_wanted = False
        self.order_probe_in_flight = True

    def order_probe_unclaimed(self, now: datetime) -> None:
        """No order was waiting to be the probe: stay open and probe again later (without a longer wait)."""
        if self.order_probe_wanted:
            self.order_probe_wanted = False
            self._reopen(now, self.reason, backoff=False)

    def record_success(self) -> bool:
        """Note a POS success; return True if this closed an open circuit."""
        was_open = self.state is not CircuitState.CLOSED
        self.state = CircuitState.CLOSED
        self.failures = 0
        self.opened_at = None
        self.next_probe_at = None
        self._probe_delay = self.first_probe_seconds
        self.reason = ""
        self.order_probe_wanted = False
        self.order_probe_in_flight = False
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
        self.order_probe_wanted = False
        self.order_probe_in_flight = False
        self.reason = reason
        self.next_probe_at = now + timedelta(seconds=self._probe_delay)
