"""The print worker: takes durable print jobs from the outbox and gets each ticket onto a healthy printer.

A job is routed once (kitchen routing may split it into one ticket per printer, "1 of N"). Each printer
has its own queue and its own task: a ticket waits only behind tickets for the same printer, so a
station printer that hangs or runs out of paper never delays another station's tickets. A ticket that
fails on its printer moves to the next printer's queue (a printer known to be down is skipped while a
healthy one is left). Before the bytes leave, the job is marked ``printing``; a crash from there leaves
it in doubt, and it prints again marked as a possible duplicate. When every printer fails, the job
retries with backoff and one alert is raised until a ticket prints again. A prober reads every
printer's status once a minute, so ops hears of a paper-out printer before the POS goes down. A USB
printer's device node is looked for every 3 s: it is reported unplugged only after 3 missed detections in
a row (agent/printing/presence.py), and the moment it is seen again the tickets waiting for it are tried at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog

from agent.dispatch import alerts
from agent.dispatch.backoff import full_jitter
from agent.domain.clock import Clock
from agent.domain.config import PrinterSettings, Settings
from agent.domain.routing import route_items
from agent.outbox import print_jobs, snoozes
from agent.outbox.records import OrderRecord, PrintJob
from agent.outbox.store import Outbox
from agent.printing.presence import DETECT_INTERVAL_SECONDS, Change, Presence
from agent.printing.print_test import print_test
from agent.printing.tickets import PrinterSetup, TicketFacts, late_minutes, order_ticket, ticket_skus
from drivers.printers.base import Delivery, Outcome, PrinterStatus, StatusReading, Transport, can_confirm
from drivers.printers.errors import PrinterError, PrinterUnavailable
from drivers.printers.layout import Ticket
from drivers.printers.status import CONFIRM_KINDS, ConfirmKind, ConfirmRequest, Timeouts, profile_confirmation
from drivers.printers.transports import build_transport

log = structlog.get_logger("venue_agent.printing")

RETRY_BASE_SECONDS = 5.0
RETRY_MAX_SECONDS = 60.0
PROBE_INTERVAL_SECONDS = 60.0
# With no job printing or due, the worker sleeps until the next is due, this long at most (new jobs wake it).
IDLE_SECONDS = 30.0
SEND_BUDGET_MARGIN_SECONDS = 1.0
SEND_BUDGET_DEFAULT_SECONDS = 60.0
NOT_READ = StatusReading(PrinterStatus.UNKNOWN, "not read yet")
# SPEC §8 names printer states ok|paper_low|paper_out|offline|error; a cover left open is an error there.
HEALTH_STATES = {PrinterStatus.COVER_OPEN: "error"}


def confirmation_of(delivery: Delivery, request: ConfirmRequest | None) -> str:
    """Return what vouches for a printed job: the printer's word (its kind), else ``status`` or ``write``."""
    if delivery.confirmed and request is not None:
        return request.kind
    return "status" if delivery.confirmable else "write"


def _settle(future: asyncio.Future[bool], printed: bool) -> None:
    if not future.done():
        future.set_result(printed)


def send_budget(timeouts: object, *, confirming: bool = False) -> float:
    """Return the longest one job may take: every step's own timeout plus a margin (a safety net, never the rule)."""
    if not isinstance(timeouts, Timeouts):
        return SEND_BUDGET_DEFAULT_SECONDS
    # Connect, two status dialogues (stray-byte drain plus three queries each), the write and the close.
    budget = 2 * timeouts.connect + timeouts.write + 8 * timeouts.status + SEND_BUDGET_MARGIN_SECONDS
    return budget + (timeouts.confirm + timeouts.status if confirming else 0.0)


@dataclass
class PrinterSlot:
    """One configured printer: its transport, last known status and whether ops was told it is down."""

    setup: PrinterSetup
    transport: Transport
    state: StatusReading = NOT_READ
    alerted: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    queue: deque[_Ticket] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    # Whether the printer has answered a job confirmation: None not yet asked, False found not to (auto mode).
    answers_confirmation: bool | None = None
    presence: Presence = field(default_factory=Presence)

    @property
    def name(self) -> str:
        """Return the printer's name."""
        return self.setup.settings.name

    @property
    def usable(self) -> bool:
        """Whether the last status read does not rule the printer out."""
        return not self.state.status.blocks_printing

    @property
    def confirm_kind(self) -> ConfirmKind | None:
        """Return how this printer is asked to confirm each job, or None when only its status is read."""
        setting = self.setup.settings.confirm
        if not can_confirm(self.transport) or setting is False or setting == "status":
            return None
        if setting is True:
            return None if self.answers_confirmation is False else profile_confirmation(self.setup.settings.profile)
        return setting

    @property
    def confirmation(self) -> str:
        """Return what vouches for this printer's tickets: a confirmation kind, ``status`` or ``write``."""
        if self.confirm_kind is not None:
            return self.confirm_kind
        settings = self.setup.settings
        return "write" if settings.confirm is False or not settings.two_way else "status"

    def device_present(self) -> bool | None:
        """Whether the printer's device node is there now; ``None`` when it has none (network, serial, a file)."""
        present = getattr(self.transport, "present", None)
        return present() if callable(present) else None

    def missing_not_gone(self) -> bool:
        """Whether its device node is missing but not yet for long enough to report it unplugged."""
        return self.device_present() is False and not self.presence.gone


@dataclass
class _Ticket:
    """One routed ticket on its way: its job, the printers it may go to (home first), what failed so far."""

    job: PrintJob
    record: OrderRecord
    names: list[str]
    flagged: frozenset[str]
    copies: int
    done: asyncio.Future[bool]
    failures: dict[str, tuple[str, str]] = field(default_factory=dict)


class PrintWorker:
    """Prints pending jobs, one queue per printer, fails over between printers, retries and alerts when all fail."""

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
        # Jobs handed to a printer's queue and not finished yet, by job id.
        self._in_flight: dict[int, asyncio.Future[bool]] = {}

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
                # Not in SPEC §8: whether a ticket counts as printed on the printer's own word (confirmed)
                # or only on its status after the job (unconfirmed), and by which command.
                "confirmation": "confirmed" if slot.confirmation in CONFIRM_KINDS else "unconfirmed",
                "confirmed_by": slot.confirmation,
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
        ids = await self.outbox.write(lambda c: print_jobs.recover_print_jobs(c, now=now))
        if ids:
            log.warning("print_jobs_in_doubt", count=len(ids), job_ids=ids[:20])
        return ids

    async def run(self) -> None:
        """Hand due jobs to their printers' queues; sleep a second (clock time) or until woken."""
        try:
            while True:
                self.progress = time.monotonic()
                self._wake.clear()
                # Jobs already queued stay out of the count, so a queue stuck behind one printer never hides
                # the jobs due for the others.
                due = await self.outbox.due_print_jobs(self.clock.now(), limit=20 + len(self._in_flight))
                for job in due:
                    if job.id not in self._in_flight:
                        await self._submit(job)
                await self._sleep(await self._pause(), wake=True)
        finally:
            await self.stop()

    async def _pause(self) -> float:
        """Return a second while jobs are printing or due, else the time until the next job is due (at most idle)."""
        if self._in_flight:
            return 1.0
        next_due = await self.outbox.next_print_due()
        if next_due is None:
            return IDLE_SECONDS
        return min(IDLE_SECONDS, max(1.0, (next_due - self.clock.now()).total_seconds()))

    async def stop(self) -> None:
        """Cancel every printer's task (a job caught mid-print is in doubt at the next start)."""
        tasks = [slot.task for slot in self.slots.values() if slot.task is not None and not slot.task.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run_prober(self) -> None:
        """Read every printer's status (all at once) now and every ``PROBE_INTERVAL_SECONDS``; watch USB nodes."""
        watched = [slot for slot in self.slots.values() if slot.device_present() is not None]
        next_probe = self.clock.now()
        while True:
            await self.detect_presence()
            if self.clock.now() >= next_probe:
                readings = await asyncio.gather(*(self._probe(slot) for slot in self.slots.values()))
                for slot, reading in zip(self.slots.values(), readings, strict=True):
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
            count = await self.outbox.write(lambda c: print_jobs.retry_print_jobs_now(c, now=now))
            if count:
                log.info("print_jobs_retried_now", count=count)
            self.wake()

    async def _probe(self, slot: PrinterSlot) -> StatusReading:
        async with slot.lock:
            return await slot.transport.status()

    async def print_test(self, names: list[str]) -> list[dict[str, Any]]:
        """Print the test page on each named printer, between tickets (never during one); report each result."""
        results = []
        for name in names:
            slot = self.slots[name]
            async with slot.lock:
                results.append(await print_test(slot.setup, slot.transport, tz=self.settings.venue.tz))
        return results

    async def print_job(self, job: PrintJob) -> bool:
        """Print one job (all its routed tickets) through the printers' queues; return whether every ticket printed."""
        futures = await self._submit(job)
        results = await asyncio.gather(*futures)
        return bool(results) and all(results)

    async def _submit(self, job: PrintJob) -> list[asyncio.Future[bool]]:
        """Route a job if needed and put each of its tickets in its first printer's queue; return their outcomes."""
        record = await self.outbox.get(job.order_id)
        if record is None:
            return []
        jobs = [job]
        if not job.routed:
            candidates = self.settings.printers_for(job.kind)
            parts = route_items([item.category for item in record.order.items], candidates)
            jobs = await self.outbox.write(lambda c: print_jobs.route_print_job(c, job.id, parts))
        now = self.clock.now()
        snoozed = await self.outbox.read(lambda c: snoozes.active(c, now=now))
        flagged = frozenset(s.sku for s in snoozed)
        futures = []
        for routed in jobs:
            waiting = self._in_flight.get(routed.id)
            if waiting is not None:
                futures.append(waiting)
                continue
            names = [n for n in (routed.printers or ()) if n in self.slots]
            if not names:
                names = [p.name for p in self.settings.printers_for(routed.kind)]
            copies = await self.outbox.read(
                functools.partial(print_jobs.copies_printed, order_id=routed.order_id, part=routed.part)
            )
            done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            ticket = _Ticket(routed, record, names, flagged, copies, done)
            self._in_flight[routed.id] = done
            done.add_done_callback(functools.partial(self._landed, routed.id))
            futures.append(done)
            await self._dispatch(ticket)
        return futures

    def _landed(self, job_id: int, _: asyncio.Future[bool]) -> None:
        self._in_flight.pop(job_id, None)

    async def _dispatch(self, ticket: _Ticket) -> None:
        """Queue the ticket on the next printer to try, healthy ones first; when none is left it failed."""
        left = [name for name in ticket.names if name not in ticket.failures]
        if not left:
            await self._all_failed(ticket.record, ticket.job, ticket.failures)
            _settle(ticket.done, False)
            return
        healthy = [name for name in left if self.slots[name].usable]
        slot = self.slots[(healthy or left)[0]]
        slot.queue.append(ticket)
        if slot.task is None or slot.task.done():
            slot.task = asyncio.create_task(self._drain(slot), name=f"venue-agent printer {slot.name}")

    async def _drain(self, slot: PrinterSlot) -> None:
        """Print this printer's queue in order; the task ends when the queue is empty."""
        ticket: _Ticket | None = None
        try:
            while slot.queue:
                ticket = slot.queue.popleft()
                try:
                    await self._attempt(slot, ticket)
                except Exception as exc:  # a failed write to the outbox: the job stays pending, the next round retries
                    log.error("print_attempt_failed", printer=slot.name, job_id=ticket.job.id, error=str(exc))
                    _settle(ticket.done, False)
                ticket = None
        finally:
            # Cancelled (the agent stops): nobody waits for what is left; the jobs are still in the outbox.
            for left in [*([ticket] if ticket else []), *slot.queue]:
                if not left.done.done():
                    left.done.cancel()
            slot.queue.clear()

    async def _attempt(self, slot: PrinterSlot, ticket: _Ticket) -> None:
        """Send one ticket to this printer; on any failure pass it to the next printer."""
        name = slot.name
        job = ticket.job
        others = [n for n in ticket.names if n != name and n not in ticket.failures and self.slots[n].usable]
        if not slot.usable and others:
            # Went down while the ticket waited in its queue: no timeout is spent on it, the next printer takes it.
            ticket.failures[name] = (slot.state.status.value, f"skipped: {slot.state.detail}")
            await self._dispatch(ticket)
            return
        facts = self._facts(
            ticket.record, job, slot.setup.settings, ticket.flagged, ticket.copies, home=ticket.names[0]
        )
        try:
            data = slot.setup.payload(self._ticket(ticket.record, facts, slot.setup.settings))
        except (PrinterError, ValueError) as exc:
            ticket.failures[name] = (PrinterStatus.OFFLINE.value, f"cannot render the ticket: {exc}")
            log.error("ticket_render_failed", printer=name, job_id=job.id, error=str(exc))
            await self._dispatch(ticket)
            return
        await self.outbox.write(functools.partial(print_jobs.start_print_job, job_id=job.id, printer=name))
        kind = slot.confirm_kind
        request = ConfirmRequest.for_job(kind, job.id, job.attempts + len(ticket.failures)) if kind else None
        transport = slot.transport
        async with slot.lock:
            budget = send_budget(getattr(transport, "timeouts", None), confirming=request is not None)
            try:
                async with asyncio.timeout(budget):
                    if request is not None and can_confirm(transport):
                        delivery = await transport.send(data, confirm=request)
                    else:
                        delivery = await transport.send(data)
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
            ticket.failures[name] = (reading.status.value, reading.detail)
            log.warning("printer_failed", printer=name, job_id=job.id, status=reading.status, error=reading.detail)
            await self._dispatch(ticket)
            return
        if not slot.setup.settings.confirm:
            delivery = dataclasses.replace(delivery, confirmable=False)
        if request is not None:
            delivery = self._learn_confirmation(slot, delivery)
            if delivery.confirmed is None:
                request = None
        outcome = delivery.outcome
        if outcome is Outcome.UNCONFIRMED:
            ticket.job = await self._unconfirmed(slot, job, delivery)
            ticket.failures[name] = (PrinterStatus.OFFLINE.value, slot.state.detail)
            await self._dispatch(ticket)
            return
        await self._observe(slot, delivery.after)
        if outcome is Outcome.FAILED:
            detail = f"{delivery.after.detail} (after the ticket was sent)"
            ticket.failures[name] = (delivery.after.status.value, detail)
            log.warning("printer_failed", printer=name, job_id=job.id, status=delivery.after.status, error=detail)
            # Part of it may be on paper, and the rest comes out when the roll is changed: the next copy says so.
            now = self.clock.now()
            ticket.job = await self.outbox.write(
                functools.partial(
                    print_jobs.unconfirmed_print_job,
                    job_id=job.id,
                    printer=name,
                    detail=detail,
                    now=now,
                    event="print_interrupted",
                )
            )
            await self._dispatch(ticket)
            return
        await self._printed(job, name, facts, confirmation_of(delivery, request))
        log.info(
            "ticket_printed",
            order_id=job.order_id,
            kind=job.kind,
            printer=name,
            part=job.part,
            parts=job.parts,
            in_doubt=job.in_doubt,
            status=delivery.after.status,
            confirmed_by=confirmation_of(delivery, request),
        )
        if self._all_down_alerted:
            self._all_down_alerted = False
            await self.outbox.event("printers_recovered", {"printer": name})
        await self._flush_printer_alerts(covered_by=name)
        _settle(ticket.done, True)

    def _facts(
        self,
        record: OrderRecord,
        job: PrintJob,
        printer: PrinterSettings,
        flagged: frozenset[str],
        copies: int,
        *,
        home: str,
    ) -> TicketFacts:
        """Work out what this copy says when sent to ``printer`` now (``copies`` already came out)."""
        part = (job.part, job.parts) if job.part is not None and job.parts is not None else None
        wanted = set(ticket_skus(record.order, job.items))
        return TicketFacts(
            kind=job.kind,
            # A copy in doubt may be on paper already: this one is the next copy after it.
            copy=copies + 1 + (1 if job.in_doubt else 0),
            in_doubt=job.in_doubt,
            late_minutes=late_minutes(
                record.due_at,
                self.clock.now(),
                late_after_minutes=self.settings.tickets.late_after_minutes,
                requested_at=record.order.requested_at,
            ),
            backup_for=home if printer.name != home else None,
            part=part,
            items=job.items,
            flagged_skus=tuple(sorted(flagged & wanted)),
            printer=printer.name,
            columns=printer.columns,
        )

    def _ticket(self, record: OrderRecord, facts: TicketFacts, printer: PrinterSettings) -> Ticket:
        return order_ticket(
            record.order,
            facts,
            columns=printer.columns,
            tz=self.settings.venue.tz,
            received_at=record.received_at,
            currency=self.settings.venue.currency,
            tickets=self.settings.tickets,
        )

    def _learn_confirmation(self, slot: PrinterSlot, delivery: Delivery) -> Delivery:
        """Remember whether the printer confirms jobs; in auto mode, one that never has falls back to its status.

        A printer that answered once and then stays silent while its status is fine is not trusted: the job
        is unconfirmed and goes to the next printer. One whose profile promised a confirmation it has never
        given (an unknown clone) is read by status from now on, and this job counts on its status.
        """
        if delivery.confirmed:
            slot.answers_confirmation = True
            return delivery
        stopped = delivery.after.status.blocks_printing or delivery.after.status is PrinterStatus.UNKNOWN
        if stopped or slot.setup.settings.confirm is not True or slot.answers_confirmation is True:
            return delivery
        slot.answers_confirmation = False
        log.warning(
            "printer_confirmation_unsupported",
            printer=slot.name,
            profile=slot.setup.settings.profile,
            detail="no answer to the job confirmation while its status is fine: counting on its status from now on;"
            ' set confirm = "status" for this printer to say so in the config',
        )
        return dataclasses.replace(delivery, confirmed=None)

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
            functools.partial(
                print_jobs.unconfirmed_print_job, job_id=job.id, printer=slot.name, detail=detail, now=now
            )
        )
        log.warning("print_unconfirmed", printer=slot.name, job_id=job.id, order_id=job.order_id, error=detail)
        return job

    async def _printed(self, job: PrintJob, printer: str, facts: TicketFacts, confirmation: str) -> None:
        now = self.clock.now()
        ticket = facts.to_json()
        await self.outbox.write(
            lambda c: print_jobs.finish_print_job(
                c, job.id, now=now, printer=printer, error=None, retry_at=None, ticket=ticket, confirmation=confirmation
            )
        )

    async def _all_failed(self, record: OrderRecord, job: PrintJob, failures: dict[str, tuple[str, str]]) -> None:
        now = self.clock.now()
        delay = full_jitter(job.attempts + 1, base=RETRY_BASE_SECONDS, cap=RETRY_MAX_SECONDS)
        retry_at = now + timedelta(seconds=max(1.0, delay))
        error = "; ".join(f"{name}: {detail}" for name, (_, detail) in failures.items())
        error = error or "no printer is configured for this ticket"
        await self.outbox.write(
            lambda c: print_jobs.finish_print_job(c, job.id, now=now, printer=None, error=error, retry_at=retry_at)
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
