"""Kitchen ticket layout and plain-text rendering (docs/printers.md)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from agent.domain.models import Order
from drivers.printers.encoding import spell_emoji
from drivers.printers.layout import Line, Ticket, TicketKind, layout_ticket
from drivers.printers.ticket_text import render_text, wrap
from drivers.printers.ticket_words import format_money, source_words

LONDON = ZoneInfo("Europe/London")
RECEIVED = datetime(2026, 11, 23, 12, 0, 5, tzinfo=UTC)
GOLDEN = Path(__file__).parent / "golden"


def _price(line: dict[str, Any]) -> int:
    """Price of one unit of an item or modifier, its modifiers included (minor units)."""
    unit: int = line["unit_price"]
    modifiers: int = sum(m.get("quantity", 1) * _price(m) for m in line.get("modifiers", []))
    return unit + modifiers


def _modifier(name: str, *, price: int = 0, quantity: int = 1, sku: str | None = None, **rest: Any) -> dict[str, Any]:
    return {"name": name, "sku": sku, "quantity": quantity, "unit_price": price, **rest}


def margherita(**overrides: Any) -> dict[str, Any]:
    """The sample order's item: 2 x Margherita with extra basil."""
    item = {
        "name": "Margherita",
        "sku": "PZ-MARG",
        "quantity": 2,
        "unit_price": 950,
        "category": "Pizza",
        "course": 1,
        "notes": "well done",
        "allergens": ["gluten", "milk"],
        "modifiers": [_modifier("Extra basil", price=50, sku="MOD-BASIL")],
    }
    return {**item, **overrides}


def make_order(**overrides: Any) -> Order:
    """A valid pickup order like the sample order, with the total worked out from its lines."""
    data: dict[str, Any] = {
        "schema_version": 1,
        "id": "ord_01HX3Z9K7Q2M9XA",
        "source": "web",
        "display_code": "K7Q2M9XA",
        "created_at": "2026-11-23T12:00:05+00:00",
        "requested_at": None,
        "fulfillment": {"type": "pickup"},
        "customer": {"name": "Sam Reed", "phone": "+447700900123", "email": "sam@example.com"},
        "items": [margherita()],
        "charges": {"delivery_fee": 0, "service_charge": 0, "tip": 100},
        "discounts": [],
        "payment": {"status": "paid", "method": "card", "amount": 0, "currency": "GBP"},
        "notes": "No cutlery",
    }
    data.update(overrides)
    charges = data["charges"]
    total = (
        sum(i["quantity"] * _price(i) for i in data["items"])
        + charges["delivery_fee"]
        + charges["service_charge"]
        + charges["tip"]
        - sum(d["amount"] for d in data["discounts"])
    )
    data["total"] = total
    data["payment"] = {**data["payment"], "amount": total}
    return Order.model_validate(data)


def lay(order: Order, **kwargs: Any) -> Ticket:
    """Lay out with the usual venue settings unless overridden."""
    options: dict[str, Any] = {"kind": TicketKind.FALLBACK, "columns": 48, "tz": LONDON, "received_at": RECEIVED}
    options.update(kwargs)
    return layout_ticket(order, **options)


def texts(ticket: Ticket) -> list[str]:
    """The text of each line, as the printer gets it."""
    return [line.text for line in ticket.lines]


def find(ticket: Ticket, text: str) -> Line:
    """The one line whose text is exactly ``text``."""
    matches = [line for line in ticket.lines if line.text == text]
    assert len(matches) == 1, f"{text!r} in {texts(ticket)}"
    return matches[0]


def index(ticket: Ticket, text: str) -> int:
    """Position of the line whose text is exactly ``text``."""
    return texts(ticket).index(text)


# Banner, source, code


def test_fallback_banner_is_the_first_line_in_inverse() -> None:
    """A fallback ticket opens with the banner FALLBACK - NOT IN POS, double size in an inverse bar."""
    first = lay(make_order()).lines[0]
    assert first.text == "FALLBACK - NOT IN POS"
    assert first.inverse and first.double and first.bold and first.align == "center"


@pytest.mark.parametrize(
    ("kind", "banner"),
    [
        (TicketKind.REPRINT, ["REPRINT", "COPY 3"]),
        (TicketKind.MODIFIED, ["MODIFIED"]),
        (TicketKind.CANCELLED, ["CANCELLED - DO NOT MAKE"]),
    ],
)
def test_banner_names_the_kind_of_ticket(kind: TicketKind, banner: list[str]) -> None:
    """Reprints say which copy they are, modified and cancelled tickets say what the cook must do."""
    ticket = lay(make_order(), kind=kind, copy=3 if kind is TicketKind.REPRINT else 1)
    assert texts(ticket)[: len(banner)] == banner
    assert all(line.inverse and line.double for line in ticket.lines[: len(banner)])
    assert not ticket.lines[len(banner)].inverse


def test_modified_ticket_says_it_replaces_the_earlier_one() -> None:
    """Under the MODIFIED banner a line says this ticket replaces the earlier one."""
    ticket = lay(make_order(), kind=TicketKind.MODIFIED)
    assert texts(ticket)[1] == "Replaces the earlier ticket for this order"


@pytest.mark.parametrize(
    ("options", "banners"),
    [
        ({"in_doubt": True}, ["FALLBACK - NOT IN POS", "REPRINT", "MAY BE A DUPLICATE"]),
        ({"late_minutes": 38}, ["FALLBACK - NOT IN POS", "LATE - 38 MIN"]),
        ({"backup_for": "grill"}, ["FALLBACK - NOT IN POS", "BACKUP FOR GRILL"]),
        ({"copy": 2}, ["FALLBACK - NOT IN POS", "COPY 2"]),
        (
            {"in_doubt": True, "late_minutes": 61, "backup_for": "Pizza oven", "copy": 4},
            [
                "FALLBACK - NOT IN POS",
                "REPRINT",
                "MAY BE A DUPLICATE",
                "LATE - 61 MIN",
                "BACKUP FOR PIZZA OVEN",
                "COPY 4",
            ],
        ),
    ],
)
def test_every_warning_is_a_banner(options: dict[str, Any], banners: list[str]) -> None:
    """Duplicate, late, backup and copy warnings follow the kind's banner, each as loud as it."""
    ticket = lay(make_order(), **options)
    assert texts(ticket)[: len(banners)] == banners
    assert all(line.inverse and line.double and line.bold for line in ticket.lines[: len(banners)])
    assert not ticket.lines[len(banners)].inverse


@pytest.mark.parametrize("kind", [TicketKind.MODIFIED, TicketKind.CANCELLED])
def test_news_is_not_a_copy(kind: TicketKind) -> None:
    """A modified or cancelled ticket tells the kitchen something new: it never says COPY n."""
    assert not any(t.startswith("COPY") for t in texts(lay(make_order(), kind=kind, copy=3)))


def test_a_cancelled_ticket_is_never_late() -> None:
    """Nobody rushes a cancelled order: the LATE banner is left off it."""
    assert not any("LATE" in t for t in texts(lay(make_order(), kind=TicketKind.CANCELLED, late_minutes=40)))


@pytest.mark.parametrize(
    ("columns", "lines"),
    [
        (48, ["CANCELLED - DO NOT MAKE"]),
        (42, ["CANCELLED", "DO NOT MAKE"]),
        (32, ["CANCELLED", "DO NOT MAKE"]),
    ],
)
def test_a_banner_too_wide_for_the_paper_splits_at_its_dash(columns: int, lines: list[str]) -> None:
    """At double size a 58 mm roll holds 16 characters: the banner breaks where its meaning does."""
    ticket = lay(make_order(), kind=TicketKind.CANCELLED, columns=columns)
    assert texts(ticket)[: len(lines)] == lines


@pytest.mark.parametrize(
    ("source", "fulfillment", "words"),
    [
        ("web", {"type": "pickup"}, "ONLINE / WEB"),
        ("app", {"type": "pickup"}, "ONLINE / APP"),
        ("qr_table", {"type": "dine_in", "table": "7"}, "QR AT TABLE 7"),
        ("kiosk", {"type": "pickup"}, "KIOSK"),
        ("uber_eats", {"type": "delivery", "address": {"line1": "1 Quay"}}, "UBER EATS"),
        ("whats-app_bot", {"type": "pickup"}, "ONLINE / WHATS APP BOT"),
    ],
)
def test_source_is_shown_in_words(source: str, fulfillment: dict[str, Any], words: str) -> None:
    """The channel reads as words: never qr_table or an underscore on paper."""
    ticket = lay(make_order(source=source, fulfillment=fulfillment))
    assert find(ticket, words).bold
    assert not any("_" in t for t in texts(ticket) if not t.startswith("Order "))


def test_display_code_is_double_size() -> None:
    """The collection code stands out in double size."""
    assert find(lay(make_order()), "K7Q2M9XA").double


def test_display_code_is_derived_when_the_sender_gave_none() -> None:
    """An order without a display code gets the code derived from its id, so the counter can call it."""
    order = make_order(display_code=None)
    expected = order.with_display_code().display_code
    assert expected
    assert find(lay(order), expected).double


def test_page_number_is_near_the_top() -> None:
    """A ticket split over printers says 1 of 2 right under the banner."""
    ticket = lay(make_order(), page=(1, 2))
    assert index(ticket, "1 of 2") == 1
    assert "1 of 2" not in texts(lay(make_order()))


# Fulfilment and times


def when(ticket: Ticket) -> list[str]:
    """The time line and the day under it."""
    at = next(i for i, t in enumerate(texts(ticket)) if t.startswith("FOR "))
    return texts(ticket)[at : at + 2]


def test_asap_pickup() -> None:
    """An order without a requested time is PICKUP and ASAP, both as large as an item."""
    ticket = lay(make_order())
    assert find(ticket, "PICKUP").double
    assert find(ticket, "ASAP").double and find(ticket, "ASAP").bold
    assert index(ticket, "ASAP") == index(ticket, "PICKUP") + 1


def test_requested_time_is_as_large_as_the_items_and_paid_is_smaller() -> None:
    """FOR 19:30 prints double width and height, its day below; PAID is double height only."""
    ticket = lay(make_order(requested_at="2026-11-23T19:30:00Z", fulfillment={"type": "pickup"}))
    time = find(ticket, "FOR 19:30")
    assert time.double and time.bold
    assert find(ticket, "Mon 23 Nov").bold
    paid = find(ticket, "PAID")
    assert paid.tall and not paid.double


def test_requested_time_in_winter_is_local_gmt() -> None:
    """In November London is on GMT: 18:30Z prints as FOR 18:30, Mon 23 Nov."""
    ticket = lay(make_order(requested_at="2026-11-23T18:30:00+00:00"))
    assert when(ticket) == ["FOR 18:30", "Mon 23 Nov"]
    assert "ASAP" not in texts(ticket)


def test_requested_time_in_summer_is_local_bst() -> None:
    """In July London is on BST: 17:30Z prints as FOR 18:30, Mon 13 Jul."""
    assert when(lay(make_order(requested_at="2026-07-13T17:30:00Z"))) == ["FOR 18:30", "Mon 13 Jul"]


def test_requested_time_crosses_midnight_in_local_time() -> None:
    """23:30Z on a summer Monday is 00:30 on the Tuesday in London."""
    assert when(lay(make_order(requested_at="2026-07-13T23:30:00Z"))) == ["FOR 00:30", "Tue 14 Jul"]


def test_requested_time_given_with_another_offset_is_converted() -> None:
    """A time sent with a New York offset is printed in the venue's zone."""
    assert when(lay(make_order(requested_at="2026-11-23T13:30:00-05:00"))) == ["FOR 18:30", "Mon 23 Nov"]


def test_a_delivery_time_prints_large_too() -> None:
    """A delivery for 19:45 shows its time double size under DELIVERY."""
    fulfillment = {"type": "delivery", "address": {"line1": "14 Harbour Street"}}
    ticket = lay(make_order(fulfillment=fulfillment, requested_at="2026-11-23T19:45:00Z"))
    assert index(ticket, "FOR 19:45") == index(ticket, "DELIVERY") + 1
    assert find(ticket, "FOR 19:45").double


def test_received_time_is_local_and_follows_dst() -> None:
    """The received line uses venue time: 11:00Z in summer is 12:00, in winter 11:00."""
    summer = lay(make_order(), received_at=datetime(2026, 7, 13, 11, 0, tzinfo=UTC))
    winter = lay(make_order(), received_at=datetime(2026, 11, 23, 11, 0, tzinfo=UTC))
    assert find(summer, "Received 12:00 13 Jul")
    assert find(winter, "Received 11:00 23 Nov")


def test_naive_received_time_is_refused() -> None:
    """A received time without an offset cannot be placed in the venue's zone and is refused."""
    with pytest.raises(ValueError, match="offset"):
        lay(make_order(), received_at=datetime(2026, 11, 23, 12, 0))


def test_dine_in_shows_table_and_covers() -> None:
    """A dine-in ticket shows DINE IN, the table in double size and the covers."""
    order = make_order(fulfillment={"type": "dine_in", "table": "12", "covers": 4}, customer=None)
    ticket = lay(order)
    assert find(ticket, "DINE IN").double
    assert find(ticket, "TABLE 12").double
    assert index(ticket, "Covers: 4") > index(ticket, "TABLE 12")


def test_delivery_shows_address_and_instructions() -> None:
    """A delivery ticket lists the address lines and the driver's instructions."""
    fulfillment = {
        "type": "delivery",
        "address": {"line1": "14 Harbour Street", "line2": "Flat 2", "city": "Whitby", "postcode": "YO21 3PN"},
        "instructions": "Ring the side door",
    }
    ticket = lay(make_order(fulfillment=fulfillment))
    at = index(ticket, "DELIVERY")
    assert texts(ticket)[at + 2 : at + 6] == [
        "14 Harbour Street",
        "Flat 2",
        "Whitby YO21 3PN",
        "Instructions: Ring the side door",
    ]


def test_customer_name_and_phone() -> None:
    """The customer's name and phone are printed; the email is not."""
    ticket = lay(make_order())
    assert index(ticket, "+447700900123") == index(ticket, "Sam Reed") + 1
    assert not any("sam@example.com" in t for t in texts(ticket))


# Items


def test_item_is_quantity_x_name_in_double_size() -> None:
    """Each item reads 2 x Margherita, in double size."""
    assert find(lay(make_order()), "2 x Margherita").double


def test_modifier_is_indented_beneath_its_item() -> None:
    """A modifier follows its item, indented with a plus."""
    ticket = lay(make_order())
    assert index(ticket, "  + Extra basil") == index(ticket, "2 x Margherita") + 1


def test_nested_modifiers_indent_further_and_show_quantity() -> None:
    """A modifier's own choices are indented one more step; a quantity above one is shown."""
    basil = _modifier("Extra basil", price=50, modifiers=[_modifier("Thai basil", quantity=2, price=10)])
    order = make_order(items=[margherita(modifiers=[basil, _modifier("Chilli oil")])])
    assert texts(lay(order))[index(lay(order), "2 x Margherita") :][:4] == [
        "2 x Margherita",
        "  + Extra basil",
        "    + 2 x Thai basil",
        "  + Chilli oil",
    ]


def test_item_note_is_under_the_item() -> None:
    """Item notes print as NOTE: under the item and its modifiers."""
    ticket = lay(make_order())
    assert index(ticket, "  NOTE: well done") == index(ticket, "  + Extra basil") + 1


def test_allergens_are_flagged() -> None:
    """Allergens are flagged with !! in bold in a reversed bar so nobody misses them."""
    line = find(lay(make_order()), "  !! ALLERGENS: gluten, milk")
    assert line.bold and line.inverse


def test_allergy_words_in_an_item_note_are_flagged_as_loud_as_allergens() -> None:
    """A note saying "no nuts" gets its sentence under the item as !! ALLERGY:, bold in a reversed bar."""
    order = make_order(items=[margherita(notes="Well done please. Nut allergy, no pesto.")])
    ticket = lay(order)
    flag = find(ticket, "  !! ALLERGY: Nut allergy, no pesto.")
    allergens = find(ticket, "  !! ALLERGENS: gluten, milk")
    assert (
        (flag.bold, flag.inverse, flag.double)
        == (allergens.bold, allergens.inverse, allergens.double)
        == (
            True,
            True,
            False,
        )
    )
    assert index(ticket, flag.text) == index(ticket, "  NOTE: Well done please. Nut allergy, no pesto.") + 1


def test_allergy_words_in_the_order_note_and_instructions_come_before_the_items() -> None:
    """Order-level allergies print above the first item, so they are read before anything is made."""
    order = make_order(
        notes="Ring twice. COELIAC, keep bread apart!",
        fulfillment={"type": "pickup", "instructions": "Peanuts will kill me"},
    )
    ticket = lay(order)
    first_item = index(ticket, "2 x Margherita")
    flags = [t for t in texts(ticket) if t.startswith("!! ALLERGY:")]
    assert flags == ["!! ALLERGY: Peanuts will kill me", "!! ALLERGY: COELIAC, keep bread apart!"]
    assert all(index(ticket, f) < first_item for f in flags)
    assert all(find(ticket, f).inverse for f in flags)


@pytest.mark.parametrize(
    ("note", "flagged"),
    [
        ("no nuts", True),
        ("Gluten-free base", True),
        ("extra eggs", True),
        ("dairy free", True),
        ("lactose intolerant", True),
        ("Allergies: sesame", True),
        ("shellfish allergy", True),
        ("soya milk", True),
        ("Nutella on the side", False),
        ("eggplant instead", False),
        ("cut into eight", False),
    ],
)
def test_allergy_words_match_whole_words_in_any_case(note: str, flagged: bool) -> None:
    """Whole words only, any case, plurals too: Nutella and eggplant are not allergy words."""
    ticket = lay(make_order(items=[margherita(notes=note, allergens=[])]))
    assert any(t.startswith("  !! ALLERGY:") for t in texts(ticket)) is flagged


def test_the_venues_own_allergy_words_are_flagged_too() -> None:
    """[tickets] allergy_words adds to the built-in list, multi-word ones included."""
    order = make_order(items=[margherita(notes="no pine  kernels, extra chilli", allergens=[])])
    assert not any("ALLERGY" in t for t in texts(lay(order)))
    ticket = lay(order, allergy_words=("pine kernels",))
    assert find(ticket, "  !! ALLERGY: no pine kernels, extra chilli").inverse


def test_emoji_are_named_in_brackets_on_every_output() -> None:
    """One rule for text, ESC/POS and PNG: the ticket model itself carries (birthday cake), never the emoji."""
    ticket = lay(make_order(notes="Birthday 🎂 for Ana 👍🏽"))
    assert " ".join(" ".join(texts(ticket)).split()).count("Birthday (birthday cake) for Ana (thumbs up sign)") == 1
    assert "(birthday cake)" in render_text(ticket)
    assert not any(ord(ch) > 0xFFFF for t in texts(ticket) for ch in t)


def test_sold_out_skus_are_marked() -> None:
    """An item whose sku the POS reported sold out is marked under it; others are not."""
    salad = {"name": "Caesar salad", "sku": "SL-CAES", "quantity": 1, "unit_price": 700, "course": 1}
    order = make_order(items=[margherita(), salad])
    ticket = lay(order, flagged_skus=frozenset({"SL-CAES"}))
    assert index(ticket, "  !! SOLD OUT IN POS") == index(ticket, "1 x Caesar salad") + 1
    assert "  !! SOLD OUT IN POS" not in texts(lay(order))


def test_items_are_grouped_by_course_with_headers() -> None:
    """With several courses the items are grouped in course order under -- COURSE n -- headers."""
    tiramisu = {"name": "Tiramisu", "quantity": 1, "unit_price": 600, "course": 2}
    bread = {"name": "Garlic bread", "quantity": 1, "unit_price": 450, "course": 1}
    water = {"name": "Still water", "quantity": 1, "unit_price": 200}
    ticket = lay(make_order(items=[tiramisu, margherita(), water, bread]))
    order_of = [t for t in texts(ticket) if t.startswith("-- ") or " x " in t]
    assert order_of == [
        "-- COURSE 1 --",
        "2 x Margherita",
        "1 x Garlic bread",
        "-- COURSE 2 --",
        "1 x Tiramisu",
        "-- NO COURSE --",
        "1 x Still water",
    ]


def test_no_course_headers_with_a_single_course() -> None:
    """An order with one course gets no course header."""
    bread = {"name": "Garlic bread", "quantity": 1, "unit_price": 450, "course": 1}
    assert not any(t.startswith("-- COURSE") for t in texts(lay(make_order(items=[margherita(), bread]))))


# Footer


def test_order_note_after_items() -> None:
    """The order note follows the items."""
    ticket = lay(make_order())
    assert index(ticket, "ORDER NOTE: No cutlery") > index(ticket, "  !! ALLERGENS: gluten, milk")


def test_paid_order_says_paid_and_total() -> None:
    """A paid order says PAID and the total in pounds: 2 x (9.50 + 0.50) + 1.00 tip = £21.00."""
    ticket = lay(make_order())
    assert not find(ticket, "PAID").inverse and find(ticket, "PAID").tall
    assert index(ticket, "Total: £21.00") == index(ticket, "PAID") + 1


def test_pending_payment_says_not_paid_in_inverse() -> None:
    """A pending payment prints NOT PAID, reversed, so the counter takes the money."""
    line = find(lay(make_order(payment={"status": "pending", "currency": "GBP"})), "NOT PAID")
    assert line.inverse
    assert line.tall and not line.double


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [(1860, "GBP", "£18.60"), (1860, "EUR", "€18.60"), (5, "USD", "USD 0.05"), (123456, "CHF", "CHF 1,234.56")],
)
def test_money_is_formatted_from_minor_units(amount: int, currency: str, shown: str) -> None:
    """Minor units print with two decimals, £ and € as symbols, other currencies by ISO code."""
    assert format_money(amount, currency) == shown


def test_total_uses_the_orders_currency() -> None:
    """The total is shown in the currency the order was paid in."""
    order = make_order(payment={"status": "paid", "currency": "EUR"})
    assert find(lay(order, currency="EUR"), "Total: €21.00")


def test_received_time_and_order_id_close_the_ticket_with_a_cut() -> None:
    """The last lines are the received time and the order id, and the paper is cut."""
    ticket = lay(make_order())
    assert texts(ticket)[-2:] == ["Received 12:00 23 Nov", "Order ord_01HX3Z9K7Q2M9XA"]
    assert ticket.cut


# Wrapping


def test_long_note_wraps_at_word_boundaries_under_its_indent() -> None:
    """A long item note wraps between words, continuation lines aligned under the note's text."""
    note = "please cut into eight slices and keep the crust extra crispy for the kids"
    ticket = lay(make_order(items=[margherita(notes=note)]), columns=32)
    at = index(ticket, "  NOTE: please cut into eight")
    assert texts(ticket)[at + 1 : at + 4] == [
        "        slices and keep the",
        "        crust extra crispy for",
        "        the kids",
    ]


def test_double_item_wraps_at_half_the_columns() -> None:
    """A double-size item name wraps within columns // 2, continuation under the name."""
    item = margherita(name="Quattro formaggi speciale")
    ticket = lay(make_order(items=[item]), columns=32)
    at = index(ticket, "2 x Quattro")
    assert texts(ticket)[at : at + 3] == ["2 x Quattro", "    formaggi", "    speciale"]
    assert all(len(line.text) <= 16 for line in ticket.lines if line.double)


def test_word_longer_than_the_line_is_broken_not_cut() -> None:
    """A single word longer than the paper is broken across lines, every character kept."""
    word = "Supercalifragilisticexpialidocious-and-more-and-more"
    ticket = lay(make_order(notes=word), columns=32)
    at = index(ticket, "ORDER NOTE:")
    assert "".join(t.strip() for t in texts(ticket)[at + 1 : at + 3]) == word


def test_upper_case_expansion_still_fits_double_lines() -> None:
    """ß becomes SS when a double line is upper-cased; the wrap counts that so nothing overflows."""
    ticket = lay(make_order(items=[margherita(name="ß" * 40)]), columns=32)
    assert all(len(line.text.upper()) <= 16 for line in ticket.lines if line.double)
    assert "".join(line.text for line in ticket.lines if line.double).count("ß") == 40


# Plain-text rendering


def test_render_text_upper_cases_double_lines_and_frames_inverse() -> None:
    """Double lines read upper case; an inverse run is framed by rows of stars; the cut is marked."""
    ticket = Ticket(
        lines=(Line("FALLBACK", inverse=True), Line("2 x Margherita", double=True), Line("  + Extra basil")),
        columns=32,
    )
    assert render_text(ticket).splitlines() == [
        "*" * 32,
        "FALLBACK",
        "*" * 32,
        "2 X MARGHERITA",
        "  + Extra basil",
        "-" * 32,
        "--- cut ---",
    ]


def test_render_text_aligns_center_and_right() -> None:
    """Centred and right-aligned lines are padded with spaces, never with trailing blanks."""
    ticket = Ticket(lines=(Line("ABCD", align="center"), Line("1 of 2", align="right")), columns=32, cut=False)
    assert render_text(ticket) == " " * 14 + "ABCD\n" + " " * 26 + "1 of 2\n"


def test_render_text_wraps_a_hand_built_line_that_is_too_long() -> None:
    """A line wider than the paper is wrapped by the renderer too, keeping its indent."""
    ticket = Ticket(lines=(Line("  + " + "word " * 20),), columns=32, cut=False)
    lines = render_text(ticket).splitlines()
    assert all(len(line) <= 32 for line in lines)
    assert all(line.startswith("  ") for line in lines)
    assert " ".join(line.strip() for line in lines).split() == ["+", *["word"] * 20]


# Width over random orders

_ODD = [*"éøßçłğÉØÇŁĞ🍕👍🏽ﬃŉΐ", " ", "\n", "\u00a0"]
_CHARS = st.one_of(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), st.sampled_from(_ODD))
_LONG_WORD = st.text(
    st.one_of(
        st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp")), st.sampled_from(_ODD[:-3])
    ),
    min_size=33,
    max_size=80,
)


def _text(max_size: int = 500) -> st.SearchStrategy[str]:
    pieces = st.lists(st.one_of(st.text(_CHARS, max_size=40), _LONG_WORD), min_size=1, max_size=3)
    return pieces.map(lambda parts: " ".join(parts)[:max_size]).filter(lambda s: bool(s.strip()))


@st.composite
def _modifiers(draw: st.DrawFn, depth: int = 1) -> list[dict[str, Any]]:
    count = draw(st.integers(0, 2 if depth == 1 else 1))
    return [
        _modifier(
            draw(_text(120)),
            price=draw(st.integers(0, 300)),
            quantity=draw(st.integers(1, 3)),
            sku=draw(st.sampled_from([None, "MOD-A", "MOD-B"])),
            modifiers=draw(_modifiers(depth + 1)) if depth < 3 else [],
        )
        for _ in range(count)
    ]


@st.composite
def random_orders(draw: st.DrawFn) -> Order:
    """Orders with random text (long words, accents, emoji, newlines) in every printed field."""
    kind = draw(st.sampled_from(["pickup", "delivery", "dine_in"]))
    fulfillment: dict[str, Any] = {"type": kind, "instructions": draw(st.none() | _text())}
    if kind == "dine_in":
        fulfillment["table"] = draw(_text(32))
        fulfillment["covers"] = draw(st.none() | st.integers(1, 999))
    if kind == "delivery":
        fulfillment["address"] = {
            "line1": draw(_text()),
            "line2": draw(st.none() | _text()),
            "city": draw(st.none() | _text()),
            "postcode": draw(st.none() | _text(12)),
        }
    items: list[dict[str, Any]] = [
        {
            "name": draw(_text()),
            "sku": draw(st.sampled_from([None, "SKU-1", "SKU-2"])),
            "quantity": draw(st.integers(1, 999)),
            "unit_price": draw(st.integers(0, 2000)),
            "course": draw(st.none() | st.integers(0, 3)),
            "notes": draw(st.none() | _text()),
            "allergens": draw(st.lists(_text(64), max_size=3)),
            "modifiers": draw(_modifiers()),
        }
        for _ in range(draw(st.integers(1, 3)))
    ]
    assume(sum(i["quantity"] * _price(i) for i in items) + 100 <= 100_000_000)
    return make_order(
        source=draw(st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True)),
        display_code=draw(st.none() | st.from_regex(r"[A-Za-z0-9-]{1,8}", fullmatch=True)),
        requested_at=draw(st.none() | st.sampled_from(["2026-03-29T00:30:00Z", "2026-10-25T01:30:00+01:00"])),
        fulfillment=fulfillment,
        customer={"name": draw(_text()), "phone": draw(st.none() | _text(32))},
        items=items,
        notes=draw(st.none() | _text()),
        payment={
            "status": draw(st.sampled_from(["paid", "pending"])),
            "currency": draw(st.sampled_from(["GBP", "EUR", "JPY"])),
        },
    )


_LAYOUT_ARGS = {
    "order": random_orders(),
    "kind": st.sampled_from(TicketKind),
    "columns": st.sampled_from([32, 42, 48]),
    "tz": st.sampled_from([LONDON, ZoneInfo("America/St_Johns"), ZoneInfo("Asia/Kolkata"), ZoneInfo("UTC")]),
    "copy": st.integers(1, 10_000),
    "page": st.none() | st.tuples(st.integers(1, 99), st.integers(99, 999)),
    "late_minutes": st.none() | st.integers(11, 100_000),
    "backup_for": st.none() | st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=64),
    "in_doubt": st.booleans(),
}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**_LAYOUT_ARGS)
def test_every_rendered_line_fits_the_paper(
    order: Order,
    kind: TicketKind,
    columns: int,
    tz: ZoneInfo,
    copy: int,
    page: tuple[int, int] | None,
    late_minutes: int | None,
    backup_for: str | None,
    in_doubt: bool,
) -> None:
    """Whatever the order's text and the ticket's warnings, no rendered line is longer than the printer's columns."""
    ticket = layout_ticket(
        order,
        kind=kind,
        columns=columns,
        tz=tz,
        received_at=RECEIVED,
        copy=copy,
        page=page,
        late_minutes=late_minutes,
        backup_for=backup_for,
        in_doubt=in_doubt,
        flagged_skus=frozenset({"SKU-1", "MOD-A"}),
        allergy_words=("chilli", "pine kernels"),
    )
    for line in ticket.lines:
        assert len(line.text.upper() if line.large else line.text) <= line.width(columns)
    for printed in render_text(ticket).split("\n"):
        assert len(printed) <= columns, printed


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=random_orders(), columns=st.sampled_from([32, 42, 48]))
def test_no_printed_text_is_lost(order: Order, columns: int) -> None:
    """Every non-blank character of every printed field is on the ticket, in order."""
    ticket = lay(order, columns=columns)
    printed = "".join("".join(line.text.split()) for line in ticket.lines)
    fields: list[str] = [source_words(order), order.id]
    fulfillment = order.fulfillment
    address = fulfillment.address
    fields += [fulfillment.table or "", fulfillment.instructions or ""]
    if address is not None:
        fields += [address.line1, address.line2 or "", address.city or "", address.postcode or ""]
    if order.customer is not None:
        fields += [order.customer.name or "", order.customer.phone or ""]
    fields.append(order.notes or "")

    def walk(modifiers: list[Any]) -> None:
        for modifier in modifiers:
            fields.append(modifier.name)
            walk(modifier.modifiers)

    for item in order.items:
        fields += [item.name, item.notes or "", *item.allergens]
        walk(item.modifiers)
    for field in fields:
        assert "".join(spell_emoji(field).split()) in printed


_SHORT_WORD = st.text(
    st.sampled_from([*"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZéøçß", "🍕"]), min_size=1, max_size=10
)
_ANY_WORD = st.one_of(_SHORT_WORD, _LONG_WORD)


def _wordy(max_words: int = 12) -> st.SearchStrategy[str]:
    return st.lists(_ANY_WORD, min_size=1, max_size=max_words).map(lambda words: " ".join(words)[:500].strip())


@st.composite
def wordy_orders(draw: st.DrawFn) -> Order:
    """Orders whose printed fields are words of up to 10 characters, with now and then one far too long."""
    items = [
        {
            "name": draw(_wordy()),
            "quantity": draw(st.integers(1, 999)),
            "unit_price": 100,
            "notes": draw(st.none() | _wordy(30)),
            "allergens": draw(st.lists(_SHORT_WORD, max_size=4)),
            "modifiers": [_modifier(draw(_wordy()), quantity=draw(st.integers(1, 999)))],
        }
        for _ in range(draw(st.integers(1, 3)))
    ]
    return make_order(
        items=items,
        notes=draw(st.none() | _wordy(40)),
        fulfillment={"type": "pickup", "instructions": draw(st.none() | _wordy(20))},
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=wordy_orders(), columns=st.sampled_from([32, 42, 48]))
def test_words_are_never_split_unless_wider_than_the_line(order: Order, columns: int) -> None:
    """Every word of up to 10 characters prints whole at any width; each quantity shares its line with a word."""
    ticket = lay(order, columns=columns)
    tokens = {token for line in ticket.lines for token in line.text.split()}
    texts_ = [order.notes or "", order.fulfillment.instructions or ""]
    for item in order.items:
        texts_ += [item.name, item.notes or "", *item.allergens, *(m.name for m in item.modifiers)]
    for text in texts_:
        for word in spell_emoji(text).split():
            if len(word.upper()) <= 10:  # on a double line ß takes two cells
                assert any(word in token for token in tokens), (word, texts(ticket))
    for item in order.items:
        head = f"{item.quantity} x "
        first = next(line.text for line in ticket.lines if line.text.startswith(head) and line.double)
        assert len(first) > len(head), first


@settings(max_examples=200, deadline=None)
@given(
    text=_wordy(30),
    width=st.integers(16, 48),
    indent=st.integers(0, 8),
    double=st.booleans(),
)
def test_wrap_splits_only_words_longer_than_the_room(text: str, width: int, indent: int, double: bool) -> None:
    """A hanging indent, lines within the width, and only words wider than the room beside the indent split."""
    prefix = " " * indent
    lines = wrap(text, width, first=prefix, rest=prefix, double=double)
    cells = [sum(len(ch.upper()) for ch in line) if double else len(line) for line in lines]
    assert all(c <= width for c in cells)
    assert all(line.startswith(prefix) for line in lines)
    room = width - indent
    pieces = [line[indent:] for line in lines]
    assert "".join("".join(p.split()) for p in pieces) == "".join(text.split())
    for word in text.split():
        size = sum(len(ch.upper()) for ch in word) if double else len(word)
        if size <= room:
            assert any(word in piece.split() for piece in pieces), (word, lines)


# Golden files


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def test_golden_pickup_fallback_48() -> None:
    """A paid ASAP pickup fallback on 80 mm paper renders exactly as the golden file."""
    tiramisu = {
        "name": "Tiramisù",
        "sku": "DS-TIRA",
        "quantity": 1,
        "unit_price": 600,
        "course": 2,
        "allergens": ["egg", "milk", "gluten"],
    }
    order = make_order(
        requested_at="2026-07-13T17:30:00Z",
        items=[margherita(), tiramisu],
        notes="No cutlery please, we are two minutes away 🚲",
    )
    ticket = lay(
        order, columns=48, received_at=datetime(2026, 7, 13, 17, 2, tzinfo=UTC), flagged_skus=frozenset({"DS-TIRA"})
    )
    _golden("pickup_fallback_48.txt", render_text(ticket))


def test_golden_dine_in_reprint_32() -> None:
    """An unpaid dine-in reprint on 58 mm paper renders exactly as the golden file."""
    basil = _modifier("Extra basil", price=50, modifiers=[_modifier("Thai basil instead of sweet", quantity=2)])
    order = make_order(
        fulfillment={"type": "dine_in", "table": "12", "covers": 2},
        customer=None,
        source="qr_table",
        items=[
            margherita(modifiers=[basil], notes="well done, extra crispy crust"),
            {"name": "Crème brûlée", "quantity": 2, "unit_price": 550, "course": 2, "allergens": ["egg", "milk"]},
        ],
        charges={"delivery_fee": 0, "service_charge": 0, "tip": 0},
        payment={"status": "pending", "currency": "GBP"},
        notes=None,
    )
    ticket = lay(order, kind=TicketKind.REPRINT, copy=2, columns=32)
    _golden("dine_in_reprint_32.txt", render_text(ticket))
