"""The ``network`` printer transport: raw TCP (port 9100), one connection per job, pure asyncio.

An Epson-style interface prints for one connection at a time and makes the others wait, so every call
connects, does its work and closes before returning, on every path. python-escpos' ``Network`` is not
used: its blocking socket and 60 s default timeout do not fit the event loop.
"""

from __future__ import annotations

import asyncio
import socket
import struct

import structlog

from drivers.printers.base import Delivery, PrinterStatus, StatusReading, job_sent
from drivers.printers.errors import PrinterNotReady, PrinterUnavailable
from drivers.printers.status import (
    SILENT_WHILE_PRINTING,
    ConfirmRequest,
    Timeouts,
    await_confirmation_async,
    read_status_async,
)

log = structlog.get_logger("venue_agent.printers")

# Bytes handed to the socket per step, so a failure can say how much of the job the printer took.
_CHUNK = 8192
# How long bytes may trickle in before a status query and still be dropped as stray (ASB frames, late replies).
_STRAY_WINDOW = 0.01


class _Closed(Exception):
    """The printer closed the connection."""


class _StreamPort:
    """The status dialogue over one open connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> None:
        self._reader = reader
        self._writer = writer
        self._timeout = timeout

    async def discard_input(self) -> None:
        """Drop whatever the printer sent unasked; raise ``_Closed`` at end of stream."""
        window = min(_STRAY_WINDOW, self._timeout)
        # Bounded: a printer that chatters without pause must not keep the job (and the worker) here.
        deadline = asyncio.get_running_loop().time() + self._timeout
        while asyncio.get_running_loop().time() < deadline:
            try:
                chunk = await asyncio.wait_for(self._reader.read(4096), window)
            except TimeoutError:
                return
            if not chunk:
                raise _Closed
            log.debug("printer_stray_bytes_discarded", count=len(chunk))

    async def query(self, request: bytes) -> int | None:
        """Send one DLE EOT query and return the reply byte, ``None`` when none came in time."""
        self._writer.write(request)
        try:
            async with asyncio.timeout(self._timeout):
                await self._writer.drain()
                reply = await self._reader.read(1)
        except TimeoutError:
            return None
        if not reply:
            raise _Closed
        return reply[0]


class _ReplyStream:
    """What the printer sends while a job prints, over one open connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, within: float) -> bytes:
        """Return the bytes that came within ``within`` s (empty if none); raise ``_Closed`` at end of stream."""
        try:
            chunk = await asyncio.wait_for(self._reader.read(64), within)
        except TimeoutError:
            return b""
        if not chunk:
            raise _Closed
        return chunk

    async def write(self, data: bytes) -> None:
        """Queue a status query (the status timeout bounds the wait for its answer, not the write)."""
        self._writer.write(data)


class NetworkTransport:
    """A printer on raw TCP: status before and after each job, one connection per call, closed before returning."""

    # Can wait for a printer's own word that a job came out (GS ( H process ID, GS r): see ``send``.
    confirms_jobs = True

    def __init__(self, name: str, host: str, port: int = 9100, timeouts: Timeouts | None = None) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.timeouts = timeouts or Timeouts()
        # One job or status read at a time: the printer would make a second connection wait anyway.
        self._lock = asyncio.Lock()

    @property
    def address(self) -> str:
        """Return ``host:port`` (IPv6 hosts in brackets) for messages."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def send(self, data: bytes, confirm: ConfirmRequest | None = None) -> Delivery:
        """Read status, send ``data`` unless the printer cannot print, wait for ``confirm``, read status, close.

        With ``confirm`` the request goes right after the job and the printer's answer is awaited (up to
        ``timeouts.confirm``) while its real-time status is read every half second: paper running out or the
        cover opening mid-job, or the printer falling silent, ends the wait at once.
        """
        async with self._lock:
            reader, writer = await self._connect()
            confirmed: bool | None = None
            try:
                port = _StreamPort(reader, writer, self.timeouts.status)
                before = await self._read_status(port, "while reading status before the job")
                if before.status.blocks_printing:
                    log.debug("printer_not_ready", printer=self.name, status=before.status.value)
                    raise PrinterNotReady(self.name, before.detail, status=before.status)
                await self._write(writer, data + (confirm.command if confirm else b""))
                silent = False
                if confirm is not None:
                    confirmed, silent = await self._await_confirmation(reader, writer, confirm)
                if silent:
                    after = SILENT_WHILE_PRINTING
                else:
                    after = await self._read_status(
                        port, f"after all {len(data)} bytes were sent, before the printer confirmed the job"
                    )
            finally:
                await self._close(writer)
        return job_sent(self.name, len(data), before, after, confirmed=confirmed)

    async def _await_confirmation(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: ConfirmRequest
    ) -> tuple[bool, bool]:
        """Wait for the printer to confirm ``request`` (``ConfirmWatch`` decides); return (confirmed, silent)."""
        try:
            return await await_confirmation_async(_ReplyStream(reader, writer), request, self.timeouts)
        except (_Closed, ConnectionError) as exc:
            raise self._unavailable(f"connection closed by {self.address} while the job was printing") from exc

    async def status(self) -> StatusReading:
        """Connect, read the status and close; ``offline`` with the reason when the printer cannot be reached."""
        async with self._lock:
            try:
                reader, writer = await self._connect()
            except PrinterUnavailable as exc:
                return StatusReading(PrinterStatus.OFFLINE, exc.reason)
            try:
                return await self._read_status(
                    _StreamPort(reader, writer, self.timeouts.status), "while reading status"
                )
            except PrinterUnavailable as exc:
                return StatusReading(PrinterStatus.OFFLINE, exc.reason)
            finally:
                await self._close(writer)

    def _unavailable(self, reason: str) -> PrinterUnavailable:
        log.debug("printer_unavailable", printer=self.name, reason=reason)
        return PrinterUnavailable(self.name, reason, status=PrinterStatus.OFFLINE)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        timeout = self.timeouts.connect
        try:
            # Not wait_for(): on Python 3.11 it drops a connection that completes as the timeout or a cancellation
            # lands (the socket then leaks); timeout() runs the connect in this task, so it is ours or never made.
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(self.host, self.port)
        except TimeoutError as exc:
            raise self._unavailable(f"no answer within {timeout} s connecting to {self.address}") from exc
        except ConnectionRefusedError as exc:
            raise self._unavailable(f"connection refused by {self.address}") from exc
        except socket.gaierror as exc:
            raise self._unavailable(f"cannot resolve printer host {self.host!r}: {exc.strerror or exc}") from exc
        except OSError as exc:
            raise self._unavailable(f"cannot connect to {self.address}: {exc.strerror or exc}") from exc
        # drain() then waits until the kernel took every byte, not merely until the buffer is below 64 KiB.
        writer.transport.set_write_buffer_limits(high=0)
        return reader, writer

    async def _read_status(self, port: _StreamPort, phase: str) -> StatusReading:
        try:
            reading = await read_status_async(port)
        except (_Closed, ConnectionError) as exc:
            # End of stream, reset or broken pipe: the printer hung up either way.
            raise self._unavailable(f"connection closed by {self.address} {phase}") from exc
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise self._unavailable(f"connection to {self.address} failed {phase}: {reason}") from exc
        log.debug(
            "printer_status_read",
            printer=self.name,
            status=reading.status.value,
            detail=reading.detail,
            raw=reading.raw.hex(" "),
        )
        return reading

    async def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        view = memoryview(data)
        done = 0
        chunk = view[:0]

        def taken() -> int:
            return done + len(chunk) - writer.transport.get_write_buffer_size()

        try:
            async with asyncio.timeout(self.timeouts.write):
                while done < len(view):
                    chunk = view[done : done + _CHUNK]
                    writer.write(chunk)
                    await writer.drain()
                    done += len(chunk)
                    chunk = view[:0]
        except TimeoutError as exc:
            raise self._unavailable(
                f"{self.address} took only {taken()} of {len(data)} bytes within {self.timeouts.write} s"
            ) from exc
        except OSError as exc:
            # The transport forgets its buffer once the connection is lost: only whole chunks count as taken.
            raise self._unavailable(f"connection closed while sending ({done} of {len(data)} bytes taken)") from exc

    async def _close(self, writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        if transport.get_write_buffer_size():
            # Bytes the printer never took: reset rather than leave the connection lingering to flush them.
            sock = writer.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            transport.abort()
            return
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), self.timeouts.connect)
        except (TimeoutError, OSError):
            transport.abort()
