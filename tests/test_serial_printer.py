"""The ``serial`` transport over a real pty pair, with a fake printer on the master side."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.printers.base import Outcome, PrinterStatus
from drivers.printers.errors import PrinterNotReady, PrinterUnavailable
from drivers.printers.serial_port import SerialTransport
from drivers.printers.status import STATUS_QUERIES, Timeouts
from tests.fake_printer import FakeSerialPrinter

FAST = Timeouts(connect=0.5, status=0.1, write=1.0)
TICKET = b"\x1b@\x1b!\x30K7Q2\n2 x Margherita\r\n\x1bd\x06\x1dV\x00"


@pytest.fixture(name="printer")
def _printer() -> Iterator[FakeSerialPrinter]:
    """Return a fake serial printer on a pty."""
    with FakeSerialPrinter.running() as printer:
        yield printer


def transport_for(printer: FakeSerialPrinter) -> SerialTransport:
    """Return a transport named ``bar`` on the pty's slave side."""
    return SerialTransport("bar", printer.device, 19200, FAST)


async def test_ok_job_arrives_byte_for_byte(printer: FakeSerialPrinter) -> None:
    """The printer gets the exact bytes (no newline translation) between two status reads."""
    delivery = await transport_for(printer).send(TICKET)
    assert delivery.printed
    assert delivery.before.status is PrinterStatus.OK
    assert delivery.after.status is PrinterStatus.OK
    assert printer.data == TICKET
    assert printer.queries == 2 * len(STATUS_QUERIES)


async def test_paper_out_sends_nothing(printer: FakeSerialPrinter) -> None:
    """Paper out before the job raises PrinterNotReady and no print data is written."""
    printer.mode = "paper_out"
    with pytest.raises(PrinterNotReady) as caught:
        await transport_for(printer).send(TICKET)
    assert caught.value.status is PrinterStatus.PAPER_OUT
    assert caught.value.reason == "paper roll is out"
    assert printer.data == b""
    assert (await transport_for(printer).status()).status is PrinterStatus.PAPER_OUT


async def test_silent_printer_gets_the_job_but_it_is_unconfirmed(printer: FakeSerialPrinter) -> None:
    """A printer that never answers still gets the job; the status is unknown, not ok."""
    printer.mode = "silent"
    delivery = await transport_for(printer).send(TICKET)
    assert delivery.before.status is PrinterStatus.UNKNOWN
    assert delivery.after.status is PrinterStatus.UNKNOWN
    assert delivery.outcome is Outcome.UNCONFIRMED and not delivery.printed
    assert printer.queries == 2
    assert printer.data == TICKET


async def test_runs_off_the_event_loop_and_keeps_jobs_apart(printer: FakeSerialPrinter) -> None:
    """Port I/O happens in worker threads; concurrent jobs arrive whole, one after the other."""
    printer.mode = "silent"
    loop_thread = threading.get_ident()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    transport = transport_for(printer)
    threads: list[int] = []
    original = transport._job

    def spy(data: bytes, confirm: object) -> object:
        threads.append(threading.get_ident())
        return original(data, confirm)  # type: ignore[arg-type]

    transport._job = spy  # type: ignore[method-assign,assignment]
    ticker = asyncio.create_task(tick())
    try:
        await asyncio.gather(transport.send(b"A" * 300), transport.send(b"B" * 300))
    finally:
        ticker.cancel()
    assert loop_thread not in threads
    assert printer.data in (b"A" * 300 + b"B" * 300, b"B" * 300 + b"A" * 300)
    # Two silent status reads per job at 0.1 s each: the loop ticked throughout.
    assert ticks >= 20


async def test_missing_device_is_unavailable(tmp_path: Path) -> None:
    """A device path that does not exist names the device; status reads offline."""
    device = str(tmp_path / "ttyUSB9")
    transport = SerialTransport("bar", device, 19200, FAST)
    with pytest.raises(PrinterUnavailable) as caught:
        await transport.send(TICKET)
    assert caught.value.reason == f"serial device {device} not found (is it plugged in?)"
    assert caught.value.status is PrinterStatus.OFFLINE
    reading = await transport.status()
    assert reading.status is PrinterStatus.OFFLINE
    assert device in reading.detail


async def test_a_device_that_is_not_a_tty_is_unavailable(tmp_path: Path) -> None:
    """A regular file configured as the device cannot be opened as a serial port."""
    device = tmp_path / "not-a-tty"
    device.write_bytes(b"")
    with pytest.raises(PrinterUnavailable) as caught:
        await SerialTransport("bar", str(device), 19200, FAST).send(TICKET)
    assert str(device) in caught.value.reason


async def test_printer_that_does_not_take_data_times_out(printer: FakeSerialPrinter) -> None:
    """When the port stops taking bytes the job fails after the write timeout and the port is closed promptly."""
    printer.hold()
    timeouts = Timeouts(connect=0.5, status=0.05, write=0.3)
    started = time.monotonic()
    with pytest.raises(PrinterUnavailable) as caught:
        await SerialTransport("bar", printer.device, 19200, timeouts).send(b"z" * (1024 * 1024))
    assert caught.value.reason == f"serial device {printer.device} did not take the job within 0.3 s"
    assert time.monotonic() - started < 1.5
