"""PNG previews of kitchen tickets (``ticket render --format png``)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from drivers.printers.encoding import CodePage
from drivers.printers.layout import Line, Ticket
from drivers.printers.png import render_png

CP858 = CodePage("CP858", 19, "cp858")


def image(ticket: Ticket, code_page: CodePage | None = None) -> Image.Image:
    """Render ``ticket`` and open the PNG as grayscale."""
    data = render_png(ticket, code_page=code_page)
    opened = Image.open(io.BytesIO(data))
    assert opened.format == "PNG"
    return opened.convert("L")


def ticket(*lines: Line, columns: int = 42, cut: bool = False) -> Ticket:
    """A ticket of ``lines``."""
    return Ticket(lines=lines, columns=columns, cut=cut)


def ink_rows(img: Image.Image) -> list[int]:
    """The y of every row holding a dark pixel."""
    width, height = img.size
    pixels = img.load()
    assert pixels is not None
    return [y for y in range(height) if any(int(pixels[x, y]) < 128 for x in range(width))]  # type: ignore[arg-type]


def test_width_grows_linearly_with_the_columns() -> None:
    """The image is a margin plus one fixed cell per column: 32, 42 and 48 columns line up."""
    widths = {c: image(ticket(Line("x"), columns=c)).width for c in (32, 42, 48)}
    per_column = (widths[48] - widths[32]) / 16
    assert per_column >= 6
    assert per_column.is_integer()
    assert widths[42] == widths[32] + 10 * per_column
    assert widths[32] > 32 * per_column


def test_a_double_line_is_taller_than_a_normal_one() -> None:
    """Double lines are drawn at twice the size: their ink is taller and the image grows by more."""
    normal = image(ticket(Line("PICKUP")))
    double = image(ticket(Line("PICKUP", double=True)))
    assert double.height > normal.height
    normal_ink, double_ink = ink_rows(normal), ink_rows(double)
    assert double_ink[-1] - double_ink[0] > 1.6 * (normal_ink[-1] - normal_ink[0])


def ink_columns(img: Image.Image) -> list[int]:
    """The x of every column holding a dark pixel."""
    width, height = img.size
    pixels = img.load()
    assert pixels is not None
    return [x for x in range(width) if any(int(pixels[x, y]) < 128 for y in range(height))]  # type: ignore[arg-type]


def test_a_tall_line_is_twice_as_high_but_no_wider() -> None:
    """PAID is drawn double height only: its ink is about twice as tall as normal text and as wide."""
    normal = image(ticket(Line("PAID", bold=True)))
    tall = image(ticket(Line("PAID", bold=True, tall=True)))
    normal_rows, tall_rows = ink_rows(normal), ink_rows(tall)
    assert tall_rows[-1] - tall_rows[0] > 1.6 * (normal_rows[-1] - normal_rows[0])
    normal_cols, tall_cols = ink_columns(normal), ink_columns(tall)
    assert abs((tall_cols[-1] - tall_cols[0]) - (normal_cols[-1] - normal_cols[0])) <= 4


def test_inverse_line_is_a_black_bar_across_the_paper() -> None:
    """An inverse line is white text on a black bar: its rows are mostly black, edge to edge of the paper."""
    img = image(ticket(Line("FALLBACK - NOT IN POS", inverse=True, bold=True, align="center")))
    pixels = img.load()
    assert pixels is not None
    rows = ink_rows(img)
    assert len(rows) >= 15
    for y in rows:
        dark = [x for x in range(img.width) if int(pixels[x, y]) < 128]  # type: ignore[arg-type]
        assert len(dark) / img.width > 0.6
        assert dark[0] < img.width * 0.1
        assert dark[-1] > img.width * 0.9


def test_plain_line_is_mostly_white() -> None:
    """A normal line is dark text on white, so the inverse test above can fail."""
    img = image(ticket(Line("FALLBACK - NOT IN POS", bold=True, align="center")))
    histogram = img.histogram()
    assert sum(histogram[:128]) / (img.width * img.height) < 0.1


@pytest.mark.parametrize(("align", "side"), [("left", "left"), ("right", "right"), ("center", "middle")])
def test_alignment_moves_the_text(align: str, side: str) -> None:
    """Left text starts at the margin, right text ends at the paper's edge, centred text sits in between."""
    img = image(ticket(Line("ABC", align=align)))  # type: ignore[arg-type]
    bbox = Image.eval(img, lambda v: 255 - v).getbbox()
    assert bbox is not None
    left, right = bbox[0], img.width - bbox[2]
    if side == "left":
        assert left < right / 4
    elif side == "right":
        assert right < left / 4
    else:
        assert abs(left - right) < img.width * 0.05


def test_bold_is_darker_than_regular() -> None:
    """Bold text puts down more ink than the same text regular."""
    regular = image(ticket(Line("Margherita")))
    bold = image(ticket(Line("Margherita", bold=True)))
    assert sum(bold.histogram()[:128]) > sum(regular.histogram()[:128]) * 1.15


def test_cut_line_is_drawn_at_the_end() -> None:
    """A ticket with a cut ends in a dashed line across the whole image."""
    cut = image(ticket(Line("x"), cut=True))
    assert cut.height > image(ticket(Line("x"))).height
    pixels = cut.load()
    assert pixels is not None
    last = ink_rows(cut)[-1]
    dark = [int(pixels[x, last]) < 128 for x in range(cut.width)]  # type: ignore[arg-type]
    assert 0.3 < sum(dark) / cut.width < 0.8
    assert dark[: cut.width // 10].count(True) > 0 and dark[-cut.width // 10 :].count(True) > 0


def test_code_page_preview_shows_what_the_printer_prints() -> None:
    """With a code page an emoji is drawn as its printed name, which is wider than the glyph box."""
    plain = image(ticket(Line("🎂")))
    printed = image(ticket(Line("🎂")), code_page=CP858)
    ink = Image.eval(printed, lambda v: 255 - v).getbbox()
    plain_ink = Image.eval(plain, lambda v: 255 - v).getbbox()
    assert ink is not None and plain_ink is not None
    assert ink[2] - ink[0] > 5 * (plain_ink[2] - plain_ink[0])
