"""Every kind of kitchen ticket at 32, 42 and 48 columns: the text and the decoded ESC/POS, sizes checked."""

from __future__ import annotations

import io
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from agent.domain.models import Order
from drivers.printers.decode import DecodedLine, decode_escpos
from drivers.printers.encoding import CodePage
from drivers.printers.escpos_render import render_escpos
from drivers.printers.layout import Ticket, TicketKind, layout_ticket
from drivers.printers.png import render_png
from drivers.printers.ticket_text import render_text
from tests.test_ticket_layout import make_order, margherita, random_orders

GOLDEN = Path(__file__).parent / "golden" / "kinds"
LONDON = ZoneInfo("Europe/London")
RECEIVED = datetime(2026, 11, 23, 18, 2, tzinfo=UTC)
CP858 = CodePage("CP858", 19, "cp858")
LONG_PIZZA = margherita(
    name="Quattro formaggi with smoked mozzarella and extra gorgonzola",
    notes="Well done. No sesame on the crust please",
    quantity=12,
)


def _delivery(**rest: Any) -> dict[str, Any]:
    return {
        "type": "delivery",
        "address": {"line1": "14 Harbour Street", "city": "Whitby", "postcode": "YO21 3PN"},
        "instructions": "Ring the side door",
        **rest,
    }


# name → (order changes, layout options, what a cook must see first)
KINDS: dict[str, tuple[dict[str, Any], dict[str, Any], list[str]]] = {
    "fallback": (
        {"items": [LONG_PIZZA], "notes": "My daughter is coeliac!"},
        {"kind": TicketKind.FALLBACK},
        ["FALLBACK - NOT IN POS"],
    ),
    "preorder_not_paid": (
        {
            "fulfillment": _delivery(),
            "requested_at": "2026-11-23T19:30:00Z",
            "payment": {"status": "pending", "currency": "GBP"},
        },
        {"kind": TicketKind.FALLBACK},
        ["FALLBACK - NOT IN POS"],
    ),
    "reprint": (
        {"source": "qr_table", "fulfillment": {"type": "dine_in", "table": "7", "covers": 2}, "customer": None},
        {"kind": TicketKind.REPRINT, "copy": 2},
        ["REPRINT", "COPY 2"],
    ),
    "modified": ({}, {"kind": TicketKind.MODIFIED, "copy": 2}, ["MODIFIED"]),
    "cancelled": ({}, {"kind": TicketKind.CANCELLED, "copy": 2}, ["CANCELLED - DO NOT MAKE"]),
    "late": ({}, {"kind": TicketKind.FALLBACK, "late_minutes": 38}, ["FALLBACK - NOT IN POS", "LATE - 38 MIN"]),
    "backup_duplicate": (
        {"items": [LONG_PIZZA]},
        {"kind": TicketKind.FALLBACK, "in_doubt": True, "backup_for": "grill", "copy": 2},
        ["FALLBACK - NOT IN POS", "REPRINT - MAY BE A DUPLICATE", "BACKUP FOR GRILL", "COPY 2"],
    ),
}
WIDTHS = (32, 42, 48)


def scenario(name: str, columns: int) -> tuple[Order, Ticket]:
    """The order and its laid-out ticket for one kind at one width."""
    changes, options, _ = KINDS[name]
    order = make_order(**changes)
    ticket = layout_ticket(order, columns=columns, tz=LONDON, received_at=RECEIVED, **options)
    return order, ticket


def decoded(ticket: Ticket) -> list[DecodedLine]:
    """The lines a printer prints from the ticket's ESC/POS bytes."""
    return decode_escpos(render_escpos(ticket, profile="TM-T20II", code_page=CP858, buzzer="none")).lines


def dump(lines: list[DecodedLine]) -> str:
    """One line per printed line: size, bold, inverse, alignment, then the text."""
    return "".join(
        f"{line.width}x{line.height} {'B' if line.bold else '-'}{'I' if line.inverse else '-'}"
        f" {line.align[0]} |{line.text.rstrip()}\n"
        for line in lines
    )


def banner_words(lines: list[DecodedLine]) -> str:
    """The words of the banners at the top (a banner split at its dash over two lines reads the same)."""
    top = []
    for line in lines:
        if not line.inverse:
            break
        top.append(line.text.strip())
    return " ".join(top).replace(" - ", " ")


@pytest.mark.parametrize("columns", WIDTHS)
@pytest.mark.parametrize("name", list(KINDS))
def test_golden_text_and_escpos(name: str, columns: int) -> None:
    """Each kind renders exactly as its golden file: the text a file printer writes, the lines a printer prints."""
    _, ticket = scenario(name, columns)
    text = render_text(ticket) + "---- ESC/POS as printed: size, bold/inverse, alignment ----\n" + dump(decoded(ticket))
    path = GOLDEN / f"{name}_{columns}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


@pytest.mark.parametrize("columns", WIDTHS)
@pytest.mark.parametrize("name", list(KINDS))
def test_banners_are_double_size_inverse_and_reset_after(name: str, columns: int) -> None:
    """Every banner line is printed double width and height, bold, reversed; the next line is back to normal."""
    _, ticket = scenario(name, columns)
    lines = decoded(ticket)
    first_plain = next(i for i, line in enumerate(lines) if not line.inverse)
    assert all((line.width, line.height, line.bold) == (2, 2, True) for line in lines[:first_plain])
    after = lines[first_plain]
    assert (after.width, after.height, after.inverse) == (1, 1, False)
    assert banner_words(lines) == " ".join(KINDS[name][2]).replace(" - ", " ")
    assert all(len(line.text) == columns // 2 for line in lines[:first_plain]), "each banner line is a full bar"


@pytest.mark.parametrize("columns", WIDTHS)
@pytest.mark.parametrize("name", list(KINDS))
def test_when_it_is_for_is_as_large_as_what_it_is(name: str, columns: int) -> None:
    """ASAP or FOR 19:30 prints double width and height like the items; PAID / NOT PAID double height only."""
    order, ticket = scenario(name, columns)
    lines = decoded(ticket)
    when = "ASAP" if order.requested_at is None else "FOR 19:30"
    time = next(line for line in lines if line.text.strip() == when)
    item = next(line for line in lines if " x " in line.text and line.width == 2)
    assert (time.width, time.height) == (item.width, item.height) == (2, 2)
    paid = next(line for line in lines if line.text.strip() in ("PAID", "NOT PAID"))
    assert (paid.width, paid.height, paid.bold) == (1, 2, True)
    assert paid.inverse is (order.payment.status.value == "pending")


@pytest.mark.parametrize("columns", WIDTHS)
def test_a_long_item_name_hangs_under_the_name_with_its_quantity_first(columns: int) -> None:
    """12 x Quattro formaggi ...: the quantity leads the first line, later lines start under the name, no word cut."""
    _, ticket = scenario("fallback", columns)
    lines = [line for line in decoded(ticket) if line.width == 2 and not line.inverse]
    at = next(i for i, line in enumerate(lines) if line.text.startswith("12 x "))
    name_lines = [lines[at].text.rstrip()]
    for line in lines[at + 1 :]:
        if not line.text.startswith("     "):
            break
        name_lines.append(line.text.rstrip())
    assert name_lines[0].startswith("12 x Quattro")
    assert all(line.startswith(" " * 5) and line[5] != " " for line in name_lines[1:])
    words = " ".join(line.strip() for line in name_lines).removeprefix("12 x ").split()
    assert " ".join(words) == "Quattro formaggi with smoked mozzarella and extra gorgonzola"
    assert all(len(line) <= columns // 2 for line in name_lines)


@pytest.mark.parametrize("columns", WIDTHS)
def test_allergy_words_print_as_loud_as_the_items_allergens(columns: int) -> None:
    """No sesame (item note) and coeliac (order note) print as !! ALLERGY: in the allergens' own style."""
    _, ticket = scenario("fallback", columns)
    lines = decoded(ticket)
    flags = [line for line in lines if "!! ALLERGY:" in line.text]
    allergens = next(line for line in lines if "!! ALLERGENS:" in line.text)
    assert len(flags) == 2
    for flag in [*flags, allergens]:
        assert (flag.width, flag.height, flag.bold, flag.inverse) == (1, 1, True, True)
    text = " ".join(" ".join(line.text.split()) for line in lines)
    assert "!! ALLERGY: My daughter is coeliac!" in text
    assert "!! ALLERGY: No sesame on the crust please" in text


# QR code ([tickets] qr = "order_url")

URL = "https://example.com/o/ord_01HX3Z9K7Q2M9XA"


def with_qr(columns: int = 48) -> Ticket:
    """A fallback ticket carrying the order's page as a QR code."""
    return layout_ticket(
        make_order(), kind=TicketKind.FALLBACK, columns=columns, tz=LONDON, received_at=RECEIVED, qr=URL
    )


@pytest.mark.parametrize(
    ("profile", "native", "image"),
    [("TM-T20II", [URL], []), ("POS-5890", [], [(192, 186)]), ("TM-U220", [], [])],
)
def test_a_qr_code_prints_natively_else_as_an_image_else_not_at_all(
    profile: str, native: list[str], image: list[tuple[int, int]]
) -> None:
    """GS ( k where the profile has QR codes, a GS v 0 raster image where it has only images, nothing on the TM-U220."""
    data = render_escpos(with_qr(), profile=profile, code_page=CodePage("CP437", 0, "cp437"), buzzer="none")
    decoded_ = decode_escpos(data)
    assert decoded_.qr_codes == native
    assert decoded_.images == image
    last_text = [line.text.strip() for line in decoded_.lines if line.text.strip()][-1]
    assert last_text == "Order ord_01HX3Z9K7Q2M9XA"  # the code comes after the order id, before the cut


def test_the_qr_code_shows_in_the_text_and_png_previews() -> None:
    """Text previews name the code's content; the PNG draws a scannable code, so it grows taller."""
    assert f"[QR: {URL}]" in render_text(with_qr())
    plain = layout_ticket(make_order(), kind=TicketKind.FALLBACK, columns=48, tz=LONDON, received_at=RECEIVED)
    tall = Image.open(io.BytesIO(render_png(with_qr()))).height
    short = Image.open(io.BytesIO(render_png(plain))).height
    assert tall > short + 150


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    order=random_orders(),
    columns=st.sampled_from(WIDTHS),
    kind=st.sampled_from(TicketKind),
    code_page=st.sampled_from([CP858, CodePage("CP437", 0, "cp437")]),
    late=st.none() | st.integers(11, 10_000),
)
def test_any_valid_order_prints_within_the_paper(
    order: Order, columns: int, kind: TicketKind, code_page: CodePage, late: int | None
) -> None:
    """Any valid intake order, any kind, as the printer decodes it: every printed line fits its size's width."""
    ticket = layout_ticket(
        order,
        kind=kind,
        columns=columns,
        tz=LONDON,
        received_at=RECEIVED,
        late_minutes=late,
        backup_for="grill",
        copy=2,
        in_doubt=True,
    )
    lines = decode_escpos(render_escpos(ticket, profile="TM-T20II", code_page=code_page, buzzer="none")).lines
    for line in lines:
        assert len(line.text) <= columns // line.width, line
