"""The Square Orders API mapping as pure functions: CreateOrder bodies, error classification, the probe."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from agent.domain.models import Order
from agent.domain.states import ErrorClass
from drivers.pos.base import ALREADY_PRINTED_NOTE, Injected, InjectResult, Permanent, ReadinessState, Transient
from drivers.pos.square_answers import TAX_HINT, classify_error, classify_probe
from drivers.pos.square_mapping import build_create_order, reference_id, square_idempotency_key

LOCATION = "L8TQ2ZP1Q9XKD"
KEY = "harbour-kitchen:ord_01HXTEST"
GBP = "GBP"

BASE: dict[str, Any] = {
    "schema_version": 1,
    "id": "ord_01HXTEST",
    "venue_id": "harbour-kitchen",
    "source": "web",
    "display_code": "K7Q2M9XA",
    "created_at": "2026-11-23T12:00:05+00:00",
    "requested_at": None,
    "fulfillment": {"type": "pickup", "instructions": "Ring the side door"},
    "customer": {"name": "Sam Reed", "phone": "+447700900123", "email": "sam@example.com"},
    "items": [
        {
            "name": "Margherita",
            "sku": "PZ-MARG",
            "quantity": 2,
            "unit_price": 950,
            "notes": "well done",
            "allergens": ["gluten", "milk"],
            "modifiers": [{"name": "Extra basil", "sku": "MOD-BASIL", "quantity": 1, "unit_price": 50}],
        }
    ],
    "charges": {"delivery_fee": 0, "service_charge": 0, "tip": 100},
    "discounts": [{"kind": "discount", "code": "SUMMER10", "description": "10% off", "amount": 190}],
    "payment": {"status": "paid", "method": "card", "amount": 1910, "currency": "GBP"},
    "total": 1910,
    "notes": "No cutlery",
}

# The CreateOrder body for BASE with no catalog, written from Square's CreateOrder reference: an ad hoc line
# (name + base_price_money), quantity as a string, integer minor units, a PICKUP fulfilment scheduled ASAP,
# the tip as a TOTAL_PHASE service charge (Square carries tips on payments) and an ORDER-scoped fixed discount.
EXPECTED_PICKUP: dict[str, Any] = {
    "idempotency_key": "harbour-kitchen:ord_01HXTEST",
    "order": {
        "location_id": "L8TQ2ZP1Q9XKD",
        "reference_id": "ord_01HXTEST",
        "source": {"name": "ONLINE/web"},
        "ticket_name": "K7Q2M9XA Sam Reed",
        "line_items": [
            {
                "uid": "line-1",
                "quantity": "2",
                "name": "Margherita",
                "base_price_money": {"amount": 950, "currency": "GBP"},
                "note": "well done; Allergens: gluten, milk",
                "modifiers": [
                    {"quantity": "1", "name": "Extra basil", "base_price_money": {"amount": 50, "currency": "GBP"}}
                ],
                "metadata": {"sku": "PZ-MARG"},
            }
        ],
        "pricing_options": {"auto_apply_taxes": True, "auto_apply_discounts": False},
        "metadata": {
            "venue_order_id": "ord_01HXTEST",
            "source": "web",
            "venue_id": "harbour-kitchen",
            "display_code": "K7Q2M9XA",
        },
        "fulfillments": [
            {
                "uid": "fulfillment-1",
                "type": "PICKUP",
                "pickup_details": {
                    "recipient": {
                        "display_name": "Sam Reed",
                        "phone_number": "+447700900123",
                        "email_address": "sam@example.com",
                    },
                    "schedule_type": "ASAP",
                    "note": "Ring the side door; No cutlery",
                },
            }
        ],
        "service_charges": [
            {
                "uid": "tip",
                "name": "Tip",
                "amount_money": {"amount": 100, "currency": "GBP"},
                "calculation_phase": "TOTAL_PHASE",
                "taxable": False,
            }
        ],
        "discounts": [
            {
                "uid": "discount-1",
                "name": "10% off (SUMMER10)",
                "type": "FIXED_AMOUNT",
                "amount_money": {"amount": 190, "currency": "GBP"},
                "scope": "ORDER",
            }
        ],
    },
}


def order_with(**changes: Any) -> Order:
    """Return BASE with top-level ``changes``, validated."""
    data = copy.deepcopy(BASE)
    data.update(changes)
    return Order.model_validate(data)


def body_for(
    order: Order | None = None,
    *,
    catalog: dict[str, str] | None = None,
    already_printed: bool = False,
    key: str = KEY,
) -> dict[str, Any]:
    """Return the CreateOrder body for ``order`` (BASE by default)."""
    return build_create_order(
        order or order_with(),
        location_id=LOCATION,
        idempotency_key=key,
        catalog=catalog or {},
        already_printed=already_printed,
    )


def amounts(value: Any) -> list[Any]:
    """Return every ``amount`` inside a Money object anywhere in ``value``."""
    found: list[Any] = []
    if isinstance(value, dict):
        if "amount" in value and "currency" in value:
            found.append(value["amount"])
        for child in value.values():
            found.extend(amounts(child))
    elif isinstance(value, list):
        for child in value:
            found.extend(amounts(child))
    return found


# ---- the CreateOrder body ------------------------------------------------------------------------------------


def test_pickup_asap_ad_hoc_body_matches_the_reference_payload() -> None:
    """The sample order becomes exactly the CreateOrder body written from the Square reference."""
    assert body_for() == EXPECTED_PICKUP


def test_money_is_integer_minor_units_and_survives_json() -> None:
    """Every amount is an int (never a float or a string), and the body round-trips through JSON unchanged."""
    body = body_for(order_with(charges={"delivery_fee": 250, "service_charge": 125, "tip": 100}, total=2285))
    found = amounts(body)
    assert found and all(type(a) is int for a in found)
    assert json.loads(json.dumps(body)) == body


def test_catalog_line_and_modifier_use_catalog_object_ids() -> None:
    """A SKU mapped in the catalog becomes catalog_object_id (no ad hoc name), still priced as the customer paid."""
    body = body_for(catalog={"PZ-MARG": "SQ-VAR-MARG", "MOD-BASIL": "SQ-MOD-BASIL"})
    assert body["order"]["line_items"] == [
        {
            "uid": "line-1",
            "quantity": "2",
            "catalog_object_id": "SQ-VAR-MARG",
            "base_price_money": {"amount": 950, "currency": "GBP"},
            "note": "well done; Allergens: gluten, milk",
            "modifiers": [
                {
                    "quantity": "1",
                    "catalog_object_id": "SQ-MOD-BASIL",
                    "base_price_money": {"amount": 50, "currency": "GBP"},
                }
            ],
            "metadata": {"sku": "PZ-MARG"},
        }
    ]


def test_unmapped_sku_and_no_sku_lines_are_ad_hoc() -> None:
    """A line whose SKU is not in the catalog, or that has no SKU, is ad hoc: name and price, no catalog id."""
    items = [
        {"name": "Diavola", "sku": "PZ-DIAV", "quantity": 1, "unit_price": 1100},
        {"name": "Tap water", "quantity": 3, "unit_price": 0},
    ]
    order = order_with(items=items, charges={}, discounts=[], total=1100)
    lines = body_for(order, catalog={"PZ-MARG": "SQ-VAR-MARG"})["order"]["line_items"]
    assert lines == [
        {
            "uid": "line-1",
            "quantity": "1",
            "name": "Diavola",
            "base_price_money": {"amount": 1100, "currency": "GBP"},
            "metadata": {"sku": "PZ-DIAV"},
        },
        {"uid": "line-2", "quantity": "3", "name": "Tap water", "base_price_money": {"amount": 0, "currency": "GBP"}},
    ]


def test_nested_modifiers_are_flattened_with_readable_names_and_quantities() -> None:
    """Nested choices become flat Square modifiers named "Parent > Child", quantities multiplied per item."""
    modifiers = [
        {
            "name": "Make it a meal",
            "quantity": 1,
            "unit_price": 300,
            "modifiers": [
                {
                    "name": "Drink",
                    "quantity": 2,
                    "unit_price": 0,
                    "modifiers": [{"name": "Cola", "sku": "DRK-COLA", "quantity": 1, "unit_price": 20}],
                }
            ],
        }
    ]
    items = [{"name": "Burger", "quantity": 1, "unit_price": 900, "modifiers": modifiers}]
    order = order_with(items=items, charges={}, discounts=[], total=1240)
    line = body_for(order, catalog={"DRK-COLA": "SQ-MOD-COLA"})["order"]["line_items"][0]
    assert line["modifiers"] == [
        {"quantity": "1", "name": "Make it a meal", "base_price_money": {"amount": 300, "currency": "GBP"}},
        {"quantity": "2", "name": "Make it a meal > Drink", "base_price_money": {"amount": 0, "currency": "GBP"}},
        {"quantity": "2", "catalog_object_id": "SQ-MOD-COLA", "base_price_money": {"amount": 20, "currency": "GBP"}},
    ]
    # Square's own arithmetic (base x modifier quantity x line quantity) gives the order's modifier price.
    per_unit = sum(int(m["quantity"]) * m["base_price_money"]["amount"] for m in line["modifiers"])
    assert per_unit == 340


def test_scheduled_pickup_keeps_the_requested_offset() -> None:
    """A pre-order for pickup is SCHEDULED with pickup_at the requested time, RFC 3339 with its offset."""
    body = body_for(order_with(requested_at="2026-06-01T19:30:00+01:00"))
    details = body["order"]["fulfillments"][0]["pickup_details"]
    assert details["schedule_type"] == "SCHEDULED"
    assert details["pickup_at"] == "2026-06-01T19:30:00+01:00"
    assert "deliver_at" not in details


def test_scheduled_delivery_with_address_fee_and_recipient() -> None:
    """A delivery is a DELIVERY fulfilment: recipient with address, deliver_at, and the fee as a service charge."""
    fulfillment = {
        "type": "delivery",
        "address": {"line1": "1 Quay St", "line2": "Flat 2", "city": "Bristol", "postcode": "BS1 4DJ"},
        "instructions": "Ring the side door",
    }
    order = order_with(
        fulfillment=fulfillment,
        requested_at="2026-11-23T18:45:00-05:00",
        charges={"delivery_fee": 250, "service_charge": 0, "tip": 0},
        discounts=[],
        total=2250,
        notes=None,
    )
    body = body_for(order)
    assert body["order"]["fulfillments"] == [
        {
            "uid": "fulfillment-1",
            "type": "DELIVERY",
            "delivery_details": {
                "recipient": {
                    "display_name": "Sam Reed",
                    "phone_number": "+447700900123",
                    "email_address": "sam@example.com",
                    "address": {
                        "address_line_1": "1 Quay St",
                        "address_line_2": "Flat 2",
                        "locality": "Bristol",
                        "postal_code": "BS1 4DJ",
                    },
                },
                "schedule_type": "SCHEDULED",
                "deliver_at": "2026-11-23T18:45:00-05:00",
                "note": "Ring the side door",
            },
        }
    ]
    assert body["order"]["service_charges"] == [
        {
            "uid": "delivery-fee",
            "name": "Delivery fee",
            "amount_money": {"amount": 250, "currency": "GBP"},
            "calculation_phase": "SUBTOTAL_PHASE",
            "taxable": False,
        }
    ]


def test_asap_delivery_has_no_deliver_at() -> None:
    """An ASAP delivery leaves deliver_at to Square (now + prep time)."""
    fulfillment = {"type": "delivery", "address": {"line1": "1 Quay St"}}
    details = body_for(order_with(fulfillment=fulfillment))["order"]["fulfillments"][0]["delivery_details"]
    assert details["schedule_type"] == "ASAP"
    assert "deliver_at" not in details
    assert details["recipient"]["address"] == {"address_line_1": "1 Quay St"}


def test_dine_in_has_no_fulfilment_and_names_the_table() -> None:
    """Dine-in is not a pickup: no fulfilment, the table is the ticket name, table and notes lead the first line."""
    order = order_with(
        fulfillment={"type": "dine_in", "table": "12", "covers": 2, "instructions": "By the window"},
        customer=None,
    )
    body = body_for(order)["order"]
    assert "fulfillments" not in body
    assert body["ticket_name"] == "Table 12"
    assert body["line_items"][0]["note"] == (
        "ORDER: Table 12, 2 covers; By the window; No cutlery; well done; Allergens: gluten, milk"
    )


def test_service_charge_delivery_fee_and_tip_are_separate_service_charges() -> None:
    """Service charge and delivery fee apply after the subtotal; the tip after tax; zero charges are left out."""
    order = order_with(charges={"delivery_fee": 0, "service_charge": 125, "tip": 100}, total=2035)
    charges = body_for(order)["order"]["service_charges"]
    assert [(c["name"], c["amount_money"]["amount"], c["calculation_phase"]) for c in charges] == [
        ("Service charge", 125, "SUBTOTAL_PHASE"),
        ("Tip", 100, "TOTAL_PHASE"),
    ]
    assert all(c["taxable"] is False for c in charges)


def test_no_charges_no_discounts_means_no_such_keys() -> None:
    """An order without charges or discounts sends neither list."""
    body = body_for(order_with(charges={}, discounts=[], total=2000))["order"]
    assert "service_charges" not in body
    assert "discounts" not in body


def test_discount_with_pos_id_references_the_catalog_and_names_fall_back() -> None:
    """A discount with a pos_id references the seller's catalog discount; others are named description/code/kind."""
    discounts = [
        {"kind": "loyalty", "pos_id": "SQ-DISC-STAFF", "description": "Staff", "amount": 100},
        {"kind": "discount", "code": "WELCOME", "amount": 50},
        {"kind": "gift_card", "amount": 40},
    ]
    order = order_with(discounts=discounts, total=1910)
    assert body_for(order)["order"]["discounts"] == [
        {
            "uid": "discount-1",
            "catalog_object_id": "SQ-DISC-STAFF",
            "amount_money": {"amount": 100, "currency": "GBP"},
            "scope": "ORDER",
        },
        {
            "uid": "discount-2",
            "name": "WELCOME",
            "type": "FIXED_AMOUNT",
            "amount_money": {"amount": 50, "currency": "GBP"},
            "scope": "ORDER",
        },
        {
            "uid": "discount-3",
            "name": "Gift card",
            "type": "FIXED_AMOUNT",
            "amount_money": {"amount": 40, "currency": "GBP"},
            "scope": "ORDER",
        },
    ]


def test_reference_id_is_the_order_id_or_a_stable_40_char_form() -> None:
    """reference_id is the order id up to 40 chars; longer ids shorten deterministically with a hash suffix."""
    assert reference_id("ord_01HXTEST") == "ord_01HXTEST"
    exact = "x" * 40
    assert reference_id(exact) == exact
    long_id = "marketplace:venue-harbour-kitchen:order:0001234567890123456789"
    other = long_id[:-1] + "8"
    short = reference_id(long_id)
    assert len(short) == 40
    assert short == reference_id(long_id)
    assert short.startswith(long_id[:27])
    assert reference_id(other) != short
    assert body_for(order_with(id=long_id))["order"]["reference_id"] == short
    assert body_for(order_with(id=long_id))["order"]["metadata"]["venue_order_id"] == long_id


def test_idempotency_key_is_stable_and_at_most_192_chars() -> None:
    """The CreateOrder key is the inject key itself, or a stable hash-shortened form past 192 chars."""
    assert square_idempotency_key(KEY) == KEY
    long_key = "k" * 300
    assert len(square_idempotency_key(long_key)) == 192
    assert square_idempotency_key(long_key) == square_idempotency_key(long_key)
    assert body_for(key=long_key)["idempotency_key"] == square_idempotency_key(long_key)


def test_already_printed_marker_leads_ticket_name_fulfilment_and_line_notes() -> None:
    """After a fallback ticket the marker starts the fulfilment note and every line note; the ticket name says so."""
    order = order_with(items=[*BASE["items"], {"name": "Cola", "quantity": 1, "unit_price": 0}])
    body = body_for(order, already_printed=True)["order"]
    assert body["ticket_name"] == "ALREADY PRINTED K7Q2M9XA Sam\u2026"  # Square allows 30 characters
    note = body["fulfillments"][0]["pickup_details"]["note"]
    assert note == f"{ALREADY_PRINTED_NOTE} - Ring the side door; No cutlery"
    assert body["line_items"][0]["note"] == f"{ALREADY_PRINTED_NOTE} - well done; Allergens: gluten, milk"
    assert body["line_items"][1]["note"] == ALREADY_PRINTED_NOTE
    assert body["metadata"]["already_printed"] == "true"


def test_already_printed_dine_in_marker_comes_first() -> None:
    """Dine-in carries the marker at the start of its first line note, before the table."""
    order = order_with(fulfillment={"type": "dine_in", "table": "4"}, notes=None)
    body = body_for(order, already_printed=True)["order"]
    assert body["ticket_name"] == "ALREADY PRINTED Table 4"
    assert body["line_items"][0]["note"].startswith(f"{ALREADY_PRINTED_NOTE} - ORDER: Table 4; well done")


def test_without_marker_no_note_mentions_it() -> None:
    """A normal injection carries no trace of the marker."""
    assert ALREADY_PRINTED_NOTE not in json.dumps(body_for())
    assert "already_printed" not in body_for()["order"]["metadata"]


# ---- answers -------------------------------------------------------------------------------------------------


def envelope(category: str, code: str, detail: str | None = None, field: str | None = None) -> dict[str, Any]:
    """Return Square's error envelope with one error."""
    error: dict[str, Any] = {"category": category, "code": code}
    if detail is not None:
        error["detail"] = detail
    if field is not None:
        error["field"] = field
    return {"errors": [error]}


NGINX_502 = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
SENT = body_for(catalog={"PZ-MARG": "SQ-VAR-MARG", "MOD-BASIL": "SQ-MOD-BASIL"})
CATALOG = {"PZ-MARG": "SQ-VAR-MARG", "MOD-BASIL": "SQ-MOD-BASIL"}


@pytest.mark.parametrize(
    ("status", "body", "retry_after", "kind", "error_class", "words"),
    [
        (200, {"order": {"id": "CAISEM123", "state": "OPEN"}}, None, Injected, None, ""),
        (200, {"order": {}}, None, Transient, None, "without an order id"),
        (429, envelope("RATE_LIMIT_ERROR", "RATE_LIMITED"), 7.0, Transient, None, "limiting"),
        (400, envelope("RATE_LIMITED_ERROR", "RATE_LIMITED"), None, Transient, None, "limiting"),
        (500, envelope("API_ERROR", "INTERNAL_SERVER_ERROR", "boom"), None, Transient, None, "INTERNAL_SERVER_ERROR"),
        (503, envelope("API_ERROR", "SERVICE_UNAVAILABLE"), 3.0, Transient, None, "server error"),
        (502, NGINX_502, None, Transient, None, "non-JSON body: 502 Bad Gateway"),
        (401, envelope("AUTHENTICATION_ERROR", "ACCESS_TOKEN_EXPIRED", "expired"), None, Permanent, "auth", "expired"),
        (403, envelope("AUTHENTICATION_ERROR", "INSUFFICIENT_SCOPES"), None, Permanent, "auth", "access_token"),
        (401, b"Unauthorized", None, Permanent, "auth", "Unauthorized"),
        (
            400,
            envelope("INVALID_REQUEST_ERROR", "INVALID_VALUE", "Bad quantity", "order.line_items[0].quantity"),
            None,
            Permanent,
            "rejected",
            "INVALID_VALUE: Bad quantity (field order.line_items[0].quantity)",
        ),
        (
            400,
            envelope(
                "INVALID_REQUEST_ERROR",
                "VALUE_EMPTY",
                "Field must not be blank",
                "order.line_items[0].applied_taxes[0].tax_uid",
            ),
            None,
            Permanent,
            "rejected",
            TAX_HINT,
        ),
        (
            400,
            envelope("INVALID_REQUEST_ERROR", "INVALID_VALUE", "There is no tax on this order with uid STATE_TAX"),
            None,
            Permanent,
            "rejected",
            TAX_HINT,
        ),
        (
            404,
            envelope(
                "INVALID_REQUEST_ERROR",
                "NOT_FOUND",
                "Object `SQ-VAR-MARG` not found.",
                "order.line_items[0].catalog_object_id",
            ),
            None,
            Permanent,
            "menu",
            "(SKU PZ-MARG)",
        ),
        (
            404,
            envelope("INVALID_REQUEST_ERROR", "NOT_FOUND", "Location `L-X` not found.", "order.location_id"),
            None,
            Permanent,
            "rejected",
            "pos.square.location_id",
        ),
        (
            400,
            envelope("INVALID_REQUEST_ERROR", "INVALID_VALUE", "Item `PZ-MARG` is sold out at this location."),
            None,
            Permanent,
            "unavailable",
            "sold out",
        ),
        (
            400,
            envelope("INVALID_REQUEST_ERROR", "IDEMPOTENCY_KEY_REUSED", "used before", "idempotency_key"),
            None,
            Permanent,
            "rejected",
            "may already be in Square",
        ),
        (404, b"<html><body>Not Found</body></html>", None, Permanent, "rejected", "not Square JSON"),
        (400, {"message": "something else"}, None, Permanent, "rejected", "not Square JSON"),
        (302, b"", None, Transient, None, "empty body"),
    ],
)
def test_error_classification_table(
    status: int, body: object, retry_after: float | None, kind: type, error_class: str | None, words: str
) -> None:
    """Every Square answer maps to the result docs/square.md names, with Square's own words in the reason."""
    result: InjectResult = classify_error(status, body, retry_after, catalog=CATALOG, sent=SENT)
    assert isinstance(result, kind), result
    if isinstance(result, Injected):
        assert result.pos_reference == "CAISEM123"
        return
    assert isinstance(result, Transient | Permanent)
    assert words in result.reason
    assert result.status == status
    if isinstance(result, Permanent):
        assert result.error_class == ErrorClass(str(error_class))
    else:
        assert result.retry_after == retry_after


def test_not_found_names_the_sku_from_the_modifier_path_or_the_detail() -> None:
    """A NOT_FOUND points at a modifier or only names the id in its detail: the SKU is still found."""
    modifier = envelope(
        "INVALID_REQUEST_ERROR", "NOT_FOUND", "gone", "order.line_items[0].modifiers[0].catalog_object_id"
    )
    result = classify_error(404, modifier, None, catalog=CATALOG, sent=SENT)
    assert isinstance(result, Permanent)
    assert (result.error_class, result.skus) == (ErrorClass.MENU, ("MOD-BASIL",))
    detail_only = envelope("INVALID_REQUEST_ERROR", "NOT_FOUND", "Object `SQ-MOD-BASIL` not found.")
    result = classify_error(404, detail_only, None, catalog=CATALOG)
    assert isinstance(result, Permanent)
    assert result.skus == ("MOD-BASIL",)


def test_classification_accepts_raw_bytes_of_json() -> None:
    """The body may be given undecoded; JSON bytes are read as the envelope."""
    raw = json.dumps(envelope("AUTHENTICATION_ERROR", "UNAUTHORIZED")).encode()
    result = classify_error(401, raw, None)
    assert isinstance(result, Permanent)
    assert result.error_class is ErrorClass.AUTH


def test_several_errors_are_all_shown() -> None:
    """With several errors every one is in the reason (up to three)."""
    body = {
        "errors": [
            {"category": "INVALID_REQUEST_ERROR", "code": "INVALID_VALUE", "field": "order.a"},
            {"category": "INVALID_REQUEST_ERROR", "code": "VALUE_TOO_LONG", "field": "order.b"},
        ]
    }
    result = classify_error(400, body, None)
    assert isinstance(result, Permanent)
    assert "INVALID_VALUE (field order.a); VALUE_TOO_LONG (field order.b)" in result.reason


@pytest.mark.parametrize(
    ("status", "body", "state"),
    [
        (200, {"location": {"id": LOCATION, "status": "ACTIVE"}}, ReadinessState.READY),
        (200, {"location": {"id": LOCATION, "status": "INACTIVE"}}, ReadinessState.NOT_READY),
        (401, envelope("AUTHENTICATION_ERROR", "UNAUTHORIZED"), ReadinessState.AUTH_REQUIRED),
        (403, envelope("AUTHENTICATION_ERROR", "FORBIDDEN"), ReadinessState.AUTH_REQUIRED),
        (404, envelope("INVALID_REQUEST_ERROR", "NOT_FOUND"), ReadinessState.NOT_READY),
        (503, b"<html>down</html>", ReadinessState.UNREACHABLE),
        (429, envelope("RATE_LIMIT_ERROR", "RATE_LIMITED"), ReadinessState.UNREACHABLE),
    ],
)
def test_probe_classification(status: int, body: object, state: ReadinessState) -> None:
    """The location lookup says ready, not ready, auth required or unreachable; ready vouches for credentials."""
    readiness = classify_probe(status, body, 12.5, LOCATION)
    assert readiness.state is state
    assert readiness.latency_ms == 12.5
    if state is ReadinessState.READY:
        assert readiness.conditions == {"authenticated": True, "location_active": True}
