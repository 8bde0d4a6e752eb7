"""The ``network`` transport against a fake TCP 9100 printer on loopback."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest

from drivers.printers.base import Outcome, PrinterStatus
from drivers.printers.errors import PrinterNotReady, PrinterUnavailable
from drivers.printers.network import NetworkTransport
from drivers.printers.status import STATUS_QUERIES, Timeouts
from tests.fake_printer import FakeNetworkPrinter, Mode

FAST = Timeouts(connect=0.5, status=0.1, write=0.5)
TICKET = b"\x1b@\x1b!\x30K7Q2\n2 x Margherita\n\x1bd\x06\x1dV\x00"


@pytest.fixture(name="printer")
async def _printer() -> AsyncIterator[FakeNetworkPrinter]:
    """Return a fake printer listening on loopback."""
    async with FakeNetworkPrinter.running() as printer:
        yield printer


def transport_for(printer: FakeNetworkPrinter, timeouts: Timeouts = FAST) -> NetworkTransport:
    """Return a transport named ``pass`` aimed at the fake printer."""
    return NetworkTransport("pass", printer.host, printer.port, timeouts)


async def test_ok_job_is_recorded_exactly_between_status_reads(printer: FakeNetworkPrinter) -> None:
    """The printer gets the bytes as sent, status is asked before and after, and the connection is closed."""
    delivery = await transport_for(printer).send(TICKET)
    assert delivery.printed
    assert delivery.before.status is PrinterStatus.OK
    assert delivery.after.status is PrinterStatus.OK
    assert delivery.after.raw == b"\x12\x12\x12"
    assert printer.jobs == [TICKET]
    assert printer.queries == 2 * len(STATUS_QUERIES)
    assert printer.connections == 1
    await printer.idle(timeout=0.5)


async def test_paper_low_still_prints(printer: FakeNetworkPrinter) -> None:
    """Paper nearly out is reported but does not stop the job."""
    printer.mode = "paper_low"
    delivery = await transport_for(printer).send(TICKET)
    assert delivery.printed
    assert delivery.before.status is PrinterStatus.PAPER_LOW
    assert printer.jobs == [TICKET]


@pytest.mark.parametrize(
    ("mode", "status", "reason"),
    [
        ("paper_out", PrinterStatus.PAPER_OUT, "paper roll is out"),
        ("cover_open", PrinterStatus.COVER_OPEN, "cover is open"),
        ("offline", PrinterStatus.OFFLINE, "printer is offline"),
    ],
)
async def test_blocking_status_before_sends_nothing(
    printer: FakeNetworkPrinter, mode: Mode, status: PrinterStatus, reason: str
) -> None:
    """Paper out, cover open or offline before the job raise PrinterNotReady and no print data is sent."""
    printer.mode = mode
    with pytest.raises(PrinterNotReady) as caught:
        await transport_for(printer).send(TICKET)
    assert caught.value.status is status
    assert caught.value.reason == reason
    assert caught.value.printer == "pass"
    assert printer.jobs == []
    await printer.idle(timeout=0.5)


async def test_silent_printer_gets_the_job_but_it_is_unconfirmed(printer: FakeNetworkPrinter) -> None:
    """A printer that never answers DLE EOT still gets the job, unconfirmed; one status timeout per read, not three."""
    printer.mode = "silent"
    started = time.monotonic()
    delivery = await transport_for(printer).send(TICKET)
    elapsed = time.monotonic() - started
    assert delivery.before.status is PrinterStatus.UNKNOWN
    assert delivery.after.status is PrinterStatus.UNKNOWN
    assert delivery.outcome is Outcome.UNCONFIRMED and not delivery.printed
    assert printer.queries == 2
    assert elapsed < 5 * FAST.status
    await printer.idle(timeout=0.5)
    assert printer.jobs == [TICKET]


async def test_paper_running_out_during_the_job_is_not_printed(printer: FakeNetworkPrinter) -> None:
    """The status read after the job decides: paper out then means the ticket did not come out."""
    printer.mode_after(len(TICKET) // 2, "paper_out")
    delivery = await transport_for(printer).send(TICKET)
    assert delivery.before.status is PrinterStatus.OK
    assert delivery.after.status is PrinterStatus.PAPER_OUT
    assert not delivery.printed
    assert printer.jobs == [TICKET]


async def test_garbled_reply_is_unknown_with_the_byte(printer: FakeNetworkPrinter) -> None:
    """A reply that is not a status byte is reported, not guessed at."""
    printer.mode = "garbage"
    reading = await transport_for(printer).status()
    assert reading.status is PrinterStatus.UNKNOWN
    assert reading.detail == "status reply not understood: 0x41"
    assert reading.raw == b"A"
    assert printer.queries == 1


async def test_status_reads_and_closes(printer: FakeNetworkPrinter) -> None:
    """status() connects, asks, and closes without sending print data."""
    printer.mode = "cover_open"
    reading = await transport_for(printer).status()
    assert reading.status is PrinterStatus.COVER_OPEN
    assert printer.jobs == []
    await printer.idle(timeout=0.5)


async def test_refused_connection_then_accepted_again_on_the_same_port(printer: FakeNetworkPrinter) -> None:
    """A refused connection is PrinterUnavailable (offline); the printer comes back on the same port."""
    transport = transport_for(printer)
    printer.refuse()
    with pytest.raises(PrinterUnavailable) as caught:
        await transport.send(TICKET)
    assert caught.value.reason == f"connection refused by 127.0.0.1:{printer.port}"
    assert caught.value.status is PrinterStatus.OFFLINE
    assert not isinstance(caught.value, PrinterNotReady)
    reading = await transport.status()
    assert reading.status is PrinterStatus.OFFLINE
    assert reading.detail == caught.value.reason

    await printer.accept()
    assert (await transport.send(TICKET)).printed
    assert printer.jobs == [TICKET]


async def test_connection_closed_after_the_printer_took_part_of_the_job(printer: FakeNetworkPrinter) -> None:
    """A printer that drops the connection part way through a small job fails it at the status read after."""
    data = bytes(range(32, 127)) * 60
    printer.close_after(1234)
    with pytest.raises(PrinterUnavailable) as caught:
        await transport_for(printer).send(data)
    # The kernel took all 5700 bytes before the printer hung up; only the missing confirmation shows the loss.
    assert caught.value.reason == (
        f"connection closed by 127.0.0.1:{printer.port} after all {len(data)} bytes were sent,"
        " before the printer confirmed the job"
    )
    assert caught.value.status is PrinterStatus.OFFLINE
    assert printer.jobs == [data[:1234]]


async def test_connection_closed_while_sending(printer: FakeNetworkPrinter) -> None:
    """A job larger than the socket buffers fails while sending, saying how much the printer took."""
    data = b"y" * (8 * 1024 * 1024)
    printer.close_after(1234)
    with pytest.raises(PrinterUnavailable) as caught:
        await transport_for(printer).send(data)
    assert caught.value.reason.startswith("connection closed while sending (")
    assert caught.value.reason.endswith(f" of {len(data)} bytes taken)")
    assert caught.value.status is PrinterStatus.OFFLINE
    assert printer.jobs == [data[:1234]]


async def test_held_connection_times_out_while_the_loop_keeps_running(printer: FakeNetworkPrinter) -> None:
    """A printer that accepts but never reads fails the job after the write timeout; other tasks keep running."""
    printer.hold()
    timeouts = Timeouts(connect=0.5, status=0.05, write=0.3)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    data = b"x" * (8 * 1024 * 1024)
    started = time.monotonic()
    try:
        with pytest.raises(PrinterUnavailable) as caught:
            await transport_for(printer, timeouts).send(data)
    finally:
        ticker.cancel()
    elapsed = time.monotonic() - started
    assert f"of {len(data)} bytes within 0.3 s" in caught.value.reason
    assert 0.3 <= elapsed < 1.5
    assert ticks >= 15


async def test_connect_timeout() -> None:
    """A printer whose network stack does not answer the handshake fails after the connect timeout."""
    # A listener that never accepts, with its backlog full: further handshakes go unanswered.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            try:
                filler.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fillers.append(filler)
        await asyncio.sleep(0.05)
        transport = NetworkTransport("pass", "127.0.0.1", port, Timeouts(connect=0.2, status=0.1, write=0.5))
        started = time.monotonic()
        with pytest.raises(PrinterUnavailable) as caught:
            await transport.send(TICKET)
        assert caught.value.reason == f"no answer within 0.2 s connecting to 127.0.0.1:{port}"
        assert time.monotonic() - started < 1.0
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_jobs_for_one_printer_never_overlap(printer: FakeNetworkPrinter) -> None:
    """Concurrent sends through one transport use one connection at a time."""
    transport = transport_for(printer)
    seen: list[int] = []

    async def watch() -> None:
        while True:
            seen.append(printer.open_connections)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.gather(*(transport.send(TICKET + bytes([n])) for n in range(5)))
    finally:
        watcher.cancel()
    assert max(seen) == 1
    assert sorted(printer.jobs) == sorted(TICKET + bytes([n]) for n in range(5))
