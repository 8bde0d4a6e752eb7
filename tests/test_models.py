"""The order model (docs/intake-api.md): every rule names the field it breaks."""

from __future__ import annotations

from typing import Any

import pytest

from agent.domain.errors import OrderInvalid
from agent.domain.models import derive_display_code, parse_order
from tests.conftest import make_order


def errors_of(payload: dict[str, Any], **kwargs: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """Return (loc, msg) of every error the payload raises."""
    with pytest.raises(OrderInvalid) as caught:
        parse_order(payload, venue_id="harbour-kitchen", currency="GBP", **kwargs)
    return [(e.loc, e.msg) for e in caught.value.errors]


class TestOrderModel:
    """Validation of intake payloads."""

    def test_spec_example_is_valid(self) -> None:
        """The sample order priced with its modifier once per line (total 1860) is accepted."""
        order = make_order(total=1860, payment={"status": "paid", "method": "card", "amount": 1860, "currency": "GBP"})
        assert parse_order(order, venue_id="harbour-kitchen").total == 1860

    def test_per_unit_modifier_total_is_valid(self) -> None:
        """A total pricing each modifier per unit of its item (2 x (950 + 50)) is accepted too."""
        assert parse_order(make_order(), venue_id="harbour-kitchen").total == 1910

    def test_wrong_total_names_the_total(self) -> None:
        """A total that does not add up is refused and the message shows what it should be."""
        [(loc, msg)] = errors_of(make_order(total=999))
        assert loc == ("total",)
        assert "1910" in msg and "1860" in msg

    def test_every_field_error_is_listed(self) -> None:
        """Several broken fields are all reported, each with its path."""
        order = make_order(colour="red")
        order["items"][0]["quantity"] = 0
        order["items"][0]["unit_price"] = "950"
        locs = {loc for loc, _ in errors_of(order)}
        assert {("colour",), ("items", 0, "quantity"), ("items", 0, "unit_price")} <= locs

    def test_unknown_field_is_named(self) -> None:
        """An unknown nested field is refused by name (it catches typos)."""
        order = make_order()
        order["customer"]["nmae"] = "Sam"
        assert (("customer", "nmae"), "unknown field 'nmae'") in errors_of(order)

    def test_floats_are_not_money(self) -> None:
        """Money must be integer minor units: 9.5 is refused."""
        order = make_order()
        order["items"][0]["unit_price"] = 9.5
        assert errors_of(order)[0][0] == ("items", 0, "unit_price")

    def test_modifiers_nest_three_deep_at_most(self) -> None:
        """Three levels of modifiers are fine; a fourth is refused on the item's modifiers."""
        leaf: dict[str, Any] = {"name": "d", "quantity": 1, "unit_price": 0, "modifiers": []}
        for name in ("c", "b"):
            leaf = {"name": name, "quantity": 1, "unit_price": 0, "modifiers": [leaf]}
        order = make_order()
        order["items"][0]["modifiers"] = [{"name": "a", "quantity": 1, "unit_price": 0, "modifiers": [leaf]}]
        order["total"] = 1900 + 100 - 190
        order["payment"]["amount"] = order["total"]
        [(loc, msg)] = errors_of(order)
        assert loc == ("items", 0, "modifiers") and "3 levels" in msg

    def test_text_is_trimmed_and_bounded(self) -> None:
        """Strings are trimmed; over 500 characters is refused."""
        order = parse_order(make_order(notes="  No cutlery  "), venue_id="harbour-kitchen")
        assert order.notes == "No cutlery"
        assert errors_of(make_order(notes="x" * 501))[0][0] == ("notes",)

    def test_control_characters_are_refused_but_newline_is_fine(self) -> None:
        """A newline in notes is kept; a tab or NUL is refused."""
        assert parse_order(make_order(notes="line one\nline two"), venue_id="harbour-kitchen").notes
        assert "control characters" in errors_of(make_order(notes="a\tb"))[0][1]

    def test_any_letter_and_emoji_are_accepted(self) -> None:
        """Names in any script and emoji in notes are valid input."""
        order = make_order(notes="Zoë, Øyvind, Straße, Łódź, Ağrı 🍕")
        assert "🍕" in (parse_order(order, venue_id="harbour-kitchen").notes or "")

    def test_times_need_an_offset(self) -> None:
        """created_at without a UTC offset is refused."""
        assert errors_of(make_order(created_at="2026-11-23T12:00:05"))[0][0] == ("created_at",)

    def test_venue_must_match(self) -> None:
        """An order for another venue is refused on venue_id."""
        assert errors_of(make_order(venue_id="elsewhere"))[0][0] == ("venue_id",)

    def test_currency_must_be_the_venues(self) -> None:
        """An order paid in another currency is refused on payment.currency."""
        order = make_order()
        order["payment"]["currency"] = "EUR"
        assert errors_of(order)[0][0] == ("payment", "currency")

    @pytest.mark.parametrize(
        ("fulfillment", "customer", "needle"),
        [
            ({"type": "dine_in"}, None, "table"),
            ({"type": "delivery"}, {"name": "Sam"}, "address"),
            ({"type": "pickup"}, {"phone": "+447700900123"}, "customer.name"),
        ],
        ids=["dine-in-needs-table", "delivery-needs-address", "pickup-needs-name"],
    )
    def test_fields_required_per_fulfilment(self, fulfillment: dict[str, Any], customer: Any, needle: str) -> None:
        """Each fulfilment type requires its own fields."""
        order = make_order(fulfillment=fulfillment, customer=customer)
        assert any(needle in msg for _, msg in errors_of(order))

    def test_dine_in_needs_no_customer(self) -> None:
        """A dine-in order with a table is valid without a customer."""
        order = make_order(fulfillment={"type": "dine_in", "table": "12", "covers": 2}, customer=None)
        assert parse_order(order, venue_id="harbour-kitchen").fulfillment.table == "12"

    def test_display_code_is_derived_when_absent(self) -> None:
        """Without a display code the order gets a stable 8-character one from its id."""
        order = parse_order(make_order(display_code=None), venue_id="harbour-kitchen")
        assert order.display_code == derive_display_code("ord_01HXTEST")
        assert len(order.display_code or "") == 8

    def test_content_hash_ignores_key_order(self) -> None:
        """The same content in another key order hashes the same; other content does not."""
        a = parse_order(make_order(), venue_id="harbour-kitchen")
        b = parse_order(dict(reversed(list(make_order().items()))), venue_id="harbour-kitchen")
        c = parse_order(make_order(notes="other"), venue_id="harbour-kitchen")
        assert a.content_hash() == b.content_hash() != c.content_hash()
