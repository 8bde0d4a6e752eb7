"""PNG previews of kitchen tickets (SPEC §9 ``ticket render --format png``), drawn with Pillow.

The preview is drawn from the same ``Ticket`` and the same rows as the ESC/POS renderer, so a person
sees what the kitchen gets: a monospace paper strip ``columns`` characters wide, double lines at
twice the size, bold, reversed bars, alignment and a dashed cut line.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from drivers.printers.encoding import CodePage
from drivers.printers.escpos_render import printed_pieces
from drivers.printers.layout import Line, Ticket

_FONT_SIZE = 20
_MARGIN = 16
_LEADING = 1.25
_CUT_GAP = 24
_FONT_DIRS = (Path("/usr/share/fonts"),)
_Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def render_png(ticket: Ticket, *, code_page: CodePage | None = None) -> bytes:
    """Return a PNG of ``ticket``; with ``code_page`` the text is shown as that page prints it."""
    codec = None if code_page is None else code_page.codec
    rows = [(line, piece) for line in ticket.lines for piece in printed_pieces(line, ticket.columns, codec)]
    cell = _cell_width()
    line_height = round(_FONT_SIZE * _LEADING)
    paper = ticket.columns * cell
    height = 2 * _MARGIN + sum(line_height * (2 if line.double else 1) for line, _ in rows)
    if ticket.cut:
        height += _CUT_GAP + line_height
    image = Image.new("L", (paper + 2 * _MARGIN, height), 255)
    draw = ImageDraw.Draw(image)
    y = _MARGIN
    for line, piece in rows:
        scale = 2 if line.double else 1
        row_height = line_height * scale
        if line.inverse:
            draw.rectangle((_MARGIN, y, _MARGIN + paper - 1, y + row_height - 1), fill=0)
        _draw_row(draw, line, piece, y, scale, cell, paper)
        y += row_height
    if ticket.cut:
        y += _CUT_GAP
        middle = y + line_height // 2
        for x in range(0, paper + 2 * _MARGIN, 12):
            draw.line((x, middle, x + 6, middle), fill=0, width=2)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _draw_row(draw: ImageDraw.ImageDraw, line: Line, text: str, y: int, scale: int, cell: int, paper: int) -> None:
    font = _font(bold=line.bold, size=_FONT_SIZE * scale)
    shown = text.rstrip(" ") if not line.inverse else text
    used = len(shown) * cell * scale
    x = _MARGIN
    if line.align == "center":
        x += max(paper - used, 0) // 2
    elif line.align == "right":
        x += max(paper - used, 0)
    fill = 255 if line.inverse else 0
    # Without a bold face the strokes are thickened instead.
    stroke = 1 if line.bold and not _has_bold() else 0
    for index, char in enumerate(shown):
        # One character per cell keeps columns aligned even with a proportional fallback font.
        draw.text((x + index * cell * scale, y), char, font=font, fill=fill, stroke_width=stroke, stroke_fill=fill)


@functools.cache
def _font(*, bold: bool, size: int) -> _Font:
    path = _font_path(bold=bold) or _font_path(bold=False)
    if path is not None:
        return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size=size)


@functools.cache
def _font_path(*, bold: bool) -> Path | None:
    name = "DejaVuSansMono-Bold.ttf" if bold else "DejaVuSansMono.ttf"
    for root in _FONT_DIRS:
        if root.is_dir():
            for found in root.rglob(name):
                return found
    return None


def _has_bold() -> bool:
    return _font_path(bold=True) is not None


@functools.cache
def _cell_width() -> int:
    return max(1, round(_font(bold=False, size=_FONT_SIZE).getlength("M")))
