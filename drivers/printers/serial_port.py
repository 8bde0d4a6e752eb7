"""The ``serial`` printer transport: RS-232 (or a USB-serial adapter) through pyserial, in a worker thread.

The port is opened per job and closed before returning. Every blocking call is bounded: pyserial's read
timeout is the status timeout, its write timeout the job's, and the wait for the bytes to leave the UART
shares the job's deadline, so the worker thread cannot hang and the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import errno
import threading
import time

import serial
import structlog

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

_POLL = 0.01


class _SerialPort:
    """The status dialogue over an open pyserial port."""

    def __init__(self, port: serial.Serial) -> None:
        self._port = port

    def discard_input(self) -> None:
        """Drop bytes already received (ASB frames, late replies)."""
        self._port.reset_input_buffer()

    def query(self, request: bytes) -> int | None:
        """Send one DLE EOT query and return the reply byte, ``None`` after the read timeout."""
        self._port.write(request)
        reply: bytes = self._port.read(1)
        return reply[0] if reply else None


class _SerialStream:
    """What the printer sends while a job prints, over an open pyserial port."""

    def __init__(self, port: serial.Serial) -> None:
        self._port = port

    def read(self, timeout: float) -> bytes:
        """Return the bytes that came within ``timeout`` (empty if none)."""
        self._port.timeout = timeout
        chunk: bytes = self._port.read(max(1, int(self._port.in_waiting)))
        return chunk

    def write(self, data: bytes) -> None:
        """Send a status query."""
        self._port.write(data)


class SerialTransport:
    """A printer on a serial device: status before and after each job, the port opened per call."""

    # Can wait for a printer's own word that a job came out (GS ( H process ID, GS r), as on the network.
    confirms_jobs = True

    def __init__(self, name: str, device: str, baudrate: int = 19200, timeouts: Timeouts | None = None) -> None:
        self.name = name
        self.device = device
        self.baudrate = baudrate
        self.timeouts = timeouts or Timeouts()
        # Queues this printer's calls without tying up worker threads.
        self._lock = asyncio.Lock()
        # Held by the worker thread itself: a caller that gave up waiting must not let the next job interleave.
        self._port_lock = threading.Lock()

    async def send(self, data: bytes, confirm: ConfirmRequest | None = None) -> Delivery:
        """Read status, send ``data`` unless the printer cannot print, wait for ``confirm``, read status, close.

        With ``confirm`` the request follows the job and the printer's answer is awaited (``ConfirmWatch``), its
        status read every half second meanwhile, exactly as on the network.
        """
        async with self._lock:
            return await asyncio.to_thread(self._job, data, confirm)

    async def status(self) -> StatusReading:
        """Open the port, read the status and close; ``offline`` with the reason when the device cannot be opened."""
        async with self._lock:
            return await asyncio.to_thread(self._status)

    def _unavailable(self, reason: str) -> PrinterUnavailable:
        log.debug("printer_unavailable", printer=self.name, reason=reason)
        return PrinterUnavailable(self.name, reason, status=PrinterStatus.OFFLINE)

    def _job(self, data: bytes, confirm: ConfirmRequest | None) -> Delivery:
        with self._port_lock:
            port = self._open()
            sent = False
            confirmed: bool | None = None
            try:
                before = self._read_status(port, "before the job")
                if before.status.blocks_printing:
                    log.debug("printer_not_ready", printer=self.name, status=before.status.value)
                    raise PrinterNotReady(self.name, before.detail, status=before.status)
                self._write(port, data + (confirm.command if confirm else b""))
                silent = False
                if confirm is not None:
                    confirmed, silent = self._await_confirmation(port, confirm)
                after = SILENT_WHILE_PRINTING if silent else self._read_status(port, "after the job")
                sent = True
            finally:
                self._close(port, discard_output=not sent)
        return job_sent(self.name, len(data), before, after, confirmed=confirmed)

    def _await_confirmation(self, port: serial.Serial, request: ConfirmRequest) -> tuple[bool, bool]:
        try:
            return await_confirmation(_SerialStream(port), request, self.timeouts)
        except (serial.SerialException, OSError) as exc:
            raise self._unavailable(f"serial device {self.device} failed while the job was printing: {exc}") from exc
        finally:
            port.timeout = self.timeouts.status

    def _status(self) -> StatusReading:
        with self._port_lock:
            try:
                port = self._open()
            except PrinterUnavailable as exc:
                return StatusReading(PrinterStatus.OFFLINE, exc.reason)
            try:
                return self._read_status(port, "")
            except PrinterUnavailable as exc:
                return StatusReading(PrinterStatus.OFFLINE, exc.reason)
            finally:
                self._close(port, discard_output=True)

    def _open(self) -> serial.Serial:
        try:
            return serial.Serial(
                self.device,
                self.baudrate,
                timeout=self.timeouts.status,
                write_timeout=self.timeouts.write,
                # flock: another program (or a second agent) must not write into the middle of a ticket.
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            code = getattr(exc, "errno", None)
            if code == errno.ENOENT:
                reason = f"serial device {self.device} not found (is it plugged in?)"
            elif code == errno.EACCES:
                reason = (
                    f"no permission to open serial device {self.device} (is the agent's user in the dialout group?)"
                )
            elif code in (errno.EAGAIN, errno.EBUSY):
                reason = f"serial device {self.device} is in use by another program"
            else:
                reason = f"cannot open serial device {self.device}: {exc}"
            raise self._unavailable(reason) from exc

    def _read_status(self, port: serial.Serial, phase: str) -> StatusReading:
        try:
            reading = read_status(_SerialPort(port))
        except (serial.SerialException, OSError) as exc:
            when = f" {phase}" if phase else ""
            raise self._unavailable(f"serial device {self.device} failed while reading status{when}: {exc}") from exc
        log.debug(
            "printer_status_read",
            printer=self.name,
            status=reading.status.value,
            detail=reading.detail,
            raw=reading.raw.hex(" "),
        )
        return reading

    def _write(self, port: serial.Serial, data: bytes) -> None:
        deadline = time.monotonic() + self.timeouts.write
        try:
            port.write(data)
        except serial.SerialTimeoutException as exc:
            raise self._unavailable(
                f"serial device {self.device} did not take the job within {self.timeouts.write} s"
            ) from exc
        except (serial.SerialException, OSError) as exc:
            raise self._unavailable(f"serial device {self.device} failed while sending: {exc}") from exc
        # write() returns once the kernel has the bytes; the status reply comes only after they leave the UART.
        waiting = self._out_waiting(port)
        while waiting and time.monotonic() < deadline:
            time.sleep(_POLL)
            waiting = self._out_waiting(port)
        if waiting:
            raise self._unavailable(
                f"serial device {self.device} took only {len(data) - waiting} of {len(data)} bytes"
                f" within {self.timeouts.write} s"
            )

    def _out_waiting(self, port: serial.Serial) -> int:
        try:
            return int(port.out_waiting)
        except (serial.SerialException, OSError):
            # Some drivers cannot count queued output; the status read after the job still bounds the wait.
            return 0

    def _close(self, port: serial.Serial, *, discard_output: bool) -> None:
        try:
            if discard_output:
                # Closing a tty waits (up to 30 s) for queued output; bytes the printer refused are dropped instead.
                port.reset_output_buffer()
            port.close()
        except (serial.SerialException, OSError) as exc:
            log.debug("printer_port_close_failed", printer=self.name, error=str(exc))
