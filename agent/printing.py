"""The print worker: takes durable print jobs from the outbox and gets each ticket onto a healthy printer.

A job is routed once (kitchen routing may split it into one ticket per printer, "1 of N"), then each
ticket goes to the first printer that takes it and fails over to the next. Before the bytes leave,
the job is marked ``printing``; a crash from there leaves it in doubt, and it prints again marked as a
possible duplicate. When every printer fails, the job retries with backoff and one alert is raised
until a ticket prints again. A prober reads every printer's status once a minute, so ops hears of a
paper-out printer before the POS goes down. A USB printer's device node is looked for every 3 s: it is
reported unplugged only after 3 missed detections in a row (agent/presence.py), and the moment it is seen
again the tickets waiting for it are tried at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog

from agent import alerts, snoozes
from agent import outbox_ops as ops
from agent.backoff import full_jitter
from agent.clock import Clock
from agent.config import PrinterSettings, Settings
from agent.outbox import Outbox
from agent.presence import DETECT_INTERVAL_SECONDS, Change, Presence
from agent.print_test import print_test
from agent.records import OrderRecord, PrintJob
from agent.routing import route_items
from agent.tickets import PrinterSetup, order_ticket
from drivers.printers.base import Delivery, Outcome, PrinterStatus, StatusReading, Transport
from drivers.printers.errors import PrinterError, PrinterUnavailable
from drivers.printers.layout import Ticket
from drivers.printers.status import Timeouts
from drivers.printers.transports import build_transport

log = structlog.get_logger("venue_agent.printing")

RETRY_BASE_SECONDS = 5.0
RETRY_MAX_SECONDS = 60.0
PROBE_INTERVAL_SECONDS = 60.0
SEND_BUDGET_MARGIN_SECONDS = 1.0
SEND_BUDGET_DEFAULT_SECONDS = 60.0
NOT_READ = StatusReading(PrinterStatus.UNKNOWN, "not read yet")
# SPEC §8 names printer states ok|paper_low|paper_out|offline|error; a cover left open is an error there.
HEALTH_STATES = {PrinterStatus.COVER_OPEN: "error"}


def send_budget(timeouts: object) -> float:
    """Return the longest one job may take: every step's own timeout plus a margin (a safety net, never the rule)."""
    if not isinstance(timeouts, Timeouts):
        return SEND_BUDGET_DEFAULT_SECONDS
    # Connect, two status dialogues (stray-byte drain plus three queries each), the write and the close.
    return 2 * timeouts.connect + timeouts.write + 8 * timeouts.status + SEND_BUDGET_MARGIN_SECONDS


@dataclass
class PrinterSlot:
    """One configured printer: its transport, last known status and whether ops was told it is down."""

    setup: PrinterSetup
    transport: Transport
    state: StatusReading = NOT_READ
    alerted: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    presence: Presence = field(default_factory=Presence)

    @property
    def name(self) -> str:
        """Return the printer's name."""
        return self.setup.settings.name

    @property
    def usable(self) -> bool:
        """Whether the last status read does not rule the printer out."""
        return not self.state.status.blocks_printing

    def device_present(self) -> bool | None:
        """Whether the printer's device node is there now; ``None`` when it has none (network, serial, a file)."""
        present = getattr(self.transport, "present", None)
        return present() if callable(present) else None

    def missing_not_gone(self) -> bool:
        """Whether its device node is missing but not yet for long enough to report it unplugged."""
        return self.device_present() is False and not self.presence.gone


class PrintWorker:
    """Prints pending jobs in order, fails over between printers, retries and alerts when all fail."""

    def __init__(
        self,
        *,
        outbox: Outbox,
        settings: Settings,
        clock: Clock,
        transports: dict[str, Transport] | None = None,
    ) -> None:
        self.outbox = outbox
        self.settings = settings
        self.clock = clock
        given = transports or {}
        self.slots: dict[str, PrinterSlot] = {
            p.name: PrinterSlot(PrinterSetup(p), given.get(p.name) or build_transport(p)) for p in settings.printers
        }
        self.progress = 0.0
        self._wake = asyncio.Event()
        self._all_down_alerted = False

    @property
    def states(self) -> dict[str, str]:
        """Return each printer's last status (``ok``, ``paper_out``, …, ``unknown``)."""
        return {name: slot.state.status.value for name, slot in self.slots.items()}

    def health(self) -> list[dict[str, Any]]:
        """Return the printers as SPEC §8 health reports them, with the detail of the last status read."""
        return [
            {
                "name": name,
                "state": HEALTH_STATES.get(slot.state.status, slot.state.status.value),
                "detail": slot.state.detail,
            }
            for name, slot in self.slots.items()
        ]

    async def prepare(self) -> None:
        """Load python-escpos and resolve every printer's code page off the event loop; log what is unusable."""
        for slot in self.slots.values():
            if slot.setup.settings.writes_text:
                continue
            try:
                await asyncio.to_thread(getattr, slot.setup, "code_page")
            except PrinterError as exc:
                slot.state = StatusReading(PrinterStatus.OFFLINE, f"misconfigured: {exc}")
                log.error("printer_misconfigured", printer=slot.name, error=str(exc))

    def wake(self) -> None:
        """Tell the worker a job is waiting."""
        self._wake.set()

    async def recover(self) -> list[int]:
        """Mark jobs a crash caught mid-print as in doubt, to print again as possible duplicates."""
        now = self.clock.now()
        ids = await self.outbox.write(lambda c: ops.recover_print_jobs(c, now=now))
        if ids:
            log.warning("print_jobs_in_doubt", count=len(ids), job_ids=ids[:20])
        return ids

    async def run(self) -> None:
        """Print due jobs; sleep a second (clock time) or until woken."""
        while True:
            self.progress = time.monotonic()
            self._wake.clear()
            for job in await self.outbox.due_print_jobs(self.clock.now()):
                # Per job, so a round over several dead printers does not look wedged to the watchdog.
                self.progress = time.monotonic()
                await self.print_job(job)
            await self._sleep(1.0, wake=True)

    async def run_prober(self) -> None:
        """Read every printer's status now and then once every ``PROBE_INTERVAL_SECONDS``; look for USB nodes often."""
        watched = [slot for slot in self.slots.values() if slot.device_present() is not None]
        next_probe = self.clock.now()
        while True:
            await self.detect_presence()
            if self.clock.now() >= next_probe:
                for slot in self.slots.values():
                    async with slot.lock:
                        reading = await slot.transport.status()
                    await self._observe(slot, reading)
                await self._flush_printer_alerts()
                next_probe = self.clock.now() + timedelta(seconds=PROBE_INTERVAL_SECONDS)
            await self._sleep(DETECT_INTERVAL_SECONDS if watched else PROBE_INTERVAL_SECONDS, wake=False)

    async def detect_presence(self) -> None:
        """Look for each USB printer's device node once; report unplugged only after repeated misses."""
        returned = False
        for slot in self.slots.values():
            seen = slot.device_present()
            if seen is None:
                continue
            change = slot.presence.observe(seen)
            if change is Change.GONE:
                detail = (
                    f"unplugged: its device node is gone (not seen in {slot.presence.missed} checks"
                    f" {DETECT_INTERVAL_SECONDS:g} s apart)"
                )
                log.warning("printer_unplugged", printer=slot.name, misses=slot.presence.missed)
                await self._observe(slot, StatusReading(PrinterStatus.OFFLINE, detail))
                await self._flush_printer_alerts()
            elif change is not None:
                log.info("printer_plugged_in", printer=slot.name, reported_gone=change is Change.BACK)
                returned = True
                if change is Change.BACK:
                    async with slot.lock:
                        reading = await slot.transport.status()
                    await self._observe(slot, reading)
                    if slot.alerted is not None and not slot.state.status.blocks_printing:
                        slot.alerted = None
                        await self.outbox.event("printer_recovered", {"printer": slot.name})
        if returned:
            # Tickets that failed while it was out wait for their retry delay (up to a minute): not any more.
            now = self.clock.now()
            count = await self.outbox.write(lambda c: ops.retry_print_jobs_now(c, now=now))
            if count:
                log.info("print_jobs_retried_now", count=count)
            self.wake()

    async def print_test(self, names: list[str]) -> list[dict[str, Any]]:
        """Print the test page on each named printer, between tickets (never during one); report each result."""
        results = []
        for name in names:
            slot = self.slots[name]
            async with slot.lock:
                results.append(await print_test(slot.setup, slot.transport, tz=self.settings.venue.tz))
        return results

    async def print_job(self, job: PrintJob) -> bool:
        """Print one job (all its routed tickets); return whether every ticket printed."""
        record = await self.outbox.get(job.order_id)
        if record is None:
            return False
        jobs = [job]
        if not job.routed:
            candidates = self.settings.printers_for(job.kind)
            parts = route_items([item.category for item in record.order.items], candidates)
            jobs = await self.outbox.write(lambda c: ops.route_print_job(c, job.id, parts))
        results = [await self._print_ticket(record, j) for j in jobs]
        return all(results)

    async def _print_ticket(self, record: OrderRecord, job: PrintJob) -> bool:
        now = self.clock.now()
        snoozed = await self.outbox.read(lambda c: snoozes.active(c, now=now))
        flagged = frozenset(s.sku for s in snoozed)
        names = [n for n in (job.printers or ()) if n in self.slots]
        if not names:
            names = [p.name for p in self.settings.printers_for(job.kind)]
        failures: dict[str, tuple[str, str]] = {}
        for name in names:
            slot = self.slots[name]
            try:
                data = slot.setup.payload(self._ticket(record, job, slot.setup.settings, flagged))
            except (PrinterError, ValueError) as exc:
                failures[name] = (PrinterStatus.OFFLINE.value, f"cannot render the ticket: {exc}")
                log.error("ticket_render_failed", printer=name, job_id=job.id, error=str(exc))
                continue
            await self.outbox.write(functools.partial(ops.start_print_job, job_id=job.id, printer=name))
            async with slot.lock:
                budget = send_budget(getattr(slot.transport, "timeouts", None))
                try:
                    async with asyncio.timeout(budget):
                        delivery = await slot.transport.send(data)
                except TimeoutError:
                    # The transport's own timeouts should have fired; the bytes may be out, so it is in doubt.
                    overdue = StatusReading(PrinterStatus.UNKNOWN, f"the job did not finish within {budget:g} s")
                    delivery = Delivery(NOT_READ, overdue)
                except PrinterUnavailable as exc:
                    reading = StatusReading(exc.status, exc.reason)
                    delivery = None
                except PrinterError as exc:
                    reading = StatusReading(PrinterStatus.OFFLINE, str(exc))
                    delivery = None
            if delivery is None:
                await self._observe(slot, reading)
                failures[name] = (reading.status.value, reading.detail)
                log.warning("printer_failed", printer=name, job_id=job.id, status=reading.status, error=reading.detail)
                continue
            if not slot.setup.settings.confirm:
                delivery = dataclasses.replace(delivery, confirmable=False)
            outcome = delivery.outcome
            if outcome is Outcome.UNCONFIRMED:
                job = await self._unconfirmed(slot, job, delivery)
                failures[name] = (PrinterStatus.OFFLINE.value, slot.state.detail)
                continue
            await self._observe(slot, delivery.after)
            if outcome is Outcome.FAILED:
                detail = f"{delivery.after.detail} (after the ticket was sent)"
                failures[name] = (delivery.after.status.value, detail)
                log.warning("printer_failed", printer=name, job_id=job.id, status=delivery.after.status, error=detail)
                continue
            await self._printed(job, name)
            log.info(
                "ticket_printed",
                order_id=job.order_id,
                kind=job.kind,
                printer=name,
                part=job.part,
                parts=job.parts,
                in_doubt=job.in_doubt,
                status=delivery.after.status,
            )
            if self._all_down_alerted:
                self._all_down_alerted = False
                await self.outbox.event("printers_recovered", {"printer": name})
            await self._flush_printer_alerts(covered_by=name)
            return True
        await self._all_failed(record, job, failures)
        return False

    def _ticket(self, record: OrderRecord, job: PrintJob, printer: PrinterSettings, flagged: frozenset[str]) -> Ticket:
        part = (job.part, job.parts) if job.part is not None and job.parts is not None else None
        return order_ticket(
            record.order,
            kind=job.kind,
            columns=printer.columns,
            tz=self.settings.venue.tz,
            received_at=record.received_at,
            currency=self.settings.venue.currency,
            reprint_no=job.reprint_no,
            part=part,
            items=job.items,
            in_doubt=job.in_doubt,
            flagged_skus=flagged,
        )

    async def _observe(self, slot: PrinterSlot, reading: StatusReading) -> None:
        if reading.status.blocks_printing and slot.missing_not_gone():
            # A USB printer being re-plugged: detect_presence reports it once it has missed enough checks.
            log.debug("printer_missing_not_reported_yet", printer=slot.name, detail=reading.detail)
            return
        before = slot.state.status
        slot.state = reading
        if reading.status != before:
            log.info("printer_state_changed", printer=slot.name, state=reading.status, detail=reading.detail)
        if reading.status is PrinterStatus.OK and slot.alerted is not None:
            slot.alerted = None
            await self.outbox.event("printer_recovered", {"printer": slot.name})

    async def _flush_printer_alerts(self, *, covered_by: str | None = None) -> None:
        """Raise one alert per printer newly out of paper, offline or low on paper."""
        for slot in self.slots.values():
            status = slot.state.status
            wants = alerts.printer_alert_name(status.value)
            if not (status.blocks_printing or status is PrinterStatus.PAPER_LOW) or slot.alerted == wants:
                continue
            slot.alerted = wants
            other = covered_by if covered_by != slot.name else None
            if other is None and status.blocks_printing:
                other = next((s.name for s in self.slots.values() if s is not slot and s.usable), None)
            severity = "warning" if other is not None or status is PrinterStatus.PAPER_LOW else "critical"
            payload = alerts.printer_problem(slot.name, status.value, slot.state.detail, covered_by=other)
            await self.outbox.alert(wants, severity, payload)
            log.warning("printer_alert", alert=wants, printer=slot.name, detail=slot.state.detail)

    async def _unconfirmed(self, slot: PrinterSlot, job: PrintJob, delivery: Delivery) -> PrintJob:
        """A printer took the bytes but gave no word after them: count it offline, the next copy is a reprint."""
        detail = (
            f"took the ticket but never confirmed it printed ({delivery.after.detail});"
            " a copy goes to the next printer marked REPRINT"
        )
        await self._observe(slot, StatusReading(PrinterStatus.OFFLINE, detail, delivery.after.raw))
        now = self.clock.now()
        job = await self.outbox.write(
            functools.partial(ops.unconfirmed_print_job, job_id=job.id, printer=slot.name, detail=detail, now=now)
        )
        log.warning("print_unconfirmed", printer=slot.name, job_id=job.id, order_id=job.order_id, error=detail)
        return job

    async def _printed(self, job: PrintJob, printer: str) -> None:
        now = self.clock.now()
        await self.outbox.write(
            lambda c: ops.finish_print_job(c, job.id, now=now, printer=printer, error=None, retry_at=None)
        )

    async def _all_failed(self, record: OrderRecord, job: PrintJob, failures: dict[str, tuple[str, str]]) -> None:
        now = self.clock.now()
        delay = full_jitter(job.attempts + 1, base=RETRY_BASE_SECONDS, cap=RETRY_MAX_SECONDS)
        retry_at = now + timedelta(seconds=max(1.0, delay))
        error = "; ".join(f"{name}: {detail}" for name, (_, detail) in failures.items())
        error = error or "no printer is configured for this ticket"
        await self.outbox.write(
            lambda c: ops.finish_print_job(c, job.id, now=now, printer=None, error=error, retry_at=retry_at)
        )
        log.error("ticket_not_printed", order_id=job.order_id, kind=job.kind, error=error, retry_at=retry_at)
        if self._all_down_alerted:
            return
        if failures and all(n in self.slots and self.slots[n].missing_not_gone() for n in failures):
            # Every printer it could go to is a USB printer out for a moment: it prints as soon as one is back.
            return
        self._all_down_alerted = True
        statuses = {status for status, _ in failures.values()}
        name = "printer_paper_out" if statuses == {PrinterStatus.PAPER_OUT.value} else "printer_offline"
        for printer in failures:
            self.slots[printer].alerted = alerts.printer_alert_name(self.slots[printer].state.status.value)
        code = record.order.with_display_code().display_code or ""
        payload = alerts.ticket_not_printed(record.order, display_code=code, kind=job.kind, failures=failures)
        await self.outbox.alert(name, "critical", payload, order_id=job.order_id)

    async def _sleep(self, seconds: float, *, wake: bool) -> None:
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        waiters: set[asyncio.Future[Any]] = {sleeper}
        if wake:
            waiters.add(asyncio.ensure_future(self._wake.wait()))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in waiters:
                future.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await future
