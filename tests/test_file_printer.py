"""The ``file`` transport: appends to a regular file (synced), or writes to a device file."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from drivers.printers.base import PrinterStatus
from drivers.printers.errors import PrinterError, PrinterUnavailable
from drivers.printers.file import FileTransport

TICKET = "FALLBACK - NOT IN POS\nK7Q2M9XA\n1 x Crème brûlée 🍮\n--- cut ---\n\n".encode()


async def test_appends_jobs_in_order_and_syncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each job's bytes are appended as given, made under a new directory, and fsync'd before send returns."""
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / "kitchen" / "tickets.txt"
    printer = FileTransport("pass", path)
    first = await printer.send(TICKET)
    await printer.send(b"\x1b@second\x1dV\x00")
    assert path.read_bytes() == TICKET + b"\x1b@second\x1dV\x00"
    assert len(synced) == 2
    assert first.printed
    assert first.before.status is PrinterStatus.OK
    assert first.after.status is PrinterStatus.OK


async def test_keeps_what_was_already_in_the_file(tmp_path: Path) -> None:
    """Printing appends; earlier tickets in the file are kept."""
    path = tmp_path / "tickets.txt"
    path.write_bytes(b"earlier ticket\n\n")
    await FileTransport("pass", path).send(TICKET)
    assert path.read_bytes() == b"earlier ticket\n\n" + TICKET


async def test_writes_off_the_event_loop_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The blocking write and fsync run in a worker thread, not on the event loop."""
    threads: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        threads.append(threading.get_ident())
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    await FileTransport("pass", tmp_path / "t.txt").send(TICKET)
    assert threads
    assert threading.get_ident() not in threads


async def test_concurrent_jobs_never_interleave(tmp_path: Path) -> None:
    """Jobs sent at once land whole, one after the other."""
    path = tmp_path / "t.txt"
    printer = FileTransport("pass", path)
    jobs = [bytes([65 + n]) * 100_000 for n in range(4)]
    await asyncio.gather(*(printer.send(job) for job in jobs))
    content = path.read_bytes()
    assert sorted(content[i : i + 100_000] for i in range(0, len(content), 100_000)) == jobs


async def test_unwritable_path_raises_printer_unavailable(tmp_path: Path) -> None:
    """A path that cannot be written raises PrinterUnavailable naming the printer, the path and the reason."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be", encoding="utf-8")
    path = blocker / "tickets.txt"
    with pytest.raises(PrinterUnavailable) as caught:
        await FileTransport("pass", path).send(TICKET)
    message = str(caught.value)
    assert "'pass'" in message
    assert str(path) in message
    assert "Not a directory" in message
    assert caught.value.status is PrinterStatus.OFFLINE
    assert isinstance(caught.value, PrinterError)
    assert isinstance(caught.value.__cause__, OSError)


async def test_status_is_ok_when_the_file_can_be_created(tmp_path: Path) -> None:
    """A path under a writable directory (even one not made yet) reports ok."""
    assert (await FileTransport("pass", tmp_path / "new" / "tickets.txt").status()).status is PrinterStatus.OK


async def test_status_is_offline_when_the_directory_cannot_exist(tmp_path: Path) -> None:
    """A path under a regular file reports offline, naming the path."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("", encoding="utf-8")
    reading = await FileTransport("pass", blocker / "tickets.txt").status()
    assert reading.status is PrinterStatus.OFFLINE
    assert str(blocker / "tickets.txt") in reading.detail


async def test_character_device_is_written_without_status(monkeypatch: pytest.MonkeyPatch) -> None:
    """A device file (as /dev/usb/lp0) takes the bytes without fsync; its status is unknown, not ok."""
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    printer = FileTransport("pass", Path("/dev/null"))
    delivery = await printer.send(TICKET)
    assert delivery.printed
    assert delivery.before.status is PrinterStatus.UNKNOWN
    assert delivery.after.status is PrinterStatus.UNKNOWN
    assert synced == []
    assert (await printer.status()).status is PrinterStatus.UNKNOWN


class Socket:
    """A stand-in USB printer: a pty (a character device like /dev/usb/lp0) behind a udev-style symlink."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master: int | None = None
        self.slave: int | None = None
        self.node: str | None = None

    def plug(self) -> str:
        """Plug a printer in: a new node, the stable name pointing at it (as udev does); return the node."""
        import tty

        master, slave = os.openpty()
        tty.setraw(slave)
        node = os.ttyname(slave)
        # Held open, as the kernel holds the device: the master reads what the transport writes.
        self.master, self.slave, self.node = master, slave, node
        temporary = self.link.with_name(self.link.name + ".new")
        temporary.symlink_to(node)
        temporary.replace(self.link)
        return node

    def unplug(self) -> None:
        """Pull the cable: the node goes away and udev removes the symlink."""
        self.link.unlink()
        assert self.master is not None and self.slave is not None
        os.close(self.slave)
        os.close(self.master)
        self.master = self.slave = None

    def received(self) -> bytes:
        """Return what the printer received so far."""
        assert self.master is not None
        chunks = []
        os.set_blocking(self.master, False)
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


async def test_a_usb_printer_plugged_back_keeps_printing_through_its_stable_name(tmp_path: Path) -> None:
    """Unplugged: offline "not connected", nothing created at the name; plugged back as a new node: it prints."""
    socket = Socket(tmp_path / "04b8-0202-J5CF012345")
    first_node = socket.plug()
    printer = FileTransport("pass", socket.link, device=True)
    assert printer.present() is True
    assert (await printer.send(b"\x1b@first\n")).printed
    assert socket.received() == b"\x1b@first\n"

    socket.unplug()
    assert printer.present() is False
    with pytest.raises(PrinterUnavailable) as caught:
        await printer.send(b"\x1b@lost\n")
    assert "not connected" in str(caught.value)
    assert caught.value.status is PrinterStatus.OFFLINE
    status = await printer.status()
    assert status.status is PrinterStatus.OFFLINE
    assert "not connected" in status.detail
    # Never a regular file where udev will put the link when the printer comes back.
    assert not socket.link.exists() and not socket.link.is_symlink()

    blocker = os.openpty()  # holds the old number, so the printer comes back as another node (lp0 -> lp1)
    try:
        second_node = socket.plug()
        assert second_node != first_node
        assert printer.present() is True
        assert (await printer.send(b"\x1b@second\n")).printed
        assert socket.received() == b"\x1b@second\n"
    finally:
        for fd in blocker:
            os.close(fd)
        socket.unplug()


async def test_a_path_under_dev_is_a_device_and_is_never_created(tmp_path: Path) -> None:
    """A missing /dev/ path (the printer not plugged in) is not created, even when the process could create it."""
    missing = Path("/dev/venue-printer-test-never-created/04b8-0202-NONE")
    printer = FileTransport("pass", missing)
    try:
        assert printer.device and printer.present() is False
        with pytest.raises(PrinterUnavailable, match="not connected"):
            await printer.send(TICKET)
        assert not missing.parent.exists()
    finally:
        if missing.parent.exists():  # a regression made it: do not leave it in the machine's /dev
            missing.unlink(missing_ok=True)
            missing.parent.rmdir()
    # A regular file elsewhere is a file: created as before, and it has no presence to watch.
    regular = FileTransport("pass", tmp_path / "tickets.txt")
    assert not regular.device and regular.present() is None
