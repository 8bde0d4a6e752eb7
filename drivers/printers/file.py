"""The ``file`` printer transport: appends each job's bytes to a file, or writes them to a device file.

A regular file (tests, demos, a shared folder) is appended to and synced to disk before ``send`` returns;
its status is ``ok`` when it can be written and ``offline`` when it cannot. A character device such as
``/dev/usb/lp0`` is written as is (no directories made, no fsync) and cannot report status: ``unknown``.

A path under ``/dev/`` (``device=True``) names a device and is never created: a USB printer's stable name
``/dev/venue-printer/<vendor>-<product>-<serial>`` (a udev symlink) is opened afresh for every job, so a
printer unplugged and plugged back (a new ``/dev/usb/lp1`` behind the same name) prints again without a
restart, and while it is unplugged the printer is ``offline`` ("not connected"), never a regular file in /dev.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import threading
from pathlib import Path

import structlog

from drivers.printers.base import Delivery, PrinterStatus, StatusReading
from drivers.printers.errors import PrinterUnavailable
from drivers.printers.status import Timeouts

log = structlog.get_logger("venue_agent.printers")

_DEVICE = StatusReading(PrinterStatus.UNKNOWN, "a device file cannot report status")
_WRITTEN = StatusReading(PrinterStatus.OK, "file is writable")


def is_device_path(path: Path) -> bool:
    """Whether ``path`` names a device node (it is under /dev/): such a path is opened, never created."""
    return Path(path).is_absolute() and Path(path).parts[1:2] == ("dev",)


class FileTransport:
    """A printer that appends each job to ``path`` (synced), or writes it to the device file at ``path``."""

    def __init__(self, name: str, path: Path, timeouts: Timeouts | None = None, *, device: bool | None = None) -> None:
        self.name = name
        self.path = Path(path)
        self.timeouts = timeouts or Timeouts()
        # None: decided by the path (under /dev/); tests pass True for a stand-in node elsewhere.
        self.device = is_device_path(self.path) if device is None else device
        # Queues this printer's jobs so two never interleave in the file.
        self._lock = asyncio.Lock()
        # Held by the worker thread itself: a caller that gave up waiting must not let the next job interleave.
        self._file_lock = threading.Lock()

    async def send(self, data: bytes) -> Delivery:
        """Write ``data``; raise ``PrinterUnavailable`` naming the path and the reason when it cannot be written."""
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
            return _DEVICE
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
