"""Printed means the paper came out on serial, USB and a USB device node too: the same confirmation as TCP 9100.

Serial runs on a pty whose master is a fake printer speaking the real bytes (tests/fake_printer.py's
``Responder``, shared with the TCP fake); USB on the pyusb test double; a device node is a pty behind a
udev-style symlink (as /dev/venue-printer/... points at /dev/usb/lpN). The wait itself is pure (``ConfirmWatch``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import usb.core

from drivers.printers.base import Outcome, PrinterStatus
from drivers.printers.file import FileTransport
from drivers.printers.serial_port import SerialTransport
from drivers.printers.status import QUERY_PRINTER, ConfirmRequest, ConfirmWatch, Timeouts
from drivers.printers.transports import build_transport
from drivers.printers.usb import UsbTransport
from tests.fake_printer import FakeSerialPrinter, FakeUsbDevice
from tests.test_print_confirmation import events
from tests.test_print_worker import rig_for, settings_for, texts

TICKET = b"\x1b@" + b"2 x Margherita, well done and cut in eight slices\n" * 40 + b"\x1dV\x01"
FAST = Timeouts(connect=1, status=0.3, write=2, confirm=3)
PID = ConfirmRequest("process_id", b"A7K2")
GS_R = ConfirmRequest("transmit_status")
REQUESTS = pytest.mark.parametrize("request_", [PID, GS_R], ids=["process_id", "transmit_status"])


# ---- the pure wait --------------------------------------------------------------------------------------------


def test_the_wait_asks_for_status_when_quiet_and_calls_a_silent_printer_silent() -> None:
    """Half a second without a word: one DLE EOT 1; unanswered for the status timeout: silent, not confirmed."""
    watch = ConfirmWatch(PID, Timeouts(status=1, confirm=20), started=0.0)
    assert watch.read_timeout(0.0) == 0.5
    assert watch.quiet(0.5) == QUERY_PRINTER
    assert watch.quiet(1.0) == b"" and watch.verdict is None
    watch.quiet(1.5)
    assert watch.verdict == (False, True)


def test_the_wait_ends_on_the_answer_a_stop_or_the_deadline() -> None:
    """The matching process ID confirms (another job's does not); an offline status byte or the deadline does not."""
    watch = ConfirmWatch(PID, Timeouts(confirm=20), started=0.0)
    watch.received(b"\x37\x22ZZZZ\x00\x12\x37\x22A7")
    assert watch.verdict is None
    watch.received(b"K2\x00")
    assert watch.verdict == (True, False)
    stopped = ConfirmWatch(PID, Timeouts(confirm=20), started=0.0)
    stopped.received(b"\x1a")
    assert stopped.verdict == (False, False)
    late = ConfirmWatch(GS_R, Timeouts(confirm=20), started=0.0)
    assert late.read_timeout(20.0) == 0.0 and late.verdict == (False, False)


# ---- serial on a pty ------------------------------------------------------------------------------------------


@pytest.fixture(name="serial_printer")
def _serial_printer() -> Iterator[FakeSerialPrinter]:
    with FakeSerialPrinter.running() as printer:
        yield printer


@REQUESTS
async def test_a_serial_printer_confirms_the_job(serial_printer: FakeSerialPrinter, request_: ConfirmRequest) -> None:
    """The pty printer prints the job, then answers GS ( H / GS r: confirmed; the request is not print data."""
    delivery = await SerialTransport("pass", serial_printer.device, 19200, FAST).send(TICKET, confirm=request_)
    assert delivery.confirmed is True and delivery.outcome is Outcome.PRINTED
    assert serial_printer.data == TICKET
    assert serial_printer.confirmations == ([b"A7K2"] if request_ is PID else [])


@REQUESTS
async def test_paper_running_out_mid_ticket_on_serial_is_caught_at_once(
    serial_printer: FakeSerialPrinter, request_: ConfirmRequest
) -> None:
    """The roll ends halfway: the answer is held, the status read meanwhile says paper out; no 3 s wait."""
    serial_printer.mode_after(len(TICKET) // 2, "paper_out")
    started = time.monotonic()
    delivery = await SerialTransport("pass", serial_printer.device, 19200, FAST).send(TICKET, confirm=request_)
    assert delivery.confirmed is False and delivery.after.status is PrinterStatus.PAPER_OUT
    assert delivery.outcome is Outcome.FAILED
    assert time.monotonic() - started < 1.5


async def test_a_serial_printer_that_falls_silent_is_unconfirmed(serial_printer: FakeSerialPrinter) -> None:
    """Switched off mid-job: no answer, no status; the job is unconfirmed after one status timeout, not 3 s."""
    serial_printer.mode_after(len(TICKET) // 2, "silent")
    started = time.monotonic()
    delivery = await SerialTransport("pass", serial_printer.device, 19200, FAST).send(TICKET, confirm=PID)
    assert delivery.confirmed is False and delivery.after.status is PrinterStatus.UNKNOWN
    assert delivery.outcome is Outcome.UNCONFIRMED
    assert time.monotonic() - started < 2.0


# ---- USB through pyusb -----------------------------------------------------------------------------------------


@pytest.fixture(name="device")
def _device(monkeypatch: pytest.MonkeyPatch) -> FakeUsbDevice:
    device = FakeUsbDevice(0x04B8, 0x0202)

    def find(**match: Any) -> FakeUsbDevice | None:
        return device if match == {"idVendor": 0x04B8, "idProduct": 0x0202} else None

    monkeypatch.setattr(usb.core, "find", find)
    return device


@REQUESTS
async def test_a_usb_printer_confirms_on_its_in_endpoint(device: FakeUsbDevice, request_: ConfirmRequest) -> None:
    """GS ( H / GS r go out on bulk OUT after the job; the answer comes back on bulk IN."""
    delivery = await UsbTransport("grill", 0x04B8, 0x0202, FAST).send(TICKET, confirm=request_)
    assert delivery.confirmed is True and delivery.printed
    assert bytes(device.data) == TICKET
    assert device.disposed == 1


async def test_paper_out_mid_ticket_on_usb_fails_the_job(device: FakeUsbDevice) -> None:
    """The roll ends halfway through a USB job: not confirmed, paper out, the device released."""
    device.mode_after(len(TICKET) // 2, "paper_out")
    delivery = await UsbTransport("grill", 0x04B8, 0x0202, FAST).send(TICKET, confirm=PID)
    assert delivery.confirmed is False and delivery.outcome is Outcome.FAILED
    assert delivery.after.status is PrinterStatus.PAPER_OUT and device.disposed == 1


async def test_a_usb_printer_without_an_in_endpoint_is_not_asked(device: FakeUsbDevice) -> None:
    """Nothing could answer: the request is not sent and the job counts once written, as before."""
    device.endpoints = device.endpoints[:1]
    delivery = await UsbTransport("grill", 0x04B8, 0x0202, FAST).send(TICKET, confirm=PID)
    assert bytes(device.data) == TICKET and device.confirmations == []
    assert (delivery.confirmed, delivery.confirmable, delivery.outcome) == (None, False, Outcome.PRINTED)


# ---- a device node (usblp) behind its stable name ---------------------------------------------------------------


def node_link(tmp_path: Path, printer: FakeSerialPrinter) -> Path:
    """Point ``venue-printer/04b8-0202-SN1`` at the pty, as udev points the stable name at /dev/usb/lpN."""
    link = tmp_path / "venue-printer" / "04b8-0202-SN1"
    link.parent.mkdir()
    link.symlink_to(printer.device)
    return link


async def test_a_device_node_set_to_confirm_reads_the_printer_back(
    tmp_path: Path, serial_printer: FakeSerialPrinter
) -> None:
    """confirm = true on a device node: status before and after, the process ID answered, paper out mid-job caught."""
    transport = FileTransport("pass", node_link(tmp_path, serial_printer), FAST, device=True, two_way=True)
    delivery = await transport.send(TICKET, confirm=PID)
    assert delivery.confirmed is True and delivery.printed
    assert delivery.before.status is PrinterStatus.OK and serial_printer.data == TICKET
    assert (await transport.status()).status is PrinterStatus.OK
    serial_printer.mode_after(len(TICKET) // 2, "paper_out")
    failed = await transport.send(TICKET, confirm=PID)
    assert failed.confirmed is False and failed.outcome is Outcome.FAILED
    assert (await transport.status()).status is PrinterStatus.PAPER_OUT


def test_only_a_device_node_whose_config_sets_confirm_is_read_back(tmp_path: Path) -> None:
    """A /dev path without confirm (as before) and any regular file stay write-only; confirm = true makes it two-way."""
    base = {"name": "pass", "connection": "file", "format": "escpos"}
    two_way = [
        build_transport(settings_for(tmp_path, [{**base, **extra}]).printers[0]).confirms_jobs  # type: ignore[attr-defined]
        for extra in (
            {"path": "/dev/venue-printer/04b8-0202-SN1", "confirm": True},
            {"path": "/dev/venue-printer/04b8-0202-SN1", "confirm": "process_id"},
            {"path": "/dev/venue-printer/04b8-0202-SN1"},
            {"path": "/dev/venue-printer/04b8-0202-SN1", "confirm": False},
            {"path": str(tmp_path / "tickets.bin"), "confirm": True},
        )
    ]
    assert two_way == [True, True, False, False, False]


# ---- the print worker with serial printers ----------------------------------------------------------------------


def ser(name: str, printer: FakeSerialPrinter, **extra: Any) -> dict[str, Any]:
    """A ``[[printers]]`` table for a fake serial printer."""
    return {"name": name, "connection": "serial", "device": printer.device, **extra}


@pytest.fixture(name="serial_pair")
def _serial_pair() -> Iterator[list[FakeSerialPrinter]]:
    with FakeSerialPrinter.running() as first, FakeSerialPrinter.running() as second:
        yield [first, second]


def quick(rig: Any) -> None:
    for slot in rig.worker.slots.values():
        slot.transport.timeouts = FAST


async def test_serial_paper_out_mid_ticket_reprints_on_the_next_printer_as_a_possible_duplicate(
    tmp_path: Path, serial_pair: list[FakeSerialPrinter]
) -> None:
    """The grill's roll ends halfway: the bar prints it MAY BE A DUPLICATE, BACKUP FOR GRILL; the record says so."""
    grill, bar = serial_pair
    settings = settings_for(tmp_path, [ser("grill", grill, profile="TM-T20II"), ser("bar", bar, profile="TM-T20II")])
    rig = await rig_for(tmp_path, settings)
    quick(rig)
    await rig.fallback("ord_1")
    grill.mode_after(200, "paper_out")
    assert await rig.run_due() == [True]
    assert grill.confirmations == [] and len(bar.confirmations) == 1
    assert {"MAY BE A DUPLICATE", "BACKUP FOR GRILL", "COPY 2"} <= set(texts(bar.data))
    job = (await rig.outbox.print_jobs("ord_1"))[0]
    assert (job.printer, job.in_doubt, job.confirmation) == ("bar", True, "process_id")
    assert [e["printer"] for e in events(settings.storage.path, "print_interrupted")] == ["grill"]
    health = {h["name"]: (h["state"], h["confirmation"], h["confirmed_by"]) for h in rig.worker.health()}
    assert health == {"grill": ("paper_out", "confirmed", "process_id"), "bar": ("ok", "confirmed", "process_id")}
    await rig.outbox.close()


async def test_a_serial_printer_that_never_answers_is_unconfirmed_and_the_backup_prints(
    tmp_path: Path, serial_pair: list[FakeSerialPrinter]
) -> None:
    """Silent to everything (no DLE EOT, no GS ( H): the job is unconfirmed there and the bar prints a REPRINT."""
    mute, bar = serial_pair
    mute.mode = "silent"
    rig = await rig_for(tmp_path, settings_for(tmp_path, [ser("pass", mute, profile="TM-T20II"), ser("bar", bar)]))
    quick(rig)
    await rig.fallback("ord_1")
    assert await rig.run_due() == [True]
    assert mute.data.startswith(b"\x1b@") and "MAY BE A DUPLICATE" in texts(bar.data)
    job = (await rig.outbox.print_jobs("ord_1"))[0].as_dict()
    assert (job["printer"], job["confirmation"], job["confirmed_by"]) == ("bar", "unconfirmed", "status")
    assert [e["printer"] for e in events(tmp_path / "outbox.db", "print_unconfirmed")] == ["pass"]
    await rig.outbox.close()


async def test_a_serial_clone_that_ignores_gs_h_falls_back_to_its_status(
    tmp_path: Path, serial_pair: list[FakeSerialPrinter]
) -> None:
    """Answers DLE EOT but not GS ( H: the ticket counts on its status, no duplicate; health says unconfirmed."""
    clone, bar = serial_pair
    clone.answers_confirmations = False
    rig = await rig_for(tmp_path, settings_for(tmp_path, [ser("pass", clone, profile="TM-T20II"), ser("bar", bar)]))
    quick(rig)
    await rig.fallback("ord_1")
    assert await rig.run_due() == [True]
    assert bar.data == b""
    job = (await rig.outbox.print_jobs("ord_1"))[0].as_dict()
    assert (job["printer"], job["confirmation"], job["confirmed_by"]) == ("pass", "unconfirmed", "status")
    assert rig.worker.health()[0]["confirmation"] == "unconfirmed"
    await rig.outbox.close()
