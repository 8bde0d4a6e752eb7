"""What every printer transport offers: move bytes to one printer and read its real-time status.

Transports hold no ticket logic: the worker renders a ticket to bytes (ESC/POS, or plain text for a
text file) and hands them to ``Transport.send``. A job counts as printed only when ``send`` returned
(the write drained within its timeout) and the status read after the bytes answered with no error
(python-escpos issue 253: a powered-off printer can swallow bytes without any error on the socket; a
ticket fits in the kernel's send buffer, so a completed write alone proves nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, TypeGuard

import structlog

if TYPE_CHECKING:
    from drivers.printers.status import ConfirmRequest


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


class Outcome(StrEnum):
    """What one job's delivery proves: ``printed``, ``unconfirmed`` (no word after the bytes) or ``failed``."""

    PRINTED = "printed"
    UNCONFIRMED = "unconfirmed"
    FAILED = "failed"


@dataclass(frozen=True)
class Delivery:
    """What happened to one job's bytes: status before sending and after the printer took them.

    ``confirmable`` is False for a transport that cannot read status at all (a device file, USB without an
    IN endpoint): there a completed write is all the evidence there is. ``confirmed`` carries a printer's own
    job confirmation where the profile supports one (``GS r``/ASB; None = not asked).
    """

    before: StatusReading
    after: StatusReading
    confirmable: bool = True
    confirmed: bool | None = None

    @property
    def outcome(self) -> Outcome:
        """Return what this delivery proves (see ``judge``)."""
        return judge(self)

    @property
    def printed(self) -> bool:
        """True only on positive evidence that the ticket came out."""
        return judge(self) is Outcome.PRINTED


def judge(delivery: Delivery) -> Outcome:
    """Decide from a completed write whether the job printed, is unconfirmed (try the next printer) or failed.

    The printer's own confirmation wins: it is sent once the paper is out, so a roll that ran out (or a
    cover opened) right after the job does not unprint it.
    """
    if delivery.confirmed:
        return Outcome.PRINTED
    status = delivery.after.status
    if status.blocks_printing or delivery.confirmed is False:
        return Outcome.FAILED if status.blocks_printing else Outcome.UNCONFIRMED
    if status is PrinterStatus.UNKNOWN:
        return Outcome.UNCONFIRMED if delivery.confirmable else Outcome.PRINTED
    return Outcome.PRINTED


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


class ConfirmingTransport(Transport, Protocol):
    """A transport that can also wait for the printer's own word that a job came out (network)."""

    confirms_jobs: bool

    async def send(self, data: bytes, confirm: ConfirmRequest | None = None) -> Delivery:
        """As ``Transport.send``, then send ``confirm`` after the job and wait for the printer's answer."""
        ...


def can_confirm(transport: Transport) -> TypeGuard[ConfirmingTransport]:
    """Whether ``transport`` can wait for a printer's job confirmation."""
    return getattr(transport, "confirms_jobs", False) is True


def job_sent(
    printer: str,
    size: int,
    before: StatusReading,
    after: StatusReading,
    *,
    confirmed: bool | None,
    confirmable: bool = True,
) -> Delivery:
    """Log ``printer_job_sent`` and return the job's ``Delivery`` (every transport ends a job this way)."""
    structlog.get_logger("venue_agent.printers").debug(
        "printer_job_sent",
        printer=printer,
        size=size,
        before=before.status.value,
        after=after.status.value,
        confirmed=confirmed,
    )
    return Delivery(before, after, confirmable=confirmable, confirmed=confirmed)
