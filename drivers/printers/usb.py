"""The ``usb`` printer transport: a USB printer-class device through pyusb, in a worker thread.

The device is found and claimed per job and released before returning. Every transfer carries an
explicit timeout in milliseconds (pyusb treats 0 as "wait forever", so 0 is never passed). Status uses
the same DLE EOT dialogue as the other transports: queries on the bulk OUT endpoint, replies on bulk IN.
"""

from __future__ import annotations

import asyncio
import errno
import threading
import time
from typing import Any

import structlog
import usb.core
import usb.util

from drivers.printers.base import Delivery, PrinterStatus, StatusReading, job_sent
from drivers.printers.errors import PrinterNotReady, PrinterUnavailable
from drivers.printers.status import (
    SILENT_WHILE_PRINTING,
    ConfirmRequest,
    Timeouts,
    await_confirmation,
    read_status,
)

log = structlog.get_logger("venue_agent.printers")

_INTERFACE = 0
_BULK = 0x02
_DIRECTION_IN = 0x80
# Short reads that drop bytes the printer queued unasked; a few packets at most.
_DISCARD_MS = 10
_DISCARD_PACKETS = 8


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _is_timeout(exc: usb.core.USBError) -> bool:
    return isinstance(exc, usb.core.USBTimeoutError) or getattr(exc, "errno", None) == errno.ETIMEDOUT


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


class _Endpoints:
    """The bulk endpoints of the printer interface."""

    def __init__(self, out: int, in_: int | None, packet: int) -> None:
        self.out = out
        self.in_ = in_
        self.packet = packet


class _UsbPort:
    """The status dialogue over a claimed device."""

    def __init__(self, device: Any, endpoints: _Endpoints, in_: int, timeout_ms: int) -> None:
        self._device = device
        self._endpoints = endpoints
        self._in = in_
        self._timeout_ms = timeout_ms

    def discard_input(self) -> None:
        """Drop bytes already queued on the IN endpoint."""
        for _ in range(_DISCARD_PACKETS):
            try:
                if not self._device.read(self._in, self._endpoints.packet, timeout=_DISCARD_MS):
                    return
            except usb.core.USBError as exc:
                if _is_timeout(exc):
                    return
                raise

    def query(self, request: bytes) -> int | None:
        """Send one DLE EOT query on OUT and return the reply byte read on IN, ``None`` after the timeout."""
        self._device.write(self._endpoints.out, request, timeout=self._timeout_ms)
        try:
            reply = self._device.read(self._in, self._endpoints.packet, timeout=self._timeout_ms)
        except usb.core.USBError as exc:
            if _is_timeout(exc):
                return None
            raise
        # One reply per query; should a packet carry more, the last byte is the newest answer.
        return int(reply[-1]) if len(reply) else None


class _UsbStream:
    """What the printer sends while a job prints: bulk IN reads, queries on bulk OUT."""

    def __init__(self, device: Any, endpoints: _Endpoints, in_: int, timeout_ms: int) -> None:
        self._device = device
        self._endpoints = endpoints
        self._in = in_
        self._timeout_ms = timeout_ms

    def read(self, timeout: float) -> bytes:
        """Return one IN packet that came within ``timeout`` (empty if none)."""
        try:
            return bytes(self._device.read(self._in, self._endpoints.packet, timeout=_ms(timeout)))
        except usb.core.USBError as exc:
            if _is_timeout(exc):
                return b""
            raise

    def write(self, data: bytes) -> None:
        """Send a status query on OUT."""
        self._device.write(self._endpoints.out, data, timeout=self._timeout_ms)


class UsbTransport:
    """A printer on USB (vendor:product): status before and after each job, claimed and released per call."""

    # Can wait for a printer's own word that a job came out, where the device has an IN endpoint.
    confirms_jobs = True

    def __init__(self, name: str, vendor: int, product: int, timeouts: Timeouts | None = None) -> None:
        self.name = name
        self.vendor = vendor
        self.product = product
        self.timeouts = timeouts or Timeouts()
        # Queues this printer's calls without tying up worker threads.
        self._lock = asyncio.Lock()
        # Held by the worker thread itself: a caller that gave up waiting must not let the next job interleave.
        self._device_lock = threading.Lock()

    @property
    def label(self) -> str:
        """Return ``vendor:product`` in the lsusb form, e.g. ``04b8:0202``."""
        return f"{self.vendor:04x}:{self.product:04x}"

    async def send(self, data: bytes, confirm: ConfirmRequest | None = None) -> Delivery:
        """Read status, send ``data`` unless the printer cannot print, wait for ``confirm``, read status, release.

        ``confirm`` is awaited as on the network (``ConfirmWatch``) when the device has an IN endpoint; without
        one nothing can answer, so it is not sent and the delivery is neither confirmed nor confirmable.
        """
        async with self._lock:
            return await asyncio.to_thread(self._job, data, confirm)

    async def status(self) -> StatusReading:
        """Claim the device, read the status and release it; ``offline`` with the reason when it cannot be used."""
        async with self._lock:
            return await asyncio.to_thread(self._status)

    def _unavailable(self, reason: str) -> PrinterUnavailable:
        log.debug("printer_unavailable", printer=self.name, reason=reason)
        return PrinterUnavailable(self.name, reason, status=PrinterStatus.OFFLINE)

    def _job(self, data: bytes, confirm: ConfirmRequest | None) -> Delivery:
        with self._device_lock:
            device, endpoints = self._open()
            confirmed: bool | None = None
            try:
                before = self._read_status(device, endpoints, "before the job")
                if before.status.blocks_printing:
                    log.debug("printer_not_ready", printer=self.name, status=before.status.value)
                    raise PrinterNotReady(self.name, before.detail, status=before.status)
                if endpoints.in_ is None:
                    confirm = None
                self._write(device, endpoints, data + (confirm.command if confirm else b""))
                silent = False
                if confirm is not None and endpoints.in_ is not None:
                    stream = _UsbStream(device, endpoints, endpoints.in_, _ms(self.timeouts.status))
                    try:
                        confirmed, silent = await_confirmation(stream, confirm, self.timeouts)
                    except usb.core.USBError as exc:
                        raise self._failure(exc, "printing the job") from exc
                after = SILENT_WHILE_PRINTING if silent else self._read_status(device, endpoints, "after the job")
            finally:
                self._release(device)
        return job_sent(self.name, len(data), before, after, confirmed=confirmed, confirmable=endpoints.in_ is not None)

    def _status(self) -> StatusReading:
        with self._device_lock:
            try:
                device, endpoints = self._open()
            except PrinterUnavailable as exc:
                return StatusReading(PrinterStatus.OFFLINE, exc.reason)
            try:
                return self._read_status(device, endpoints, "")
            except PrinterUnavailable as exc:
                return StatusReading(PrinterStatus.OFFLINE, exc.reason)
            finally:
                self._release(device)

    def _failure(self, exc: usb.core.USBError, doing: str) -> PrinterUnavailable:
        code = getattr(exc, "errno", None)
        if code == errno.EACCES:
            return self._unavailable(f"no permission to use USB printer {self.label} (is the udev rule installed?)")
        if code in (errno.ENODEV, errno.ENOENT):
            return self._unavailable(f"USB printer {self.label} was unplugged while {doing}")
        if code == errno.EBUSY:
            return self._unavailable(f"USB printer {self.label} is in use by another program")
        return self._unavailable(f"USB printer {self.label} failed while {doing}: {_reason(exc)}")

    def _open(self) -> tuple[Any, _Endpoints]:
        try:
            device = usb.core.find(idVendor=self.vendor, idProduct=self.product)
        except usb.core.NoBackendError as exc:
            raise self._unavailable("no USB backend available (is libusb-1.0 installed?)") from exc
        except usb.core.USBError as exc:
            raise self._failure(exc, "listing USB devices") from exc
        if device is None:
            raise self._unavailable(
                f"USB printer {self.label} not found (is it plugged in and is the udev rule installed?)"
            )
        try:
            return device, self._claim(device)
        except usb.core.USBError as exc:
            self._release(device)
            raise self._failure(exc, "opening it") from exc
        except PrinterUnavailable:
            self._release(device)
            raise

    def _claim(self, device: Any) -> _Endpoints:
        try:
            if device.is_kernel_driver_active(_INTERFACE):
                # Linux binds usblp to printer-class devices; it must let go before pyusb can claim the interface.
                device.detach_kernel_driver(_INTERFACE)
        except NotImplementedError:
            pass
        try:
            configuration = device.get_active_configuration()
        except usb.core.USBError:
            # Not configured yet; setting the configuration on a configured device would reset it.
            device.set_configuration()
            configuration = device.get_active_configuration()
        out: int | None = None
        in_: int | None = None
        packet = 64
        for endpoint in configuration[(_INTERFACE, 0)]:
            if endpoint.bmAttributes & 0x03 != _BULK:
                continue
            if endpoint.bEndpointAddress & _DIRECTION_IN:
                if in_ is None:
                    in_ = int(endpoint.bEndpointAddress)
                    packet = int(getattr(endpoint, "wMaxPacketSize", 64) or 64)
            elif out is None:
                out = int(endpoint.bEndpointAddress)
        if out is None:
            raise self._unavailable(f"USB device {self.label} has no bulk OUT endpoint: is it a printer?")
        return _Endpoints(out, in_, packet)

    def _read_status(self, device: Any, endpoints: _Endpoints, phase: str) -> StatusReading:
        if endpoints.in_ is None:
            reading = StatusReading(PrinterStatus.UNKNOWN, "the printer has no USB IN endpoint to report status")
        else:
            try:
                reading = read_status(_UsbPort(device, endpoints, endpoints.in_, _ms(self.timeouts.status)))
            except usb.core.USBError as exc:
                when = f" {phase}" if phase else ""
                raise self._failure(exc, f"reading status{when}") from exc
        log.debug(
            "printer_status_read",
            printer=self.name,
            status=reading.status.value,
            detail=reading.detail,
            raw=reading.raw.hex(" "),
        )
        return reading

    def _write(self, device: Any, endpoints: _Endpoints, data: bytes) -> None:
        deadline = time.monotonic() + self.timeouts.write
        taken = 0
        while taken < len(data):
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise usb.core.USBTimeoutError("Operation timed out", None, errno.ETIMEDOUT)
                # libusb may report a timeout as a short write; the loop sends the rest within the deadline.
                taken += int(device.write(endpoints.out, data[taken:], timeout=_ms(remaining)))
            except usb.core.USBError as exc:
                if _is_timeout(exc):
                    raise self._unavailable(
                        f"USB printer {self.label} took only {taken} of {len(data)} bytes"
                        f" within {self.timeouts.write} s"
                    ) from exc
                raise self._failure(exc, f"sending ({taken} of {len(data)} bytes taken)") from exc

    def _release(self, device: Any) -> None:
        try:
            usb.util.dispose_resources(device)
        except usb.core.USBError as exc:
            log.debug("printer_usb_release_failed", printer=self.name, error=_reason(exc))
