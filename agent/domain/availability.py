"""Can this kitchen take an order now (``P/availability``, docs/availability.md)? The rule and its debounce, pure code.

An order taken now reaches the kitchen by the POS or on a fallback ticket. ``accepting`` is false when it could
reach neither (the POS is down or needs re-authorisation, and no fallback printer can print or fallback is off),
or when intake refuses orders (storage unavailable or below ``storage.min_free_mb``).

The debounce is one-sided: a change that pauses the storefront (to ``accepting`` false), or that only changes the
reason, is published once it has held for ``debounce_seconds``; a change back to ``accepting`` true is published
at once, because a storefront paused one second too long loses sales and a flapping printer cannot cause it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

# Printer states (as the health report names them) in which a ticket sent now would not come out. ``unknown`` (not read
# yet, or a printer that cannot tell) is not among them: the print worker tries such a printer, so it is a path.
BLOCKED_PRINTER_STATES = frozenset({"paper_out", "offline", "error", "cover_open"})
# POS states (PosStatus.state) in which an order taken now would not go into the POS.
POS_DOWN_STATES = frozenset({"down", "auth_required"})

# Reasons, stable words for machines; ``Verdict.detail`` says the same for people.
OK = "ok"
POS_DOWN_PRINTING_FALLBACK = "pos_down_printing_fallback"
POS_DOWN_AND_NO_PRINTER = "pos_down_and_no_printer"
POS_DOWN_AND_FALLBACK_OFF = "pos_down_and_fallback_off"
AUTH_REQUIRED_AND_NO_PRINTER = "pos_auth_required_and_no_printer"
AUTH_REQUIRED_AND_FALLBACK_OFF = "pos_auth_required_and_fallback_off"
DISK_FULL = "disk_full"
STORAGE_UNAVAILABLE = "storage_unavailable"


@dataclass(frozen=True)
class Inputs:
    """What the rule looks at, read from the running agent at one instant."""

    pos_state: str  # ok | degraded | down | auth_required
    fallback_enabled: bool
    # The fallback printers' states (name -> printer state as health reports it), in failover order.
    printers: Mapping[str, str]
    disk_full: bool  # free space below storage.min_free_mb: intake answers 503
    storage_open: bool  # the outbox takes writes


@dataclass(frozen=True)
class Verdict:
    """The rule's answer: whether an order taken now reaches the kitchen, a stable reason and a sentence for ops."""

    accepting: bool
    reason: str
    detail: str


def decide(inputs: Inputs) -> Verdict:
    """Return whether an order taken now would reach the POS or paper, and why (intake refusals first)."""
    if not inputs.storage_open:
        return Verdict(False, STORAGE_UNAVAILABLE, "the outbox cannot store orders: intake refuses them")
    if inputs.disk_full:
        return Verdict(False, DISK_FULL, "the disk is below storage.min_free_mb: intake refuses orders")
    if inputs.pos_state not in POS_DOWN_STATES:
        return Verdict(True, OK, "the POS takes orders")
    auth = inputs.pos_state == "auth_required"
    pos_words = "the POS needs re-authorising (venue-agent pos authorize)" if auth else "the POS is down"
    if not inputs.fallback_enabled:
        reason = AUTH_REQUIRED_AND_FALLBACK_OFF if auth else POS_DOWN_AND_FALLBACK_OFF
        return Verdict(False, reason, f"{pos_words} and fallback printing is off ([fallback] enabled = false)")
    usable = [name for name, state in inputs.printers.items() if state not in BLOCKED_PRINTER_STATES]
    if usable:
        return Verdict(True, POS_DOWN_PRINTING_FALLBACK, f"{pos_words}: orders print on {', '.join(usable)}")
    reason = AUTH_REQUIRED_AND_NO_PRINTER if auth else POS_DOWN_AND_NO_PRINTER
    if not inputs.printers:
        return Verdict(False, reason, f"{pos_words} and no printer is configured for fallback tickets")
    states = ", ".join(f"{name} {state.replace('_', ' ')}" for name, state in inputs.printers.items())
    return Verdict(False, reason, f"{pos_words} and no fallback printer can print ({states})")


@dataclass(frozen=True)
class Availability:
    """One published value: ``since`` is when ``accepting`` took this value, ``seq`` counts published changes."""

    accepting: bool
    reason: str
    detail: str
    since: datetime
    seq: int

    def as_dict(self) -> dict[str, Any]:
        """Return the ``P/availability`` payload (``detail`` added for people)."""
        return {
            "accepting": self.accepting,
            "reason": self.reason,
            "detail": self.detail,
            "since": self.since.isoformat(),
            "seq": self.seq,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Availability:
        """Return the value ``as_dict`` gave; raise KeyError, TypeError or ValueError on anything else."""
        since = datetime.fromisoformat(str(data["since"]))
        if since.tzinfo is None:
            msg = "since has no UTC offset"
            raise ValueError(msg)
        accepting, seq = data["accepting"], data["seq"]
        if not isinstance(accepting, bool) or not isinstance(seq, int) or isinstance(seq, bool):
            msg = "accepting must be a boolean and seq an integer"
            raise TypeError(msg)
        return cls(accepting, str(data["reason"]), str(data.get("detail", "")), since, seq)


class Debouncer:
    """Turns verdicts read over time into published values (see the module docstring for the rule)."""

    def __init__(self, debounce_seconds: float, last: Availability | None = None) -> None:
        self.debounce = timedelta(seconds=debounce_seconds)
        self.current = last
        # The verdict read last, when it first read so, and when its ``accepting`` first read so.
        self._seen: Verdict | None = None
        self._seen_since: datetime | None = None
        self._accepting_since: datetime | None = None

    def observe(self, verdict: Verdict, now: datetime) -> Availability | None:
        """Note the verdict read at ``now``; return the value to publish when it changes, else None."""
        if self._seen is None or verdict.accepting != self._seen.accepting:
            self._accepting_since = now
        if verdict != self._seen:
            self._seen, self._seen_since = verdict, now
        assert self._seen_since is not None and self._accepting_since is not None
        current = self.current
        if current is None:
            # Nothing published ever (a new outbox): nothing to flap from, so the first reading stands.
            return self._publish(verdict, since=now, seq=1)
        if (verdict.accepting, verdict.reason) == (current.accepting, current.reason):
            # Other words for the same state (which printer takes the tickets now) are not a change: the endpoint
            # and the retained message keep saying the same thing.
            return None
        if verdict.accepting and not current.accepting:
            return self._publish(verdict, since=now, seq=current.seq + 1)
        if now - self._held_since(current) < self.debounce:
            return None
        since = current.since if verdict.accepting == current.accepting else self._accepting_since
        return self._publish(verdict, since=since, seq=current.seq + 1)

    def due(self, now: datetime) -> datetime | None:
        """Return when the verdict read last becomes publishable if it keeps reading so, or None if nothing waits."""
        seen, current = self._seen, self.current
        if seen is None or current is None or (seen.accepting, seen.reason) == (current.accepting, current.reason):
            return None
        if seen.accepting and not current.accepting:
            return now
        return max(now, self._held_since(current) + self.debounce)

    def _held_since(self, current: Availability) -> datetime:
        """Return since when the reading has differed from ``current`` the way it does now."""
        assert self._seen is not None and self._seen_since is not None and self._accepting_since is not None
        # A refusal counts from its start, whatever its reasons on the way; a new reason alone from the reason.
        return self._accepting_since if self._seen.accepting != current.accepting else self._seen_since

    def _publish(self, verdict: Verdict, *, since: datetime, seq: int) -> Availability:
        self.current = Availability(verdict.accepting, verdict.reason, verdict.detail, since, seq)
        return self.current
