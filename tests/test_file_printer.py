"""The ``file`` printer transport."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from drivers.printers.errors import PrinterError, PrinterUnavailable
from drivers.printers.file import FilePrinter
from drivers.printers.layout import Line, Ticket, render_text


def ticket(code: str) -> Ticket:
    """A short ticket with a banner, a double code and an accented item."""
    return Ticket(
        lines=(Line("FALLBACK - NOT IN POS", inverse=True), Line(code, double=True), Line("1 x Crème brûlée 🍮")),
        columns=32,
    )


async def test_appends_tickets_each_followed_by_a_blank_line(tmp_path: Path) -> None:
    """Two tickets land in the file in order, as UTF-8, each followed by a blank line."""
    path = tmp_path / "kitchen" / "tickets.txt"
    printer = FilePrinter(name="pass", path=path)
    await printer.print_ticket(ticket("AAAA1111"))
    await printer.print_ticket(ticket("BBBB2222"))
    content = path.read_text(encoding="utf-8")
    assert content == render_text(ticket("AAAA1111")) + "\n" + render_text(ticket("BBBB2222")) + "\n"
    assert content.count("--- cut ---") == 2
    assert "1 x Crème brûlée 🍮" in content


async def test_keeps_what_was_already_in_the_file(tmp_path: Path) -> None:
    """Printing appends; earlier tickets in the file are kept."""
    path = tmp_path / "tickets.txt"
    path.write_text("earlier ticket\n\n", encoding="utf-8")
    await FilePrinter(name="pass", path=path).print_ticket(ticket("CCCC3333"))
    assert path.read_text(encoding="utf-8").startswith("earlier ticket\n\n")


async def test_writes_off_the_event_loop_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The blocking write and fsync run in a worker thread, not on the event loop."""
    threads: list[int] = []
    original = FilePrinter._append

    def spy(self: FilePrinter, data: bytes) -> None:
        threads.append(threading.get_ident())
        original(self, data)

    monkeypatch.setattr(FilePrinter, "_append", spy)
    await FilePrinter(name="pass", path=tmp_path / "t.txt").print_ticket(ticket("DDDD4444"))
    assert threads
    assert threads[0] != threading.get_ident()


async def test_unwritable_path_raises_printer_unavailable(tmp_path: Path) -> None:
    """A path that cannot be written raises PrinterUnavailable naming the printer, the path and the reason."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be", encoding="utf-8")
    path = blocker / "tickets.txt"
    printer = FilePrinter(name="pass", path=path)
    with pytest.raises(PrinterUnavailable) as caught:
        await printer.print_ticket(ticket("EEEE5555"))
    message = str(caught.value)
    assert "'pass'" in message
    assert str(path) in message
    assert "Not a directory" in message
    assert isinstance(caught.value, PrinterError)
    assert isinstance(caught.value.__cause__, OSError)


async def test_status_is_ok_when_the_file_can_be_created(tmp_path: Path) -> None:
    """A path under a writable directory (even one not made yet) reports ok."""
    assert await FilePrinter(name="pass", path=tmp_path / "new" / "tickets.txt").status() == "ok"


async def test_status_is_offline_when_the_directory_cannot_exist(tmp_path: Path) -> None:
    """A path under a regular file reports offline."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("", encoding="utf-8")
    assert await FilePrinter(name="pass", path=blocker / "tickets.txt").status() == "offline"
