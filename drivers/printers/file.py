"""The ``file`` printer transport: appends each job's bytes to a file, or writes them to a device file.

A regular file (tests, demos, a shared folder) is appended to and synced to disk before ``send`` returns;
its status is ``ok`` when it can be written and ``offline`` when it cannot. A character device such as
``/dev/usb/lp0`` is written as is (no directories made, no fsync) and cannot report status: ``unknown``.

A path under ``/dev/`` (``device=True``) names a device and is never created: a USB printer's stable name
``/dev/venue-printer/<vendor>-<product>-<serial>`` (a udev symlink) is opened afresh for every job, so a
printer unplugged and plugged back (a new ``/dev/usb/lp1`` behind the same name) prints again without a
restart, and while it is unplugged the printer is ``offline`` ("not connected"), never a regular file in /dev.

usblp is two-way: a read returns what the printer sent. With ``two_way`` (the config sets ``confirm`` for the
device) the node is opened read-write and the job goes as on the network: DLE EOT status before, the job with its
confirmation request, the wait for the answer (``ConfirmWatch``), status after; every step bounded with select().
A regular file stays write-only.
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
import stat
import threading
import time
from pathlib import Path

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

_DEVICE = StatusReading(PrinterStatus.UNKNOWN, "a device file cannot report status")
_WRITTEN = StatusReading(PrinterStatus.OK, "file is writable")


def is_device_path(path: Path) -> bool:
    """Whether ``path`` names a device node (it is under /dev/): such a path is opened, never created."""
    return Path(path).is_absolute() and Path(path).parts[1:2] == ("dev",)


class _Node:
    """Two-way bytes over an open non-blocking device node, each wait bounded by select()."""

    def __init__(self, fd: int, timeout: float) -> None:
        self._fd = fd
        self._timeout = timeout

    def read(self, timeout: float) -> bytes:
        """Return the bytes that came within ``timeout`` (empty if none)."""
        ready, _, _ = select.select([self._fd], [], [], timeout)
        if not ready:
            return b""
        try:
            return os.read(self._fd, 4096)
        except BlockingIOError:
            return b""

    def write(self, data: bytes) -> None:
        """Send a status query within the status timeout."""
        self.put(data, self._timeout)

    def put(self, data: bytes, timeout: float) -> int:
        """Write ``data`` within ``timeout``; return how many bytes the device took."""
        deadline = time.monotonic() + timeout
        view = memoryview(data)
        done = 0
        while done < len(view):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            _, ready, _ = select.select([], [self._fd], [], left)
            if not ready:
                break
            try:
                done += os.write(self._fd, view[done:])
            except BlockingIOError:
                continue
        return done

    def discard_input(self) -> None:
        """Drop bytes already waiting (ASB frames, late replies); bounded by the status timeout."""
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline and self.read(0):
            pass

    def query(self, request: bytes) -> int | None:
        """Send one DLE EOT query and return the reply byte, ``None`` when none came in time."""
        if self.put(request, self._timeout) < len(request):
            return None
        ready, _, _ = select.select([self._fd], [], [], self._timeout)
        if not ready:
            return None
        try:
            reply = os.read(self._fd, 1)
        except BlockingIOError:
            return None
        return reply[0] if reply else None


class FileTransport:
    """A printer that appends each job to ``path`` (synced), or writes it to the device file at ``path``."""

    def __init__(
        self,
        name: str,
        path: Path,
        timeouts: Timeouts | None = None,
        *,
        device: bool | None = None,
        two_way: bool = False,
    ) -> None:
        self.name = name
        self.path = Path(path)
        self.timeouts = timeouts or Timeouts()
        # None: decided by the path (under /dev/); tests pass True for a stand-in node elsewhere.
        self.device = is_device_path(self.path) if device is None else device
        # A device node read back (usblp passes the printer's replies); a regular file is never read.
        self.two_way = two_way and self.device
        # A job can wait for the printer's own confirmation on a two-way device node only.
        self.confirms_jobs = self.two_way
        # Queues this printer's jobs so two never interleave in the file.
        self._lock = asyncio.Lock()
        # Held by the worker thread itself: a caller that gave up waiting must not let the next job interleave.
        self._file_lock = threading.Lock()

    async def send(self, data: bytes, confirm: ConfirmRequest | None = None) -> Delivery:
        """Write ``data``; raise ``PrinterUnavailable`` naming the path and the reason when it cannot be written.

        On a two-way device node: status before (``PrinterNotReady`` when it cannot print), the job and ``confirm``,
        the wait for its answer, status after; ``confirm`` is ignored elsewhere.
        """
        if self.two_way:
            async with self._lock:
                try:
                    return await asyncio.to_thread(self._job, data, confirm)
                except OSError as exc:
                    raise self._unavailable(f"cannot use {self.path}: {exc.strerror or exc}") from exc
        async with self._lock:
            try:
                # The timeout matters for device files: a printer driver may block a write indefinitely.
                reading = await asyncio.wait_for(asyncio.to_thread(self._append, data), self.timeouts.write)
            except TimeoutError as exc:
                raise self._unavailable(f"cannot write {self.path}: not done within {self.timeouts.write} s") from exc
            except OSError as exc:
                reason = exc.strerror or str(exc)
                if exc.filename is not None and str(exc.filename) != str(self.path):
                    reason = f"{reason} ({exc.filename})"
                raise self._unavailable(f"cannot write {self.path}: {reason}") from exc
        log.debug("printer_job_sent", printer=self.name, size=len(data), after=reading.status.value)
        return Delivery(reading, reading, confirmable=reading.status is not PrinterStatus.UNKNOWN)

    async def status(self) -> StatusReading:
        """Return ``ok`` if the file, or the directory it would be made in, is writable; ``unknown`` for a device."""
        return await asyncio.to_thread(self._status)

    def present(self) -> bool | None:
        """Whether the device node is there now (a cheap stat, following the symlink); ``None`` for a regular file."""
        if not self.device:
            return None
        return self._is_device()

    def _open_node(self) -> int:
        if not self._is_device():
            raise FileNotFoundError(errno.ENOENT, self._missing(), str(self.path))
        return os.open(self.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)

    def _job(self, data: bytes, confirm: ConfirmRequest | None) -> Delivery:
        with self._file_lock:
            fd = self._open_node()
            confirmed: bool | None = None
            try:
                node = _Node(fd, self.timeouts.status)
                before = read_status(node)
                if before.status.blocks_printing:
                    log.debug("printer_not_ready", printer=self.name, status=before.status.value)
                    raise PrinterNotReady(self.name, before.detail, status=before.status)
                payload = data + (confirm.command if confirm else b"")
                taken = node.put(payload, self.timeouts.write)
                if taken < len(payload):
                    raise self._unavailable(
                        f"{self.path} took only {min(taken, len(data))} of {len(data)} bytes"
                        f" within {self.timeouts.write} s"
                    )
                silent = False
                if confirm is not None:
                    confirmed, silent = await_confirmation(node, confirm, self.timeouts)
                after = SILENT_WHILE_PRINTING if silent else read_status(node)
            finally:
                os.close(fd)
        return job_sent(self.name, len(data), before, after, confirmed=confirmed)

    def _node_status(self) -> StatusReading:
        with self._file_lock:
            try:
                fd = self._open_node()
            except OSError as exc:
                return StatusReading(PrinterStatus.OFFLINE, f"cannot use {self.path}: {exc.strerror or exc}")
            try:
                return read_status(_Node(fd, self.timeouts.status))
            except OSError as exc:
                return StatusReading(PrinterStatus.OFFLINE, f"{self.path} failed while reading status: {exc}")
            finally:
                os.close(fd)

    def _unavailable(self, reason: str) -> PrinterUnavailable:
        log.debug("printer_unavailable", printer=self.name, reason=reason)
        return PrinterUnavailable(self.name, reason, status=PrinterStatus.OFFLINE)

    def _is_device(self) -> bool:
        try:
            return stat.S_ISCHR(self.path.stat().st_mode)
        except OSError:
            return False

    def _append(self, data: bytes) -> StatusReading:
        with self._file_lock:
            if self.device and not self._is_device():
                raise FileNotFoundError(errno.ENOENT, self._missing(), str(self.path))
            if self._is_device():
                # No O_CREAT: if the device vanished, do not leave a regular file in /dev in its place.
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_NOCTTY)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                return _DEVICE
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except FileExistsError as exc:
                # mkdir says "File exists" when a regular file sits where a directory must be.
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), exc.filename) from exc
            with self.path.open("ab") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            return _WRITTEN

    def _missing(self) -> str:
        return "not connected (no device there: is the printer plugged in and switched on?)"

    def _status(self) -> StatusReading:
        if self.device and not self._is_device():
            return StatusReading(PrinterStatus.OFFLINE, f"{self.path}: {self._missing()}")
        if self._is_device():
            if not os.access(self.path, os.W_OK):
                return StatusReading(PrinterStatus.OFFLINE, f"no permission to write {self.path}")
            return self._node_status() if self.two_way else _DEVICE
        if self._writable():
            return _WRITTEN
        return StatusReading(PrinterStatus.OFFLINE, f"cannot write {self.path}")

    def _writable(self) -> bool:
        if self.path.exists():
            return self.path.is_file() and os.access(self.path, os.W_OK)
        # The directory may not exist yet: printing creates it under the nearest existing ancestor.
        for ancestor in self.path.parents:
            if ancestor.exists():
                return ancestor.is_dir() and os.access(ancestor, os.W_OK | os.X_OK)
        return False
