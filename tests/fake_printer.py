"""Fake ESC/POS printers that speak the real protocol: TCP 9100 on loopback, serial on a pty, a pyusb device.

Each answers ``DLE EOT n`` (``10 04 n``) with the status bytes an Epson printer sends in its ``mode``, and
records everything else as print data. Every one also answers the commands that confirm a job
(Epson's ESC/POS reference for GS a, GS r and GS ( H fn 48): ``GS ( H`` with ``37 22 d1 d2 d3 d4 00`` once the
data before it is printed, ``GS r 1`` with the paper sensor byte, and ``GS a n`` with 4-byte ASB frames, now
and on every change of mode. The first two are processed in order with the print data, so they are held,
unanswered, while the printer cannot print (paper out, cover open, offline) and answered when it can again.
That protocol half is ``Responder``, shared by the three; each fake only moves the bytes. Typical use::

    async with FakeNetworkPrinter.running() as printer:
        transport = NetworkTransport("pass", printer.host, printer.port)
        await transport.send(b"...")
        assert printer.jobs == [b"..."]
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import errno
import os
import select
import socket
import threading
import time
import tty
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

import usb.core

Mode = Literal["ok", "paper_low", "paper_out", "cover_open", "offline", "silent", "garbage", "black_hole"]

# Replies to DLE EOT 1, 2, 3, 4 (Epson semantics). "silent" reads everything but answers nothing;
# "black_hole" (network only) accepts connections but never reads from them, so never answers either.
REPLIES: dict[str, tuple[int, int, int, int]] = {
    "ok": (0x12, 0x12, 0x12, 0x12),
    "paper_low": (0x12, 0x12, 0x12, 0x1E),
    "paper_out": (0x1A, 0x32, 0x12, 0x7E),
    "cover_open": (0x1A, 0x16, 0x12, 0x12),
    "offline": (0x1A, 0x12, 0x12, 0x12),
    "garbage": (0x41, 0x41, 0x41, 0x41),
}


def reply_for(mode: Mode, n: int) -> bytes:
    """Return the printer's reply to ``DLE EOT n`` in ``mode`` (empty when silent)."""
    replies = REPLIES.get(mode)
    return bytes([replies[n - 1]]) if replies else b""


# ASB frames (the examples of Epson's GS a page); the 4th byte is reserved.
ASB_FRAMES: dict[str, bytes] = {
    "ok": b"\x10\x00\x00\x00",
    "paper_low": b"\x10\x00\x03\x00",
    "paper_out": b"\x18\x00\x0f\x00",
    "cover_open": b"\x38\x00\x00\x00",
    "offline": b"\x18\x00\x00\x00",
}
# Replies to GS r 1 (paper sensor): near end bits 0-1, paper end bits 2-3.
PAPER_REPLIES = {"ok": b"\x00", "paper_low": b"\x03"}


@dataclass(frozen=True)
class Command:
    """A job-confirmation command found in the print stream: ``process_id`` (GS ( H), ``paper`` (GS r) or ``asb``."""

    kind: Literal["process_id", "paper", "asb"]
    arg: bytes


# GS commands the fakes act on: GS ( H fn 48 (11 bytes), GS r n and GS a n (3 bytes each).
_GS_LENGTHS = {ord("("): 11, ord("r"): 3, ord("a"): 3}


class QuerySplitter:
    """Splits a byte stream into print data (bytes), DLE EOT queries (their n) and confirmation ``Command``s.

    Events come in order across chunks; an incomplete command at the end of a chunk waits for the next one.
    """

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[bytes | int | Command]:
        """Return the events in ``chunk``; an incomplete ``10`` / ``10 04`` / GS command waits for the next chunk."""
        buffer = self._pending + chunk
        self._pending = b""
        events: list[bytes | int | Command] = []
        data = bytearray()

        def emit(event: int | Command) -> None:
            if data:
                events.append(bytes(data))
                data.clear()
            events.append(event)

        i = 0
        while i < len(buffer):
            if buffer[i] == 0x10 and (i + 1 == len(buffer) or buffer[i + 1] == 0x04):
                if i + 2 >= len(buffer):
                    self._pending = buffer[i:]
                    break
                if buffer[i + 2] in (1, 2, 3, 4):
                    emit(buffer[i + 2])
                    i += 3
                    continue
            if buffer[i] == 0x1D and (i + 1 == len(buffer) or buffer[i + 1] in _GS_LENGTHS):
                size = _GS_LENGTHS.get(buffer[i + 1], 3) if i + 1 < len(buffer) else 3
                if i + size > len(buffer):
                    self._pending = buffer[i:]
                    break
                command = buffer[i : i + size]
                if command[1] == ord("(") and command[2:7] == b"H\x06\x00\x30\x30":
                    emit(Command("process_id", command[7:11]))
                    i += size
                    continue
                if command[1] == ord("r"):
                    emit(Command("paper", command[2:3]))
                    i += size
                    continue
                if command[1] == ord("a"):
                    emit(Command("asb", command[2:3]))
                    i += size
                    continue
            data.append(buffer[i])
            i += 1
        if data:
            events.append(bytes(data))
        return events

    def flush(self) -> bytes:
        """Return the held-back tail (a ``10`` or ``10 04`` that no query followed) as print data."""
        pending, self._pending = self._pending, b""
        return pending


class Channel(Protocol):
    """Where a fake's replies go: one TCP connection, a pty master, a USB IN endpoint's queue."""

    def write(self, data: bytes) -> None:
        """Send reply bytes to the host."""
        ...

    def is_closing(self) -> bool:
        """Whether the host can no longer read replies here."""
        ...


class Responder:
    """The printer's side of the protocol, shared by every fake: DLE EOT answers, GS ( H / GS r / GS a in print order.

    ``mode`` is the printer's state; ``mode_after`` changes it once that much print data came in (paper running out
    mid-ticket); ``answers_confirmations`` False is a clone that ignores GS ( H and GS r. Thread-safe: the pty fake
    answers from its own thread while a test changes the mode.
    """

    def __init__(self, mode: Mode = "ok") -> None:
        self._mode: Mode = mode
        self.queries = 0
        # False for a clone that prints and answers DLE EOT but ignores GS ( H and GS r.
        self.answers_confirmations = True
        self.confirmations: list[bytes] = []
        self._held_replies: list[tuple[Channel, Command]] = []
        self._asb: dict[Channel, bytes] = {}
        self._mode_after: tuple[int, Mode] | None = None
        self._printed = 0
        self._protocol_lock = threading.RLock()

    @property
    def mode(self) -> Mode:
        """The printer's state; setting it sends ASB frames where enabled and releases held replies it allows."""
        return self._mode

    @mode.setter
    def mode(self, mode: Mode) -> None:
        with self._protocol_lock:
            self._mode = mode
            for channel in list(self._asb):
                self._send_asb(channel)
            if mode in ("ok", "paper_low"):
                held, self._held_replies = self._held_replies, []
                for channel, command in held:
                    self._answer(channel, command)

    def mode_after(self, n_bytes: int, mode: Mode) -> None:
        """Switch to ``mode`` once ``n_bytes`` more print data came in (e.g. paper running out mid-ticket)."""
        with self._protocol_lock:
            self._mode_after = (n_bytes, mode)
            self._printed = 0

    def _respond(self, channel: Channel, event: int | Command) -> None:
        """Answer a DLE EOT query (its n) or act on a confirmation command, in print order."""
        with self._protocol_lock:
            if isinstance(event, int):
                self.queries += 1
                reply = reply_for(self._mode, event)
                if reply and not channel.is_closing():
                    channel.write(reply)
            else:
                self._answer(channel, event)

    def _took(self, size: int) -> None:
        """Count ``size`` bytes of print data (for ``mode_after``)."""
        with self._protocol_lock:
            self._printed += size
            if self._mode_after is not None and self._printed >= self._mode_after[0]:
                mode = self._mode_after[1]
                self._mode_after = None
                self.mode = mode

    def _forget(self, channel: Channel) -> None:
        """Drop what is pending for a closed channel (held replies, ASB subscription)."""
        with self._protocol_lock:
            self._asb.pop(channel, None)
            self._held_replies = [(c, command) for c, command in self._held_replies if c is not channel]

    def _send_asb(self, channel: Channel) -> None:
        frame = ASB_FRAMES.get(self._mode)
        if frame is not None and self._asb.get(channel) != frame and not channel.is_closing():
            self._asb[channel] = frame
            channel.write(frame)

    def _answer(self, channel: Channel, command: Command) -> None:
        """Act on a confirmation command in print order: answer it, hold it while printing is stopped, or ignore it."""
        if command.kind == "asb":
            if command.arg[0]:
                self._asb[channel] = b""
                self._send_asb(channel)
            else:
                self._asb.pop(channel, None)
            return
        if not self.answers_confirmations or self._mode in ("silent", "black_hole", "garbage"):
            return
        if self._mode not in ("ok", "paper_low"):
            self._held_replies.append((channel, command))
            return
        if channel.is_closing():
            return
        if command.kind == "process_id":
            self.confirmations.append(command.arg)
            channel.write(b"\x37\x22" + command.arg + b"\x00")
        elif command.arg[0] in (1, 49):
            channel.write(PAPER_REPLIES[self._mode])


class FakeNetworkPrinter(Responder):
    """A raw TCP 9100 printer on 127.0.0.1: one job per connection, status answered per ``mode``."""

    host = "127.0.0.1"

    def __init__(self, mode: Mode = "ok") -> None:
        super().__init__(mode)
        self.port = 0
        self.connections = 0
        self.open_connections = 0
        self._jobs: list[bytearray] = []
        self._server: asyncio.Server | None = None
        self._held = False
        self._close_after: int | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, mode: Mode = "ok") -> AsyncIterator[FakeNetworkPrinter]:
        """Listen on a free loopback port for the block; connections are closed at the end."""
        printer = cls(mode)
        await printer.accept()
        try:
            yield printer
        finally:
            await printer.stop()

    @property
    def jobs(self) -> list[bytes]:
        """Return the print data of each connection that sent any (queries removed), oldest first."""
        return [bytes(job) for job in self._jobs]

    def close_after(self, n_bytes: int) -> None:
        """Drop the next connection that reaches ``n_bytes`` of print data, keeping only those bytes."""
        self._close_after = n_bytes

    def hold(self, held: bool = True) -> None:
        """Accept new connections but never read from them (a busy or wedged printer)."""
        self._held = held

    def refuse(self) -> None:
        """Stop listening at once: new connections are refused; open ones carry on."""
        if self._server is not None:
            self._server.close()
            self._server = None

    async def accept(self) -> None:
        """Listen (again) on the same port."""
        if self._server is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # A small receive window, as on a printer: a held connection blocks the sender after kilobytes.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        sock.bind((self.host, self.port))
        sock.listen(8)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._serve, sock=sock)

    async def idle(self, timeout: float = 1.0) -> None:
        """Wait until no connection is open (the printer saw every client close); ``TimeoutError`` if not."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    async def stop(self) -> None:
        """Stop listening and drop every open connection."""
        self._stopping.set()
        self.refuse()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        self.open_connections += 1
        self._idle.clear()
        try:
            if self._held or self.mode == "black_hole":
                await self._stopping.wait()
                return
            await self._converse(reader, writer)
        finally:
            writer.transport.abort()
            self._writers.discard(writer)
            self._forget(writer)
            self._tasks.discard(task)
            self.open_connections -= 1
            if not self.open_connections:
                self._idle.set()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        splitter = QuerySplitter()
        job: bytearray | None = None
        while True:
            try:
                chunk = await reader.read(4096)
            except OSError:
                return
            events = splitter.feed(chunk) if chunk else [splitter.flush()]
            for event in events:
                if event == b"":
                    continue
                if isinstance(event, (int, Command)):
                    self._respond(writer, event)
                    continue
                if job is None:
                    job = bytearray()
                    self._jobs.append(job)
                if self._close_after is not None and len(job) + len(event) >= self._close_after:
                    job += event[: self._close_after - len(job)]
                    self._close_after = None
                    return
                job += event
                self._took(len(event))
            if not chunk:
                return
            try:
                await writer.drain()
            except OSError:
                return


class _FdChannel:
    """Replies written to a pty master."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def write(self, data: bytes) -> None:
        """Send reply bytes to the host (the transport on the slave side)."""
        with contextlib.suppress(OSError):
            os.write(self._fd, data)

    def is_closing(self) -> bool:
        """A pty master stays open for the fake's life."""
        return False


class FakeSerialPrinter(Responder):
    """A serial printer on the master side of a pty; transports open ``device`` (the slave)."""

    def __init__(self, mode: Mode = "ok") -> None:
        super().__init__(mode)
        self._data = bytearray()
        self._lock = threading.Lock()
        self._master, self._slave = os.openpty()
        # Raw: no echo of the replies, no newline translation of the print data.
        tty.setraw(self._slave)
        self.device = os.ttyname(self._slave)
        self._channel = _FdChannel(self._master)
        self._held = False
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="fake-serial-printer", daemon=True)

    @classmethod
    @contextlib.contextmanager
    def running(cls, mode: Mode = "ok") -> Iterator[FakeSerialPrinter]:
        """Serve the pty for the block, then stop the thread and close both ends."""
        printer = cls(mode)
        printer._thread.start()
        try:
            yield printer
        finally:
            printer.stop()

    def hold(self, held: bool = True) -> None:
        """Stop reading the pty (a printer that does not take data: the writer blocks once the buffer fills)."""
        self._held = held

    @property
    def data(self) -> bytes:
        """Return all print data received so far (queries removed)."""
        with self._lock:
            return bytes(self._data)

    def stop(self) -> None:
        """Stop the thread and close the pty."""
        if self._thread.is_alive():
            os.write(self._wake_w, b"x")
            self._thread.join(timeout=2)
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _run(self) -> None:
        splitter = QuerySplitter()
        while True:
            watched = [self._wake_r] if self._held else [self._master, self._wake_r]
            ready, _, _ = select.select(watched, [], [], 0.02)
            if self._wake_r in ready:
                return
            if self._master not in ready:
                continue
            try:
                chunk = os.read(self._master, 4096)
            except OSError as exc:
                if exc.errno == errno.EIO:  # no slave open right now
                    continue
                raise
            for event in splitter.feed(chunk):
                if isinstance(event, (int, Command)):
                    self._respond(self._channel, event)
                else:
                    with self._lock:
                        self._data += event
                    self._took(len(event))


@dataclass
class FakeEndpoint:
    """A pyusb endpoint descriptor as the transport reads it (pyusb's field names; bulk by default)."""

    bEndpointAddress: int
    bmAttributes: int = 0x02
    wMaxPacketSize: int = 64


class _ReplyQueue:
    """Replies queued on a USB IN endpoint until the host reads them."""

    def __init__(self, queue: bytearray) -> None:
        self._queue = queue

    def write(self, data: bytes) -> None:
        """Queue reply bytes for the next IN read."""
        self._queue += data

    def is_closing(self) -> bool:
        """The endpoint stays readable for the device's life."""
        return False


_QUERIES = {bytes([0x10, 0x04, n]) for n in (1, 2, 3, 4)}


class FakeUsbDevice(Responder):
    """A pyusb ``Device`` stand-in for ``usb.core.find``: bulk OUT 0x01 records bytes, IN 0x82 answers queries."""

    OUT = 0x01
    IN = 0x82

    def __init__(self, vendor: int = 0x04B8, product: int = 0x0202, mode: Mode = "ok") -> None:
        super().__init__(mode)
        self.idVendor = vendor
        self.idProduct = product
        self.data = bytearray()
        self.kernel_driver_active = True
        self.configured = False
        self.disposed = 0
        # Raised by writes carrying print data (status queries still go through).
        self.write_error: usb.core.USBError | None = None
        self.endpoints = [FakeEndpoint(self.OUT), FakeEndpoint(self.IN)]
        self._replies = bytearray()
        self._channel = _ReplyQueue(self._replies)
        self._splitter = QuerySplitter()
        # usb.util.dispose_resources(device) calls device._ctx.dispose(device).
        self._ctx = self

    def is_kernel_driver_active(self, interface: int) -> bool:
        """Return whether usblp still holds the interface."""
        return self.kernel_driver_active

    def detach_kernel_driver(self, interface: int) -> None:
        """Let go of usblp."""
        self.kernel_driver_active = False

    def set_configuration(self, configuration: int | None = None) -> None:
        """Configure the device."""
        self.configured = True

    def get_active_configuration(self) -> dict[tuple[int, int], list[FakeEndpoint]]:
        """Return ``{(interface, alt): endpoints}``; ``USBError`` until configured, as libusb does."""
        if not self.configured:
            raise usb.core.USBError("Configuration not set", None, errno.EIO)
        return {(0, 0): self.endpoints}

    def write(self, endpoint: int, data: bytes, timeout: int | None = None) -> int:
        """Take bytes on the OUT endpoint, answering DLE EOT queries on IN; print data raises ``write_error``."""
        assert endpoint == self.OUT
        assert timeout is not None and timeout > 0, "a transfer without a timeout could hang forever"
        if self.write_error is not None and bytes(data) not in _QUERIES:
            raise self.write_error
        for event in self._splitter.feed(bytes(data)):
            if isinstance(event, (int, Command)):
                self._respond(self._channel, event)
            else:
                self.data += event
                self._took(len(event))
        return len(data)

    def read(self, endpoint: int, size: int, timeout: int | None = None) -> array.array[int]:
        """Return queued reply bytes from the IN endpoint, or time out as libusb does."""
        assert endpoint == self.IN
        assert timeout is not None and timeout > 0, "a transfer without a timeout could hang forever"
        if not self._replies:
            # libusb waits the whole timeout for a packet that does not come.
            time.sleep(timeout / 1000)
            raise usb.core.USBTimeoutError("Operation timed out", -7, errno.ETIMEDOUT)
        reply = array.array("B", self._replies[:size])
        del self._replies[:size]
        return reply

    def dispose(self, device: object) -> None:
        """Release the handle (``usb.util.dispose_resources``)."""
        self.disposed += 1
