"""A ticket counts as printed only on positive evidence: the pure verdict, the network transport and the worker."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from agent.domain.clock import FakeClock
from agent.outbox.store import Outbox
from agent.printing.slots import send_budget
from agent.printing.worker import PrintWorker
from drivers.printers.base import UNKNOWN, Delivery, Outcome, PrinterStatus, StatusReading, judge
from drivers.printers.network import NetworkTransport
from drivers.printers.status import Timeouts
from tests.fake_printer import FakeNetworkPrinter
from tests.test_print_worker import Rig, net, rig_for, settings_for, texts

OK = StatusReading(PrinterStatus.OK, "ready")
LOW = StatusReading(PrinterStatus.PAPER_LOW, "paper roll is nearly out")
OUT = StatusReading(PrinterStatus.PAPER_OUT, "paper roll is out")
OFF = StatusReading(PrinterStatus.OFFLINE, "printer is offline")
COVER = StatusReading(PrinterStatus.COVER_OPEN, "cover is open")
REPRINT = "MAY BE A DUPLICATE"  # the second line of REPRINT - MAY BE A DUPLICATE at 48 columns


@pytest.mark.parametrize(
    ("delivery", "outcome"),
    [
        (Delivery(OK, OK), Outcome.PRINTED),
        (Delivery(UNKNOWN, LOW), Outcome.PRINTED),
        (Delivery(OK, UNKNOWN), Outcome.UNCONFIRMED),
        (Delivery(UNKNOWN, UNKNOWN), Outcome.UNCONFIRMED),
        (Delivery(UNKNOWN, UNKNOWN, confirmable=False), Outcome.PRINTED),
        (Delivery(OK, OK, confirmed=False), Outcome.UNCONFIRMED),
        (Delivery(OK, OK, confirmed=True), Outcome.PRINTED),
        (Delivery(OK, UNKNOWN, confirmed=True), Outcome.PRINTED),
        (Delivery(OK, OUT), Outcome.FAILED),
        (Delivery(OK, OFF, confirmable=False), Outcome.FAILED),
        (Delivery(OK, COVER, confirmed=True), Outcome.PRINTED),
        (Delivery(OK, OUT, confirmed=False), Outcome.FAILED),
    ],
)
def test_judge_needs_an_answer_after_the_job(delivery: Delivery, outcome: Outcome) -> None:
    """No answer after the bytes is unconfirmed unless the transport can never answer; an error is failed; the
    printer's own confirmation (sent once the paper is out) is printed whatever happens after it."""
    assert judge(delivery) is outcome
    assert delivery.outcome is outcome
    assert delivery.printed is (outcome is Outcome.PRINTED)


@pytest.mark.parametrize("mode", ["black_hole", "silent"])
async def test_a_ticket_that_fits_the_send_buffer_is_unconfirmed_not_printed(mode: str) -> None:
    """The write drains into the kernel buffer of a printer that never reads: only the after-status can tell."""
    async with FakeNetworkPrinter.running(mode) as printer:  # type: ignore[arg-type]
        transport = NetworkTransport("pass", printer.host, printer.port, Timeouts(connect=1, status=0.2, write=1))
        delivery = await transport.send(b"\x1b@hello kitchen\n" * 50)
    assert delivery.after.status is PrinterStatus.UNKNOWN
    assert delivery.outcome is Outcome.UNCONFIRMED


@pytest.fixture(name="pair")
async def _pair() -> AsyncIterator[list[FakeNetworkPrinter]]:
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(FakeNetworkPrinter.running("black_hole")),
            await stack.enter_async_context(FakeNetworkPrinter.running()),
        ]


def events(path: Path, kind: str) -> list[dict[str, object]]:
    """The details of every ``kind`` event in the outbox."""
    conn = sqlite3.connect(path)
    try:
        return [json.loads(r[0]) for r in conn.execute("SELECT detail FROM events WHERE type = ?", (kind,))]
    finally:
        conn.close()


async def test_unconfirmed_ticket_fails_over_marked_reprint_and_alerts(
    tmp_path: Path, pair: list[FakeNetworkPrinter]
) -> None:
    """A black-hole printer takes the bytes: the backup prints the ticket as a reprint, ops is told."""
    stuck, backup = pair
    settings = settings_for(tmp_path, [net("pass", stuck), net("bar", backup)])
    rig = await rig_for(tmp_path, settings)
    await rig.fallback("ord_1")
    assert await rig.run_due() == [True]
    assert len(backup.jobs) == 1 and REPRINT in texts(backup.jobs[0])
    assert {"BACKUP FOR PASS", "COPY 2"} <= set(texts(backup.jobs[0]))
    jobs = await rig.outbox.print_jobs("ord_1")
    assert [(j.state, j.printer, j.in_doubt) for j in jobs] == [("printed", "bar", True)]
    unconfirmed = events(settings.storage.path, "print_unconfirmed")
    assert [e["printer"] for e in unconfirmed] == ["pass"]
    assert "never confirmed" in str(unconfirmed[0]["error"])
    assert {h["name"]: h["state"] for h in rig.worker.health()} == {"pass": "offline", "bar": "ok"}
    alerts = await rig.alerts()
    assert [(a["alert"], a["severity"], a["printer"]) for a in alerts] == [("printer_offline", "warning", "pass")]
    assert "bar" in alerts[0]["action"]
    await rig.outbox.close()


async def test_a_printer_configured_not_to_confirm_counts_once_written(tmp_path: Path) -> None:
    """``confirm = false`` (a printer that never answers DLE EOT): written is printed, no failover, no alert."""
    async with FakeNetworkPrinter.running("silent") as quiet, FakeNetworkPrinter.running() as backup:
        printers = [net("pass", quiet, confirm=False), net("bar", backup)]
        rig = await rig_for(tmp_path, settings_for(tmp_path, printers))
        await rig.fallback("ord_1")
        assert await rig.run_due() == [True]
        assert len(quiet.jobs) == 1 and backup.jobs == []
        jobs = await rig.outbox.print_jobs("ord_1")
        assert [(j.state, j.printer, j.in_doubt) for j in jobs] == [("printed", "pass", False)]
        assert await rig.alerts() == []
        await rig.outbox.close()


class HangingTransport:
    """A transport whose job never returns (a driver stuck below its own timeouts)."""

    name = "pass"
    timeouts = Timeouts(connect=0.1, status=0.1, write=0.1)

    async def send(self, data: bytes) -> Delivery:
        """Never finish."""
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def status(self) -> StatusReading:
        """Never answer."""
        return UNKNOWN


def test_send_budget_covers_every_step() -> None:
    """The safety net is the sum of the transport's own timeouts plus a margin; unknown transports get 60 s."""
    assert send_budget(Timeouts(connect=3, status=1, write=10)) == 6 + 10 + 8 + 1
    assert send_budget(None) == 60.0


async def test_a_job_that_never_returns_cannot_hang_the_worker(tmp_path: Path) -> None:
    """The worker gives up on a stuck job after its budget and prints the ticket on the backup, as a reprint."""
    async with FakeNetworkPrinter.running() as backup:
        settings = settings_for(tmp_path, [net("pass", backup), net("bar", backup)])
        clock = FakeClock()
        outbox = Outbox(settings.storage.path, clock=clock, min_free_mb=0)
        await outbox.open()
        worker = PrintWorker(outbox=outbox, settings=settings, clock=clock, transports={"pass": HangingTransport()})
        await worker.prepare()
        rig = Rig(outbox, worker, clock)
        await rig.fallback("ord_1")
        started = time.monotonic()
        assert await asyncio.wait_for(rig.run_due(), 10) == [True]
        assert time.monotonic() - started < send_budget(HangingTransport.timeouts) + 3
        assert len(backup.jobs) == 1 and REPRINT in texts(backup.jobs[0])
        assert {h["name"]: h["state"] for h in worker.health()} == {"pass": "offline", "bar": "ok"}
        await outbox.close()


async def test_a_chattering_printer_cannot_hold_the_status_read() -> None:
    """A peer that sends bytes without pause: the stray-byte drain is bounded, the read ends with a status."""

    async def chatter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                writer.write(b"\x41" * 64)
                await writer.drain()
                await asyncio.sleep(0.002)
        except OSError:
            pass

    server = await asyncio.start_server(chatter, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        transport = NetworkTransport("pass", "127.0.0.1", port, Timeouts(connect=1, status=0.2, write=1))
        reading = await asyncio.wait_for(transport.status(), 5)
    finally:
        server.close()
    assert reading.status is PrinterStatus.UNKNOWN
