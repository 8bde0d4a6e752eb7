"""PNG previews of kitchen tickets (``ticket render --format png``), drawn with Pillow.

The preview is drawn from the same ``Ticket`` and the same rows as the ESC/POS renderer, so a person
sees what the kitchen gets: a monospace paper strip ``columns`` characters wide, double lines at
twice the size (tall lines twice the height), bold, reversed bars, alignment, the QR code and a
dashed cut line.
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
    code = _qr_image(ticket.qr, paper) if ticket.qr else None
    height = 2 * _MARGIN + sum(line_height * (2 if line.large else 1) for line, _ in rows)
    if code is not None:
        height += code.height + line_height
    if ticket.cut:
        height += _CUT_GAP + line_height
    image = Image.new("L", (paper + 2 * _MARGIN, height), 255)
    draw = ImageDraw.Draw(image)
    y = _MARGIN
    for line, piece in rows:
        row_height = line_height * (2 if line.large else 1)
        if line.inverse:
            draw.rectangle((_MARGIN, y, _MARGIN + paper - 1, y + row_height - 1), fill=0)
        _draw_row(image, line, piece, y, cell, paper, row_height)
        y += row_height
    if code is not None:
        y += line_height // 2
        image.paste(code, (_MARGIN + (paper - code.width) // 2, y))
        y += code.height + line_height // 2
    if ticket.cut:
        y += _CUT_GAP
        middle = y + line_height // 2
        for x in range(0, paper + 2 * _MARGIN, 12):
            draw.line((x, middle, x + 6, middle), fill=0, width=2)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _draw_row(image: Image.Image, line: Line, text: str, y: int, cell: int, paper: int, row_height: int) -> None:
    """Draw one printed row: glyphs at the line's height, squeezed to single width for a tall line."""
    scale_y = 2 if line.large else 1
    scale_x = 2 if line.double else 1
    shown = text.rstrip(" ") if not line.inverse else text
    if not shown.strip():
        return
    font = _font(bold=line.bold, size=_FONT_SIZE * scale_y)
    fill = 255 if line.inverse else 0
    # Without a bold face the strokes are thickened instead.
    stroke = 1 if line.bold and not _has_bold() else 0
    wide = cell * scale_y
    strip = Image.new("L", (max(1, len(shown) * wide), row_height), 0 if line.inverse else 255)
    draw = ImageDraw.Draw(strip)
    for index, char in enumerate(shown):
        # One character per cell keeps columns aligned even with a proportional fallback font.
        draw.text((index * wide, 0), char, font=font, fill=fill, stroke_width=stroke, stroke_fill=fill)
    used = len(shown) * cell * scale_x
    if scale_x != scale_y:
        strip = strip.resize((max(1, used), row_height), Image.Resampling.LANCZOS)
    x = _MARGIN
    if line.align == "center":
        x += max(paper - used, 0) // 2
    elif line.align == "right":
        x += max(paper - used, 0)
    image.paste(strip.crop((0, 0, min(strip.width, _MARGIN + paper - x), row_height)), (x, y))


def _qr_image(data: str, paper: int) -> Image.Image:
    """Return the QR code for ``data`` as a greyscale image at most half the paper wide."""
    import qrcode

    code = qrcode.QRCode(border=0, error_correction=qrcode.constants.ERROR_CORRECT_M)
    code.add_data(data)
    code.make(fit=True)
    modules = code.modules_count
    box = max(2, (paper // 2) // modules)
    matrix = code.get_matrix()
    image = Image.new("L", (modules * box, modules * box), 255)
    draw = ImageDraw.Draw(image)
    for row, cells in enumerate(matrix):
        for column, dark in enumerate(cells):
            if dark:
                draw.rectangle((column * box, row * box, (column + 1) * box - 1, (row + 1) * box - 1), fill=0)
    return image


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
