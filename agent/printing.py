"""The print worker: takes durable print jobs from the outbox and gets each onto a healthy printer.

A job is printed on the first configured printer that takes it, in the order of ``fallback.printers``;
when every printer fails it is retried with backoff and one alert is raised until a printer works again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta
from typing import Protocol

import structlog

from agent import outbox_ops as ops
from agent.backoff import full_jitter
from agent.clock import Clock
from agent.config import PrinterSettings, Settings
from agent.outbox import Outbox
from agent.records import PrintJob
from drivers.printers.errors import PrinterError, PrinterUnavailable
from drivers.printers.file import FilePrinter
from drivers.printers.layout import Ticket, TicketKind, layout_ticket

log = structlog.get_logger("venue_agent.printing")

RETRY_BASE_SECONDS = 5.0
RETRY_MAX_SECONDS = 60.0


class TicketPrinter(Protocol):
    """A printer transport: moves one laid-out ticket to paper (or a file), or raises PrinterError."""

    name: str

    async def print_ticket(self, ticket: Ticket) -> None:
        """Print one ticket; raise PrinterUnavailable when this printer cannot take it now."""
        ...

    async def status(self) -> str:
        """Return ok | paper_low | paper_out | cover_open | offline | unknown."""
        ...


class UnsupportedPrinter:
    """A configured printer whose connection type this version cannot drive yet."""

    def __init__(self, settings: PrinterSettings) -> None:
        self.name = settings.name
        self.connection = settings.connection

    async def print_ticket(self, ticket: Ticket) -> None:
        """Refuse: the transport is not available in this version."""
        raise PrinterUnavailable(self.name, f"connection {self.connection!r} is not supported by this version yet")

    async def status(self) -> str:
        """Return ``unknown``."""
        return "unknown"


def build_printer(settings: PrinterSettings) -> TicketPrinter:
    """Return the transport for one ``[[printers]]`` entry."""
    if settings.connection == "file":
        assert settings.path is not None
        return FilePrinter(name=settings.name, path=settings.path)
    return UnsupportedPrinter(settings)


class PrintWorker:
    """Prints pending jobs in order, fails over between printers, retries and alerts when all fail."""

    def __init__(self, *, outbox: Outbox, settings: Settings, clock: Clock) -> None:
        self.outbox = outbox
        self.settings = settings
        self.clock = clock
        self.printers: list[tuple[PrinterSettings, TicketPrinter]] = [
            (p, build_printer(p)) for p in settings.fallback_printers()
        ]
        self.states: dict[str, str] = {p.name: "unknown" for p, _ in self.printers}
        self.progress = 0.0
        self._wake = asyncio.Event()
        self._all_down_alerted = False

    def wake(self) -> None:
        """Tell the worker a job is waiting."""
        self._wake.set()

    async def run(self) -> None:
        """Print due jobs; sleep a second (clock time) or until woken."""
        while True:
            self.progress = time.monotonic()
            self._wake.clear()
            for job in await self.outbox.due_print_jobs(self.clock.now()):
                await self.print_job(job)
            sleeper = asyncio.ensure_future(self.clock.sleep(1.0))
            waker = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for future in (sleeper, waker):
                    future.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await future

    async def print_job(self, job: PrintJob) -> bool:
        """Try one job on each printer in turn; return whether it printed."""
        record = await self.outbox.get(job.order_id)
        if record is None:
            return False
        errors: list[str] = []
        for printer_settings, printer in self.printers:
            ticket = layout_ticket(
                record.order,
                kind=TicketKind(job.kind),
                columns=printer_settings.columns,
                tz=self.settings.venue.tz,
                received_at=record.received_at,
                reprint_no=job.reprint_no,
                currency=self.settings.venue.currency,
            )
            try:
                await printer.print_ticket(ticket)
            except PrinterError as exc:
                self.states[printer.name] = "offline"
                errors.append(f"{printer.name}: {exc}")
                log.warning("printer_failed", printer=printer.name, job_id=job.id, error=str(exc))
                continue
            self.states[printer.name] = "ok"
            await self._printed(job, printer.name)
            log.info("ticket_printed", order_id=job.order_id, kind=job.kind, printer=printer.name)
            if self._all_down_alerted:
                self._all_down_alerted = False
                await self.outbox.event("printers_recovered", {"printer": printer.name})
            return True
        await self._all_failed(job, errors or ["no printer is configured for fallback tickets"])
        return False

    async def _printed(self, job: PrintJob, printer: str) -> None:
        now = self.clock.now()
        await self.outbox.write(
            lambda c: ops.finish_print_job(c, job.id, now=now, printer=printer, error=None, retry_at=None)
        )

    async def _all_failed(self, job: PrintJob, errors: list[str]) -> None:
        now = self.clock.now()
        delay = full_jitter(job.attempts + 1, base=RETRY_BASE_SECONDS, cap=RETRY_MAX_SECONDS)
        retry_at = now + timedelta(seconds=max(1.0, delay))
        error = "; ".join(errors)
        await self.outbox.write(
            lambda c: ops.finish_print_job(c, job.id, now=now, printer=None, error=error, retry_at=retry_at)
        )
        if not self._all_down_alerted:
            self._all_down_alerted = True
            await self.outbox.alert(
                "printer_offline",
                "critical",
                {
                    "order": None,
                    "reason": f"no printer could print the {job.kind} ticket for order {job.order_id}: {error}",
                    "action": (
                        "Check the kitchen printer is switched on, has paper, its cover is closed and its cable or"
                        " network is connected. Tickets wait and print as soon as a printer answers."
                    ),
                },
                order_id=job.order_id,
            )
