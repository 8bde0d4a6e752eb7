"""Tables for people: columns as wide as their widest cell, the last one wrapped between words to the terminal.

No cell is ever cut: a column widens to its longest cell, and the last column, where the free text goes (an
error, a reason), wraps at spaces with its continuation lines under it. Output that is not a terminal is not
wrapped (scripts should use --json).
"""

from __future__ import annotations

import shutil
import sys
import textwrap
from collections.abc import Collection, Sequence

# Below this the last column would be a ribbon of one word a line; past the terminal's edge is better then.
MIN_LAST_COLUMN = 24


def output_width() -> int | None:
    """Return the terminal's width ($COLUMNS first); None when stdout is not a terminal."""
    # Not $COLUMNS alone: GNU readline exports it to every child of a process that loaded it, pipes included.
    if not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size().columns


def table(
    rows: Sequence[Sequence[str]],
    *,
    header: Sequence[str] | None = None,
    right: Collection[int] = (),
    min_widths: Sequence[int] = (),
    gap: str = "  ",
    indent: str = "",
    width: int | None = None,
) -> list[str]:
    """Return the lines of ``rows`` (under ``header``) in columns; columns in ``right`` are right-aligned.

    ``width`` is the line length to wrap the last column to (None: never wrap).
    """
    lines_in = [list(header)] if header is not None else []
    lines_in.extend(list(row) for row in rows)
    if not lines_in:
        return []
    columns = len(lines_in[0])
    widths = [max(len(row[i]) for row in lines_in) for i in range(columns - 1)]
    widths = [max(w, min_widths[i]) if i < len(min_widths) else w for i, w in enumerate(widths)]
    start = len(indent) + sum(widths) + len(gap) * (columns - 1)
    room = max(width - start, MIN_LAST_COLUMN) if width is not None else None
    out = []
    for row in lines_in:
        lead = gap.join(
            cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=False))
        )
        last = row[-1]
        pieces = [last]
        if room is not None and len(last) > room:
            pieces = textwrap.wrap(last, room, break_long_words=False, break_on_hyphens=False) or [last]
        joined = indent + lead + gap if columns > 1 else indent
        out.append((joined + pieces[0]).rstrip())
        out.extend((" " * start + piece).rstrip() for piece in pieces[1:])
    return out
