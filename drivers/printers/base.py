"""What every printer transport offers: move bytes to one printer and read its real-time status.

Transports hold no ticket logic: the worker renders a ticket to bytes (ESC/POS, or plain text for a
text file) and hands them to ``Transport.send``. A job counts as printed only when ``send`` returned
and the status read after the bytes shows no error (python-escpos issue 253: a powered-off printer
can swallow bytes without any error on the socket).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class PrinterStatus(StrEnum):
    """A printer's state as read with DLE EOT; a printer that does not answer is ``unknown``, never ``ok``."""

    OK = "ok"
    PAPER_LOW = "paper_low"
    PAPER_OUT = "paper_out"
    COVER_OPEN = "cover_open"
    OFFLINE = "offline"
    UNKNOWN = "unknown"

    @property
    def blocks_printing(self) -> bool:
        """Whether a ticket sent now would not come out (paper out, cover open, offline)."""
        return self in _BLOCKING


_BLOCKING = frozenset({PrinterStatus.PAPER_OUT, PrinterStatus.COVER_OPEN, PrinterStatus.OFFLINE})


@dataclass(frozen=True)
class StatusReading:
    """One status read: the mapped state, a short human detail, and the raw reply bytes (n=1, 2, 4)."""

    status: PrinterStatus
    detail: str = ""
    raw: bytes = b""


UNKNOWN = StatusReading(PrinterStatus.UNKNOWN, "the printer did not answer a status request")


@dataclass(frozen=True)
class Delivery:
    """What happened to one job's bytes: status before sending and after the printer took them."""

    before: StatusReading
    after: StatusReading

    @property
    def printed(self) -> bool:
        """True when the printer took the bytes and reported no error afterwards."""
        return not self.after.status.blocks_printing


class Transport(Protocol):
    """One printer connection: network, serial, USB or file. Every call has its own timeout."""

    name: str

    async def send(self, data: bytes) -> Delivery:
        """Read status, send ``data``, read status again; one connection per call, closed before returning.

        Raises ``PrinterNotReady`` without sending when the status read first blocks printing, and
        ``PrinterUnavailable`` when the printer cannot be reached or does not take the bytes in time.
        """
        ...

    async def status(self) -> StatusReading:
        """Read the real-time status now; ``unknown`` when the transport cannot read or nothing answers."""
        ...
