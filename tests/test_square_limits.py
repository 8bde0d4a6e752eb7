"""Square's length limits: the mapping fits every value, visibly, and keeps the full text where it fits.

Pure tests of ``drivers.pos.square_mapping``: the named defects (a long pickup note, a phone typed with
"(0)", a phone without its country code), each limit at and past its edge, and a hypothesis property over
arbitrary valid intake orders: the CreateOrder body always satisfies every row of ``LIMITS``.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from agent.domain.models import Order
from drivers.pos.base import ALREADY_PRINTED_NOTE
from drivers.pos.square_limits import ELLIPSIS, LIMITS, fit, limit_breaches, reach, square_length
from drivers.pos.square_mapping import build_create_order
from tests.conftest import BASE_ORDER

LOCATION = "L8TQ2ZP1Q9XKD"
KEY = "harbour-kitchen:ord_01HXTEST"
CATALOG = {"PZ-MARG": "SQ-VAR-MARG", "MOD-BASIL": "SQ-MOD-BASIL", "DRK-COLA": "SQ-MOD-" + "C" * 185}
E164 = re.compile(r"^\+[1-9]\d{1,14}$")
EMOJI = "\U0001f355"  # one code point, two UTF-16 units
PICKUP_NOTE = "order.fulfillments[0].pickup_details.note"


def order(**changes: Any) -> Order:
    """Return the sample order with top-level ``changes``, validated."""
    data = copy.deepcopy(BASE_ORDER)
    data.update(changes)
    return Order.model_validate(data)


def body_for(
    value: Order | None = None,
    *,
    catalog: dict[str, str] | None = None,
    already_printed: bool = False,
    region: str | None = "GB",
) -> dict[str, Any]:
    """Return the CreateOrder body for ``value`` (the sample order by default) for a venue in ``region``."""
    return build_create_order(
        value or order(),
        location_id=LOCATION,
        idempotency_key=KEY,
        catalog=catalog if catalog is not None else {},
        already_printed=already_printed,
        phone_region=region,
    )


def only(body: dict[str, Any], path: str) -> Any:
    """Return the value at a concrete Square field path (``order.line_items[0].note``) in ``body``."""
    value: Any = body
    for name, index in re.findall(r"([A-Za-z0-9_]+)|\[(\d+)\]", path):
        value = value[int(index)] if index else value[name]
    return value


# ---- the named defects -----------------------------------------------------------------------------------------


def test_long_pickup_note_fits_500_with_a_visible_cut() -> None:
    """A valid order with a 500-character note and instructions is no longer refused: the pickup note is cut at 500.

    Before, instructions and notes were cut at 550 (the delivery limit) for pickup too, and Square answered
    VALUE_TOO_LONG: the order failed as ``rejected``.
    """
    instructions = "Ring the side door and wait. " * 17  # 493 characters
    notes = "N" * 500
    body = body_for(order(fulfillment={"type": "pickup", "instructions": instructions}, notes=notes))
    note = only(body, PICKUP_NOTE)
    assert square_length(note) == 500
    assert note.endswith(ELLIPSIS)
    assert note.startswith(instructions.strip())
    assert limit_breaches(body) == []


def test_delivery_note_keeps_its_own_limit_of_550() -> None:
    """A delivery note may be 550 characters (FulfillmentDeliveryDetails.note), 50 more than a pickup note."""
    fulfillment = {"type": "delivery", "address": {"line1": "1 Quay St"}, "instructions": "I" * 500}
    note = only(
        body_for(order(fulfillment=fulfillment, notes="N" * 500)), "order.fulfillments[0].delivery_details.note"
    )
    assert square_length(note) == 550
    assert note.endswith(ELLIPSIS)


@pytest.mark.parametrize(
    ("typed", "region", "sent"),
    [
        ("+44 (0) 7700 900 123", "GB", "+447700900123"),  # refused by Square before: 20 characters
        ("+44 (0) 7700 900 123", None, "+447700900123"),
        ("07700 900123", "GB", "+447700900123"),
        ("0044 7700 900123", "GB", "+447700900123"),
        ("(415) 555-2671", "US", "+14155552671"),
    ],
)
def test_phone_goes_as_e164(typed: str, region: str | None, sent: str) -> None:
    """The recipient's phone is E.164 (at most 16 characters), placed with the venue's country when typed without."""
    customer = {"name": "Sam Reed", "phone": typed}
    body = body_for(order(customer=customer), region=region)
    assert only(body, "order.fulfillments[0].pickup_details.recipient.phone_number") == sent
    assert "Phone:" not in only(body, PICKUP_NOTE)


@pytest.mark.parametrize(("typed", "region"), [("07700 900123", None), ("ask at the till", "GB"), ("123", "GB")])
def test_phone_that_cannot_be_placed_goes_in_the_note(typed: str, region: str | None) -> None:
    """A number that is not a whole number with a country is left out of the recipient and shown as typed."""
    body = body_for(order(customer={"name": "Sam Reed", "phone": typed}), region=region)
    recipient = only(body, "order.fulfillments[0].pickup_details.recipient")
    assert "phone_number" not in recipient
    assert only(body, PICKUP_NOTE) == f"Phone: {typed}; Ring the side door; No cutlery"


def test_unplaceable_phone_survives_a_cut_note_and_follows_the_marker() -> None:
    """The phone leads the note (after the marker), so cutting a long note never loses how to reach the customer."""
    value = order(
        customer={"name": "Sam Reed", "phone": "ask at the till"},
        fulfillment={"type": "pickup", "instructions": "I" * 500},
        notes="N" * 500,
    )
    note = only(body_for(value, already_printed=True), PICKUP_NOTE)
    assert note.startswith(f"{ALREADY_PRINTED_NOTE} - Phone: ask at the till; III")
    assert square_length(note) == 500


# ---- every other limit -----------------------------------------------------------------------------------------


def test_fit_cuts_by_utf16_units_with_an_ellipsis() -> None:
    """fit keeps text that fits, else cuts (never inside a character) and ends with one ellipsis character."""
    assert fit("order.ticket_name", "x" * 30) == "x" * 30
    assert fit("order.ticket_name", "x" * 31) == "x" * 29 + ELLIPSIS
    cut = fit("order.ticket_name", EMOJI * 20)  # 40 UTF-16 units
    assert cut == EMOJI * 14 + ELLIPSIS and square_length(cut) == 29
    assert fit("order.ticket_name", "word " * 10) == "word word word word word word" + ELLIPSIS


def test_long_item_and_modifier_names_are_cut_and_kept_whole_in_the_line_note() -> None:
    """An ad hoc line's name fits 512 and a flattened modifier name 255; the full names go into the line's note."""
    long_item = "Pizza " + EMOJI * 300  # 300 code points of emoji: 600 UTF-16 units, valid for intake (<= 500)
    parent, child = "P" * 200, "C" * 200
    items = [
        {
            "name": long_item,
            "quantity": 1,
            "unit_price": 1000,
            "notes": "well done",
            "modifiers": [{"name": parent, "unit_price": 0, "modifiers": [{"name": child, "unit_price": 0}]}],
        }
    ]
    body = body_for(order(items=items, charges={}, discounts=[], total=1000))
    line = only(body, "order.line_items[0]")
    assert square_length(line["name"]) <= 512 and line["name"].endswith(ELLIPSIS)
    assert line["modifiers"][0]["name"] == parent
    nested = line["modifiers"][1]["name"]
    assert square_length(nested) == 255 and nested.startswith(f"{parent} > CCC") and nested.endswith(ELLIPSIS)
    assert line["note"] == f"well done; Item: {long_item}; Modifier: {parent} > {child}"
    assert limit_breaches(body) == []


def test_recipient_fields_fit_and_what_cannot_be_cut_is_shown_in_the_note() -> None:
    """display_name is cut at 255 (full name in the note); an email over 255 is left out and shown in the note."""
    name = "Sam " + "R" * 300
    email = EMOJI * 130 + "@example.com"  # 272 UTF-16 units
    body = body_for(order(customer={"name": name, "phone": "+447700900123", "email": email}))
    recipient = only(body, "order.fulfillments[0].pickup_details.recipient")
    assert square_length(recipient["display_name"]) == 255 and recipient["display_name"].endswith(ELLIPSIS)
    assert "email_address" not in recipient
    note = only(body, PICKUP_NOTE)
    assert note.startswith(f"Email: {email}; Ring the side door")
    assert note.endswith(ELLIPSIS)  # the full name followed, past 500: the kitchen ticket has it
    assert limit_breaches(body) == []


def test_address_lines_fit_500_and_spill_into_the_delivery_note() -> None:
    """Address lines are cut at 500 UTF-16 units (intake allows 500 characters, emoji count twice)."""
    line1 = EMOJI * 260
    fulfillment = {"type": "delivery", "address": {"line1": line1, "city": "Bristol"}}
    body = body_for(order(fulfillment=fulfillment, notes=None))
    address = only(body, "order.fulfillments[0].delivery_details.recipient.address")
    assert square_length(address["address_line_1"]) <= 500 and address["address_line_1"].endswith(ELLIPSIS)
    assert address["locality"] == "Bristol"
    assert only(body, "order.fulfillments[0].delivery_details.note").startswith(f"Address: {EMOJI}")


def test_long_discount_name_is_cut_and_shown_whole_on_dine_in_first_line() -> None:
    """A discount name fits 255; its full text goes to the order's free text (dine-in: the first line's note)."""
    discounts = [{"kind": "discount", "code": "C" * 100, "description": "D" * 200, "amount": 190}]
    value = order(fulfillment={"type": "dine_in", "table": "12"}, customer=None, discounts=discounts)
    body = body_for(value)
    name = only(body, "order.discounts[0].name")
    assert square_length(name) == 255 and name.endswith(ELLIPSIS)
    assert only(body, "order.line_items[0].note").startswith(
        f"ORDER: Table 12; No cutlery; Discount: {'D' * 200} ({'C' * 100}); well done"
    )


def test_ticket_name_of_a_long_table_is_cut_and_the_table_is_whole_in_the_first_note() -> None:
    """ "Table " + a 32-character table is 38 characters: cut to 30, the whole table leads the first line's note."""
    table = "Terrace by the big olive tree 12"  # 32 characters, the most intake allows
    body = body_for(order(fulfillment={"type": "dine_in", "table": table}, customer=None))
    assert only(body, "order.ticket_name") == f"Table {table}"[:29] + ELLIPSIS
    assert only(body, "order.line_items[0].note").startswith(f"ORDER: Table {table};")


def test_long_ids_are_hash_shortened_not_cut() -> None:
    """reference_id (40) and idempotency_key (192) are ids: a longer one is shortened stably, never with "…"."""
    long_id = "marketplace:venue:" + "9" * 46
    body = build_create_order(
        order(id=long_id),
        location_id=LOCATION,
        idempotency_key="k" * 300,
        catalog={},
        already_printed=False,
    )
    assert len(body["order"]["reference_id"]) == 40 and ELLIPSIS not in body["order"]["reference_id"]
    assert len(body["idempotency_key"]) == 192
    assert body["order"]["metadata"]["venue_order_id"] == long_id


def test_tip_is_a_total_phase_service_charge_not_an_order_tip() -> None:
    """Square's order tip is read-only: the tip is a non-taxable TOTAL_PHASE service charge named "Tip"."""
    body = body_for(order(charges={"delivery_fee": 0, "service_charge": 0, "tip": 100}))
    assert only(body, "order.service_charges") == [
        {
            "uid": "tip",
            "name": "Tip",
            "amount_money": {"amount": 100, "currency": "GBP"},
            "calculation_phase": "TOTAL_PHASE",
            "taxable": False,
        }
    ]
    assert "tip_money" not in json.dumps(body)


# ---- the table itself ------------------------------------------------------------------------------------------


def _everything_order() -> Order:
    """An order that makes the mapping set every field LIMITS names (catalog ids, metadata, both fulfilments)."""
    return order(
        fulfillment={
            "type": "delivery",
            "address": {"line1": "1 Quay St", "line2": "Flat 2", "city": "B", "postcode": "BS1"},
        },
        charges={"delivery_fee": 250, "service_charge": 125, "tip": 100},
        discounts=[
            {"kind": "discount", "code": "SUMMER10", "description": "10% off", "amount": 190},
            {"kind": "loyalty", "pos_id": "SQ-DISC-STAFF", "amount": 10},
        ],
        items=[
            *BASE_ORDER["items"],
            {"name": "Tap water", "quantity": 1, "unit_price": 0, "modifiers": [{"name": "Ice", "unit_price": 0}]},
        ],
        total=2275,
    )


def test_every_row_of_the_table_names_a_field_the_mapping_sets() -> None:
    """Each LIMITS path reaches a value in a real body, so no row is a typo that checks nothing."""
    delivery = body_for(_everything_order(), catalog=CATALOG)
    pickup = body_for(order(customer={"name": "Sam", "phone": "+447700900123", "email": "s@example.com"}))
    unreached = [path for path in LIMITS if not list(reach(delivery, path)) and not list(reach(pickup, path))]
    assert unreached == []


def test_each_kind_of_breach_is_found_with_squares_code_and_field() -> None:
    """limit_breaches names Square's field and ErrorCode for too long, too short, too many entries and bad keys."""
    body = body_for()
    body["order"]["ticket_name"] = "T" * 31
    body["order"]["line_items"][0]["quantity"] = ""
    body["order"]["metadata"] = {f"k{i}": "v" for i in range(11)}
    body["order"]["line_items"][0]["metadata"] = {"bad key": "v", "k" * 61: "v", "sku": "v" * 256}
    found = {(b.field, b.code) for b in limit_breaches(body)}
    assert found == {
        ("order.ticket_name", "VALUE_TOO_LONG"),
        ("order.line_items[0].quantity", "VALUE_TOO_SHORT"),
        ("order.metadata", "TOO_MANY_MAP_ENTRIES"),
        ("order.line_items[0].metadata.bad key", "VALUE_REGEX_MISMATCH"),
        (f"order.line_items[0].metadata.{'k' * 61}", "MAP_KEY_LENGTH_TOO_LONG"),
        ("order.line_items[0].metadata.sku", "VALUE_TOO_LONG"),
    }


# ---- arbitrary valid intake orders -----------------------------------------------------------------------------

# Text a customer or platform may send: anything but control characters (newline allowed), often at intake's
# maximum of 500 characters, with emoji (two UTF-16 units each), accents and CJK.
_CHARS = st.characters(exclude_categories=("Cc", "Cs"), include_characters="\n")
_PIECES = st.sampled_from(["a", "word ", "é", EMOJI, "汉字", "\n", "Ring the bell; ", "&<>\"'"])


def _text(max_size: int = 500, min_size: int = 0) -> st.SearchStrategy[str]:
    repeated = st.builds(lambda piece, n: (piece * n)[:max_size], _PIECES, st.integers(1, max_size))
    text = st.one_of(st.text(_CHARS, max_size=min(max_size, 60)), repeated).map(str.strip)
    # Intake strips surrounding whitespace; a required text left empty becomes one letter instead.
    return text.map(lambda s: s if len(s) >= min_size else "x")


def _price(entry: dict[str, Any]) -> int:
    return int(entry["unit_price"]) + sum(m.get("quantity", 1) * _price(m) for m in entry.get("modifiers", []))


@st.composite
def _modifiers(draw: st.DrawFn, depth: int = 1) -> list[dict[str, Any]]:
    return [
        {
            "name": draw(_text(min_size=1)),
            "sku": draw(st.sampled_from([None, "MOD-BASIL", "DRK-COLA", "MOD-OTHER"])),
            "quantity": draw(st.sampled_from([1, 2, 999])),
            "unit_price": draw(st.integers(0, 5)),
            "modifiers": draw(_modifiers(depth + 1)) if depth < 3 else [],
        }
        for _ in range(draw(st.integers(0, 2 if depth == 1 else 1)))
    ]


@st.composite
def square_orders(draw: st.DrawFn) -> Order:
    """Return an arbitrary valid intake order, leaning on the longest texts and deepest nesting intake allows."""
    kind = draw(st.sampled_from(["pickup", "delivery", "dine_in"]))
    fulfillment: dict[str, Any] = {"type": kind, "instructions": draw(st.none() | _text())}
    if kind == "dine_in":
        fulfillment["table"] = draw(_text(32, min_size=1))
        fulfillment["covers"] = draw(st.none() | st.integers(1, 999))
    if kind == "delivery":
        fulfillment["address"] = {
            "line1": draw(_text(min_size=1)),
            "line2": draw(st.none() | _text()),
            "city": draw(st.none() | _text()),
            "postcode": draw(st.none() | _text()),
        }
    phone = st.one_of(
        st.from_regex(r"(\+44 \(0\) |0|\+1 |00 49 )[0-9 ()-]{6,14}", fullmatch=True), st.text(_CHARS, max_size=32)
    )
    customer = {
        "name": draw(_text(min_size=1)) if kind != "dine_in" else draw(st.none() | _text()),
        "phone": draw(st.none() | phone.map(lambda p: p.strip()[:32])),
        "email": draw(st.none() | _text(254)),
    }
    items = [
        {
            "name": draw(_text(min_size=1)),
            "sku": draw(st.sampled_from([None, "PZ-MARG", "PZ-OTHER", "S" * 64])),
            "quantity": draw(st.sampled_from([1, 2, 999])),
            "unit_price": draw(st.integers(0, 2000)),
            "notes": draw(st.none() | _text()),
            "allergens": draw(st.lists(_text(64, min_size=1), max_size=30)),
            "modifiers": draw(_modifiers()),
        }
        for _ in range(draw(st.integers(1, 3)))
    ]
    charges = {"delivery_fee": draw(st.integers(0, 500)), "service_charge": draw(st.integers(0, 500)), "tip": 100}
    discounts = [
        {
            "kind": draw(st.sampled_from(["discount", "loyalty", "gift_card", "stamp_card"])),
            "code": draw(st.none() | _text()),
            "description": draw(st.none() | _text()),
            "pos_id": draw(st.sampled_from([None, "SQ-DISC-STAFF"])),
            "amount": 1,
        }
        for _ in range(draw(st.integers(0, 20)))
    ]
    total = sum(i["quantity"] * _price(i) for i in items) + sum(charges.values()) - len(discounts)
    assume(total <= 100_000_000)
    data = copy.deepcopy(BASE_ORDER)
    data.update(
        id=draw(st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True)),
        source=draw(st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True)),
        display_code=draw(st.from_regex(r"[A-Za-z0-9-]{1,8}", fullmatch=True)),
        requested_at=draw(st.none() | st.just("2026-06-01T19:30:00+01:00")),
        fulfillment=fulfillment,
        customer=customer,
        items=items,
        charges=charges,
        discounts=discounts,
        payment={"status": "paid", "method": "card", "amount": max(total, 0), "currency": "GBP"},
        total=total,
        notes=draw(st.none() | _text()),
    )
    return Order.model_validate(data)


LIMIT_PROPERTY = settings(
    max_examples=150,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@LIMIT_PROPERTY
@given(
    value=square_orders(),
    catalog=st.sampled_from([{}, CATALOG]),
    already_printed=st.booleans(),
    region=st.sampled_from([None, "GB", "US", "DE"]),
)
def test_every_mapped_request_satisfies_every_limit(
    value: Order, catalog: dict[str, str], already_printed: bool, region: str | None
) -> None:
    """Whatever a valid order holds, the CreateOrder body breaks no Square limit, and no contact detail is lost."""
    body = build_create_order(
        value,
        location_id=LOCATION,
        idempotency_key=f"harbour-kitchen:{value.id}",
        catalog=catalog,
        already_printed=already_printed,
        phone_region=region,
    )
    assert limit_breaches(body) == []
    assert json.loads(json.dumps(body)) == body
    event(f"some value cut to fit: {ELLIPSIS in json.dumps(body, ensure_ascii=False)}")
    # The numbers again, written out here without the table or its walker.
    sent = body["order"]
    assert square_length(body["idempotency_key"]) <= 192 and square_length(sent["reference_id"]) <= 40
    assert square_length(sent["ticket_name"]) <= 30
    assert len(sent["metadata"]) <= 10
    for line in sent["line_items"]:
        assert 1 <= len(line["quantity"]) <= 12
        assert square_length(line.get("name", "")) <= 512 and square_length(line.get("note", "")) <= 2000
        assert all(square_length(m.get("name", "")) <= 255 for m in line.get("modifiers", []))
    assert all(square_length(d.get("name", "")) <= 255 for d in sent.get("discounts", []))
    for fulfillment in sent.get("fulfillments", []):
        details = fulfillment.get("pickup_details") or fulfillment["delivery_details"]
        most = 500 if "pickup_details" in fulfillment else 550
        assert square_length(details.get("note", "")) <= most
        recipient = details["recipient"]
        if "phone_number" in recipient:
            assert E164.match(recipient["phone_number"]) and len(recipient["phone_number"]) <= 17
        elif value.customer and value.customer.phone:
            # Not placeable as E.164: shown to staff, whole, near the start of the note.
            assert f"Phone: {value.customer.phone}" in details["note"]
        if value.customer and value.customer.email and "email_address" not in recipient:
            assert "Email: " in details["note"]
