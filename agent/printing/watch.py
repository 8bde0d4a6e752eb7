"""The printers' side of the print worker: each printer's slot, status probing, USB presence and printer alerts.

A prober reads every printer's status once a minute, so ops hears of a paper-out printer before the POS goes
down. A USB printer's device node is looked for every 3 s: it is reported unplugged only after 3 missed detections
in a row (agent/printing/presence.py), and the moment it is seen again the tickets waiting for it are tried at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

import structlog

from agent.dispatch import alerts
from agent.domain.clock import Clock
from agent.domain.config import Settings
from agent.outbox import print_jobs
from agent.outbox.store import Outbox
from agent.printing.presence import DETECT_INTERVAL_SECONDS, Change
from agent.printing.print_test import print_test
from agent.printing.slots import PrinterSlot
from agent.printing.tickets import PrinterSetup
from drivers.printers.base import PrinterStatus, StatusReading, Transport
from drivers.printers.errors import PrinterError
from drivers.printers.status import CONFIRM_KINDS
from drivers.printers.transports import build_transport

log = structlog.get_logger("venue_agent.printing")

PROBE_INTERVAL_SECONDS = 60.0

# Health (docs/mqtt.md) names printer states ok|paper_low|paper_out|offline|error; a cover left open is an error there.
HEALTH_STATES = {PrinterStatus.COVER_OPEN: "error"}


class PrinterWatch:
    """The configured printers: their last status, probing, USB presence, the printer alerts and the test page."""

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
        self._wake = asyncio.Event()

    @property
    def states(self) -> dict[str, str]:
        """Return each printer's last status (``ok``, ``paper_out``, …, ``unknown``)."""
        return {name: slot.state.status.value for name, slot in self.slots.items()}

    def health(self) -> list[dict[str, Any]]:
        """Return the printers as the health report gives them, with the detail of the last status read."""
        return [
            {
                "name": name,
                "state": HEALTH_STATES.get(slot.state.status, slot.state.status.value),
                "detail": slot.state.detail,
                # whether a ticket counts as printed on the printer's own word (confirmed)
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
