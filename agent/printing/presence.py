"""Whether a USB printer is plugged in, debounced: it is reported gone only after 3 missed detections in a row.

A USB printer's device node (its /dev/venue-printer/ name) vanishes for a second or two when the cable is
re-seated, the printer power-cycles or the hub re-enumerates. Odoo's IoT box waits for 3 missed detections
before it drops a printer; so does the agent: one or two misses report nothing, and a printer that comes back
in time was never "gone" (no alert, no state change). Pure: the caller detects, this decides what to report.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

MISSES_TO_DROP = 3
# How often the print worker looks for the device nodes (Odoo's IoT box looks every 3 s too).
DETECT_INTERVAL_SECONDS = 3.0


class Change(StrEnum):
    """What one detection means for the printer."""

    GONE = "gone"  # the Nth miss in a row: report it unplugged
    BACK = "back"  # seen again after it was reported gone
    RETURNED = "returned"  # seen again after a miss or two, before it was reported gone


@dataclass
class Presence:
    """The debounced presence of one device node."""

    misses_to_drop: int = MISSES_TO_DROP
    missed: int = 0
    gone: bool = False

    def __post_init__(self) -> None:
        if self.misses_to_drop < 1:
            msg = f"misses_to_drop must be at least 1, not {self.misses_to_drop}"
            raise ValueError(msg)

    @property
    def missing(self) -> bool:
        """Whether the last detection missed it (reported gone or not yet)."""
        return self.missed > 0

    def observe(self, seen: bool) -> Change | None:
        """Record one detection; return the change to report, ``None`` when there is nothing to say."""
        if seen:
            missed, self.missed = self.missed, 0
            if self.gone:
                self.gone = False
                return Change.BACK
            return Change.RETURNED if missed else None
        self.missed += 1
        if not self.gone and self.missed >= self.misses_to_drop:
            self.gone = True
            return Change.GONE
        return None
