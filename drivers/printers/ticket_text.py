"""A laid-out ticket as plain text (``render_text``, for the ``file`` transport and previews) and the word wrap
by paper cells that the layout uses too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from drivers.printers.layout import Align, Ticket


def render_text(ticket: Ticket) -> str:
    """Return the ticket as plain text, each line at most ``ticket.columns`` characters, ending in a newline.

    Large (double or tall) lines are upper case, runs of inverse lines are framed by rows of ``*``, a
    QR code is ``[QR: data]`` and a cut is a row of dashes then ``--- cut ---``. A line too long for
    the paper is wrapped here, never cut.
    """
    columns = ticket.columns
    frame = "*" * columns
    out: list[str] = []
    framed = False
    for line in ticket.lines:
        if line.inverse != framed:
            out.append(frame)
            framed = line.inverse
        shown = line.text.upper() if line.large else line.text
        if len(shown) <= columns and len(shown.splitlines()) <= 1:
            pieces = [shown]
        else:
            indent = shown[: len(shown) - len(shown.lstrip(" "))]
            pieces = wrap(shown, columns, first=indent, rest=indent) or [""]
        out.extend(_aligned(piece, line.align, columns) for piece in pieces)
    if framed:
        out.append(frame)
    if ticket.qr:
        out.extend(wrap(f"[QR: {ticket.qr}]", columns))
    if ticket.cut:
        out.extend(("-" * columns, "--- cut ---"))
    return "\n".join(out) + "\n"


def paper_cells(s: str, *, double: bool) -> int:
    """Return the characters ``s`` takes on paper; a large line is upper-cased, so ``ß`` takes two."""
    return sum(len(ch.upper()) for ch in s) if double else len(s)


def wrap(text: str, width: int, *, first: str = "", rest: str = "", double: bool = False) -> list[str]:
    """Word-wrap ``text`` into lines of at most ``width`` cells, breaking a word only when it is too long.

    ``first`` prefixes the first line and ``rest`` every further one (a hanging indent). Runs of
    whitespace and line breaks between words become single spaces or line breaks; no other character
    is dropped. A word is split only when it is longer than the room beside the prefix; the prefix of
    the first line always stays with the first word. For a large line a cell holds the upper-case
    form of a character (``ß`` is two), so the upper-cased line still fits.
    """

    def cells(s: str) -> int:
        return paper_cells(s, double=double)

    # A prefix that leaves no room would stop progress; drop it rather than the text.
    if cells(first) >= width:
        first = ""
    if cells(rest) >= width:
        rest = ""
    lines: list[str] = []
    prefix = first
    for para in text.splitlines():
        current = ""
        for word in para.split():
            if current and cells(prefix + current + " " + word) <= width:
                current += " " + word
                continue
            if current:
                lines.append(prefix + current)
                prefix, current = rest, ""
            while cells(prefix + word) > width:
                room = width - cells(prefix)
                cut = 0
                used = 0
                while cut < len(word) and used + cells(word[cut]) <= room:
                    used += cells(word[cut])
                    cut += 1
                if cut == 0 and prefix:
                    # One wide character (an upper-cased ligature) does not fit beside the indent.
                    prefix = ""
                    continue
                cut = max(cut, 1)
                lines.append(prefix + word[:cut])
                prefix, word = rest, word[cut:]
            current = word
        if current:
            lines.append(prefix + current)
            prefix = rest
    return lines


def _aligned(text: str, align: Align, columns: int) -> str:
    text = text.rstrip()
    if align == "center":
        return " " * ((columns - len(text)) // 2) + text
    if align == "right":
        return " " * (columns - len(text)) + text
    return text
