"""The print worker: takes durable print jobs from the outbox and gets each ticket onto a healthy printer.

A job is routed once (kitchen routing may split it into one ticket per printer, "1 of N"). Each printer
has its own queue and its own task: a ticket waits only behind tickets for the same printer, so a
station printer that hangs or runs out of paper never delays another station's tickets. A ticket that
fails on its printer moves to the next printer's queue (a printer known to be down is skipped while a
healthy one is left). Before the bytes leave, the job is marked ``printing``; a crash from there leaves
it in doubt, and it prints again marked as a possible duplicate. When every printer fails, the job
retries with backoff and one alert is raised until a ticket prints again.

The printers' status, probing and alerts are in agent/printing/watch.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
from datetime import timedelta

import structlog

from agent.dispatch import alerts
from agent.dispatch.backoff import full_jitter
from agent.domain.clock import Clock
from agent.domain.config import PrinterSettings, Settings
from agent.domain.routing import route_items
from agent.outbox import print_jobs, snoozes
from agent.outbox.records import OrderRecord, PrintJob
from agent.outbox.store import Outbox
from agent.printing.slots import NOT_READ, PrinterSlot, QueuedTicket, confirmation_of, send_budget, settle
from agent.printing.tickets import TicketFacts, late_minutes, order_ticket, ticket_skus
from agent.printing.watch import PrinterWatch
from drivers.printers.base import Delivery, Outcome, PrinterStatus, StatusReading, Transport, can_confirm
from drivers.printers.errors import PrinterError, PrinterUnavailable
from drivers.printers.layout import Ticket
from drivers.printers.status import ConfirmRequest

log = structlog.get_logger("venue_agent.printing")

RETRY_BASE_SECONDS = 5.0
RETRY_MAX_SECONDS = 60.0
# With no job printing or due, the worker sleeps until the next is due, this long at most (new jobs wake it).
IDLE_SECONDS = 30.0


class PrintWorker(PrinterWatch):
    """Prints pending jobs, one queue per printer, fails over between printers, retries and alerts when all fail."""

    def __init__(
        self,
        *,
        outbox: Outbox,
        settings: Settings,
        clock: Clock,
        transports: dict[str, Transport] | None = None,
    ) -> None:
        super().__init__(outbox=outbox, settings=settings, clock=clock, transports=transports)
        self.progress = 0.0
        self._all_down_alerted = False
        # Jobs handed to a printer's queue and not finished yet, by job id.
        self._in_flight: dict[int, asyncio.Future[bool]] = {}

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
            ticket = QueuedTicket(routed, record, names, flagged, copies, done)
            self._in_flight[routed.id] = done
            done.add_done_callback(functools.partial(self._landed, routed.id))
            futures.append(done)
            await self._dispatch(ticket)
        return futures

    def _landed(self, job_id: int, _: asyncio.Future[bool]) -> None:
        self._in_flight.pop(job_id, None)

    async def _dispatch(self, ticket: QueuedTicket) -> None:
        """Queue the ticket on the next printer to try, healthy ones first; when none is left it failed."""
        left = [name for name in ticket.names if name not in ticket.failures]
        if not left:
            await self._all_failed(ticket.record, ticket.job, ticket.failures)
            settle(ticket.done, False)
            return
        healthy = [name for name in left if self.slots[name].usable]
        slot = self.slots[(healthy or left)[0]]
        slot.queue.append(ticket)
        if slot.task is None or slot.task.done():
            slot.task = asyncio.create_task(self._drain(slot), name=f"venue-agent printer {slot.name}")

    async def _drain(self, slot: PrinterSlot) -> None:
        """Print this printer's queue in order; the task ends when the queue is empty."""
        ticket: QueuedTicket | None = None
        try:
            while slot.queue:
                ticket = slot.queue.popleft()
                try:
                    await self._attempt(slot, ticket)
                except Exception as exc:  # a failed write to the outbox: the job stays pending, the next round retries
                    log.error("print_attempt_failed", printer=slot.name, job_id=ticket.job.id, error=str(exc))
                    settle(ticket.done, False)
                ticket = None
        finally:
            # Cancelled (the agent stops): nobody waits for what is left; the jobs are still in the outbox.
            for left in [*([ticket] if ticket else []), *slot.queue]:
                if not left.done.done():
                    left.done.cancel()
            slot.queue.clear()

    async def _attempt(self, slot: PrinterSlot, ticket: QueuedTicket) -> None:
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
        settle(ticket.done, True)

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
