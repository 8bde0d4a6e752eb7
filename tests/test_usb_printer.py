"""The ``usb`` transport against a fake pyusb device substituted for ``usb.core.find``."""

from __future__ import annotations

import errno
import threading
from typing import Any

import pytest
import usb.core

from drivers.printers.base import Outcome, PrinterStatus
from drivers.printers.errors import PrinterNotReady, PrinterUnavailable
from drivers.printers.status import STATUS_QUERIES, Timeouts
from drivers.printers.usb import UsbTransport
from tests.fake_printer import FakeUsbDevice

FAST = Timeouts(connect=0.5, status=0.1, write=1.0)
TICKET = b"\x1b@\x1b!\x30K7Q2\n2 x Margherita\n\x1bd\x06\x1dV\x00"
VENDOR, PRODUCT = 0x04B8, 0x0202


@pytest.fixture(name="device")
def _device(monkeypatch: pytest.MonkeyPatch) -> FakeUsbDevice:
    """Return a fake printer that ``usb.core.find`` yields for 04b8:0202 (and only for it)."""
    device = FakeUsbDevice(VENDOR, PRODUCT)
    device.threads = []  # type: ignore[attr-defined]

    def find(**match: Any) -> FakeUsbDevice | None:
        device.threads.append(threading.get_ident())  # type: ignore[attr-defined]
        if match == {"idVendor": device.idVendor, "idProduct": device.idProduct}:
            return device
        return None

    monkeypatch.setattr(usb.core, "find", find)
    return device


def transport() -> UsbTransport:
    """Return a transport named ``grill`` for 04b8:0202."""
    return UsbTransport("grill", VENDOR, PRODUCT, FAST)


async def test_ok_job_claims_writes_and_releases(device: FakeUsbDevice) -> None:
    """usblp is detached, the device configured, the bytes written between two status reads, the handle released."""
    delivery = await transport().send(TICKET)
    assert delivery.printed
    assert delivery.before.status is PrinterStatus.OK
    assert delivery.after.raw == b"\x12\x12\x12"
    assert bytes(device.data) == TICKET
    assert device.queries == 2 * len(STATUS_QUERIES)
    assert not device.kernel_driver_active
    assert device.configured
    assert device.disposed == 1
    assert threading.get_ident() not in device.threads  # type: ignore[attr-defined]


async def test_paper_out_sends_nothing(device: FakeUsbDevice) -> None:
    """Paper out before the job raises PrinterNotReady; nothing is written and the device is released."""
    device.mode = "paper_out"
    with pytest.raises(PrinterNotReady) as caught:
        await transport().send(TICKET)
    assert caught.value.status is PrinterStatus.PAPER_OUT
    assert device.data == b""
    assert device.disposed == 1


async def test_cover_open_status(device: FakeUsbDevice) -> None:
    """status() reads DLE EOT over the endpoints without printing."""
    device.mode = "cover_open"
    reading = await transport().status()
    assert reading.status is PrinterStatus.COVER_OPEN
    assert device.data == b""


async def test_silent_printer_gets_the_job_but_it_is_unconfirmed(device: FakeUsbDevice) -> None:
    """No reply on the IN endpoint within the timeout is unknown; the job still goes out."""
    device.mode = "silent"
    delivery = await transport().send(TICKET)
    assert delivery.before.status is PrinterStatus.UNKNOWN
    assert delivery.after.status is PrinterStatus.UNKNOWN
    assert delivery.outcome is Outcome.UNCONFIRMED and not delivery.printed
    assert device.queries == 2


async def test_not_found(device: FakeUsbDevice) -> None:
    """A printer that is not on the bus says so, with the hint a technician needs."""
    other = UsbTransport("grill", VENDOR, 0x0E15, FAST)
    with pytest.raises(PrinterUnavailable) as caught:
        await other.send(TICKET)
    assert caught.value.reason == "USB printer 04b8:0e15 not found (is it plugged in and is the udev rule installed?)"
    assert caught.value.status is PrinterStatus.OFFLINE
    reading = await other.status()
    assert reading.status is PrinterStatus.OFFLINE
    assert reading.detail == caught.value.reason


async def test_no_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without libusb the transport is unavailable, not crashing."""

    def find(**match: Any) -> None:
        raise usb.core.NoBackendError("No backend available")

    monkeypatch.setattr(usb.core, "find", find)
    with pytest.raises(PrinterUnavailable) as caught:
        await transport().send(TICKET)
    assert caught.value.reason == "no USB backend available (is libusb-1.0 installed?)"


async def test_permission_denied(device: FakeUsbDevice, monkeypatch: pytest.MonkeyPatch) -> None:
    """Access denied when opening the device points at the udev rule, and the device is released."""

    def denied(interface: int) -> bool:
        raise usb.core.USBError("Access denied (insufficient permissions)", -3, errno.EACCES)

    monkeypatch.setattr(device, "is_kernel_driver_active", denied)
    with pytest.raises(PrinterUnavailable) as caught:
        await transport().send(TICKET)
    assert caught.value.reason == "no permission to use USB printer 04b8:0202 (is the udev rule installed?)"
    assert device.disposed == 1


async def test_write_error(device: FakeUsbDevice) -> None:
    """An I/O error on the OUT endpoint is unavailable, naming the device and the error."""
    device.write_error = usb.core.USBError("Input/Output Error", -1, errno.EIO)
    with pytest.raises(PrinterUnavailable) as caught:
        await transport().send(TICKET)
    assert caught.value.reason == (
        f"USB printer 04b8:0202 failed while sending (0 of {len(TICKET)} bytes taken): Input/Output Error"
    )
    assert device.disposed == 1


async def test_write_timeout(device: FakeUsbDevice) -> None:
    """A printer that does not take the bytes in time is unavailable."""
    device.write_error = usb.core.USBTimeoutError("Operation timed out", -7, errno.ETIMEDOUT)
    with pytest.raises(PrinterUnavailable) as caught:
        await transport().send(TICKET)
    assert caught.value.reason == f"USB printer 04b8:0202 took only 0 of {len(TICKET)} bytes within 1.0 s"


async def test_unplugged_during_status(device: FakeUsbDevice, monkeypatch: pytest.MonkeyPatch) -> None:
    """A device that vanishes mid-dialogue is unavailable with a clear reason."""

    def gone(endpoint: int, size: int, timeout: int | None = None) -> bytes:
        raise usb.core.USBError("No such device (it may have been disconnected)", -4, errno.ENODEV)

    monkeypatch.setattr(device, "read", gone)
    with pytest.raises(PrinterUnavailable) as caught:
        await transport().send(TICKET)
    assert caught.value.reason == "USB printer 04b8:0202 was unplugged while reading status before the job"
