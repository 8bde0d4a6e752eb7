"""The ``file`` printer transport: appends plain-text tickets to a file (tests, demos, a shared folder)."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path
from typing import Literal

from drivers.printers.errors import PrinterUnavailable
from drivers.printers.layout import Ticket, render_text


class FilePrinter:
    """A printer that appends each ticket as UTF-8 text to ``path``, synced to disk before returning."""

    def __init__(self, *, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        # Serialises this printer's jobs so two tickets never interleave in the file.
        self._lock = asyncio.Lock()

    async def print_ticket(self, ticket: Ticket) -> None:
        """Append the ticket and a blank line, or raise ``PrinterUnavailable`` naming the path and the reason."""
        data = (render_text(ticket) + "\n").encode("utf-8")
        async with self._lock:
            try:
                await asyncio.to_thread(self._append, data)
            except OSError as exc:
                reason = exc.strerror or str(exc)
                if exc.filename is not None and str(exc.filename) != str(self.path):
                    reason = f"{reason} ({exc.filename})"
                raise PrinterUnavailable(self.name, f"cannot write {self.path}: {reason}") from exc

    async def status(self) -> Literal["ok", "offline"]:
        """Return ``"ok"`` if the file, or the directory it would be made in, is writable, else ``"offline"``."""
        return "ok" if await asyncio.to_thread(self._writable) else "offline"

    def _append(self, data: bytes) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError as exc:
            # mkdir says "File exists" when a regular file sits where a directory must be.
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), exc.filename) from exc
        with self.path.open("ab") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    def _writable(self) -> bool:
        if self.path.exists():
            return self.path.is_file() and os.access(self.path, os.W_OK)
        # The directory may not exist yet: printing creates it under the nearest existing ancestor.
        for ancestor in self.path.parents:
            if ancestor.exists():
                return ancestor.is_dir() and os.access(ancestor, os.W_OK | os.X_OK)
        return False
