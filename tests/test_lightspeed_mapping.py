"""The Lightspeed K-Series contract as pure functions: request bodies, answers, notifications, readiness.

Example payloads are written from the Order and Pay OpenAPI description (https://api-portal.lsk.lightspeed.app).
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agent.domain.config import AccountProfiles, LightspeedKSettings
from agent.domain.models import Order
from agent.domain.states import ErrorClass
from drivers.pos.base import ALREADY_PRINTED_NOTE, Accepted, Permanent, Transient
from drivers.pos.lightspeed_answers import classify_answer
from drivers.pos.lightspeed_limits import FIELD_LIMITS, ORDER_NOTE_MAX, fit, limit_violations, utf16_len
from drivers.pos.lightspeed_mapping import (
    DEFAULT_MAX_ATTEMPT_MS,
    LOCAL_PATH,
    TO_GO_PATH,
    MappingError,
    build_order_request,
    e164_phone,
    json_amount,
    local_time_text,
    major_units,
    third_party_reference,
)
from drivers.pos.lightspeed_notifications import (
    WebhookOutcome,
    classify_restriction,
    classify_webhook,
    readiness_from,
)

LONDON = ZoneInfo("Europe/London")
NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
KEY = "harbour-kitchen:ord_01HXTEST:r1"
SETTINGS = LightspeedKSettings(
    business_location_id=45454565682155,
    endpoint_id="VENUE-AGENT",
    account_profiles=AccountProfiles(pickup="TAKEAWAY", delivery="DELIVERY", dine_in="LOCALORDER"),
)

PICKUP: dict[str, Any] = {
    "schema_version": 1,
    "id": "ord_01HXTEST",
    "source": "web",
    "display_code": "K7Q2M9XA",
    "created_at": "2026-11-23T12:00:05+00:00",
    "requested_at": None,
    "fulfillment": {"type": "pickup"},
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
    "charges": {"tip": 100},
    "payment": {"status": "paid", "method": "card", "amount": 2100, "currency": "GBP"},
    "total": 2100,
    "notes": "No cutlery",
}


def make_order(base: dict[str, Any] = PICKUP, **changes: Any) -> Order:
    """Return a valid order from ``base`` with top-level ``changes``, its total recomputed."""
    data = copy.deepcopy(base)
    data.update(changes)
    return Order.model_validate({**data, "total": _total(data)})


def _total(data: dict[str, Any]) -> int:
    def mod_price(m: dict[str, Any]) -> int:
        return int(m.get("quantity", 1)) * (
            int(m.get("unit_price", 0)) + sum(mod_price(s) for s in m.get("modifiers", []))
        )

    items = sum(
        i["quantity"] * (i["unit_price"] + sum(mod_price(m) for m in i.get("modifiers", []))) for i in data["items"]
    )
    charges = data.get("charges", {})
    extras = sum(charges.get(k, 0) for k in ("delivery_fee", "service_charge", "tip"))
    return int(items + extras - sum(d["amount"] for d in data.get("discounts", [])))


def build(order: Order, **kwargs: Any) -> tuple[str, dict[str, Any]]:
    """Build the request with the test defaults."""
    options: dict[str, Any] = {
        "settings": SETTINGS,
        "idempotency_key": KEY,
        "already_printed": False,
        "tz": LONDON,
        "now": NOW,
    }
    options.update(kwargs)
    return build_order_request(order, **options)


# --- thirdPartyReference ---------------------------------------------------------------------------


def test_reference_is_the_key_when_it_fits() -> None:
    """A short printable key is sent as it is, so the webhook's reference finds the order directly."""
    assert third_party_reference(KEY) == KEY
    assert third_party_reference("x" * 48) == "x" * 48


def test_long_reference_is_a_readable_prefix_and_a_hash() -> None:
    """A long key becomes 48 chars: its start, a dash, 16 hex chars; different keys stay different."""
    key = "harbour-kitchen-on-the-quay:ord_01HXVERYLONGORDERIDENTIFIER0001:r12"
    ref = third_party_reference(key)
    assert len(ref) == 48
    assert ref.startswith("harbour-kitchen-on-the-quay:ord")
    assert ref == third_party_reference(key)
    assert ref != third_party_reference(key[:-1] + "3")


def test_non_ascii_key_is_hashed() -> None:
    """A key with characters outside printable ASCII is hashed even when short (no surprise encodings)."""
    ref = third_party_reference("café:ord_1")
    assert ref.startswith("caf_:ord_1-")
    assert ref.isascii()


def test_empty_key_is_an_error() -> None:
    """There is no reference for an empty key."""
    with pytest.raises(ValueError, match="empty"):
        third_party_reference("")


@given(st.text(min_size=1, max_size=200))
def test_reference_always_fits_and_is_stable(key: str) -> None:
    """Every key maps to 1-48 printable ASCII chars, the same on every attempt."""
    ref = third_party_reference(key)
    assert 1 <= len(ref) <= 48
    assert all("!" <= ch <= "~" for ch in ref)
    assert ref == third_party_reference(key)


# --- the to-go pickup ------------------------------------------------------------------------------


def test_pickup_to_go_body() -> None:
    """A paid ASAP pickup becomes the documented toGo body, field for field."""
    path, body = build(make_order())
    assert path == TO_GO_PATH == "/o/op/1/order/toGo"
    assert body == {
        "businessLocationId": 45454565682155,
        "thirdPartyReference": KEY,
        "endpointId": "VENUE-AGENT",
        "accountProfileCode": "TAKEAWAY",
        "collectionCode": "K7Q2M9XA",
        "customerInfo": {
            "firstName": "Sam",
            "lastName": "Reed",
            "email": "sam@example.com",
            "contactNumberAsE164": "+447700900123",
        },
        "orderNote": "Pickup: ASAP | 2x Margherita: ALLERGENS gluten, milk; well done | Note: No cutlery",
        "maxTimeToAttemptOrderDeliverToPos": DEFAULT_MAX_ATTEMPT_MS,
        "payment": {"paymentMethod": "STOREKIT", "paymentAmount": 21, "tipAmount": 1},
        "items": [{"sku": "PZ-MARG", "quantity": 2, "subItems": [{"sku": "MOD-BASIL", "quantity": 1}]}],
    }
    assert DEFAULT_MAX_ATTEMPT_MS >= 60_000


def test_body_is_plain_json() -> None:
    """The body serialises with the standard encoder (no Decimal, no datetime objects)."""
    _, body = build(make_order(requested_at="2026-11-23T18:00:00+00:00"))
    assert json.loads(json.dumps(body)) == body


def test_nested_modifiers_become_nested_sub_items() -> None:
    """Product modifiers nest as subItems with their own quantity; no prices are sent for menu items."""
    items = [
        {
            "name": "Burger",
            "sku": "BRG",
            "quantity": 1,
            "unit_price": 1000,
            "modifiers": [
                {
                    "name": "Cheese",
                    "sku": "CHS",
                    "quantity": 2,
                    "unit_price": 100,
                    "modifiers": [{"name": "Smoked", "sku": "SMK", "unit_price": 20}],
                }
            ],
        }
    ]
    _, body = build(make_order(items=items, payment={**PICKUP["payment"], "amount": 1240}))
    assert body["items"] == [
        {
            "sku": "BRG",
            "quantity": 1,
            "subItems": [{"sku": "CHS", "quantity": 2, "subItems": [{"sku": "SMK", "quantity": 1}]}],
        }
    ]


def test_item_without_sku_is_a_menu_error_naming_it() -> None:
    """The POS takes items by SKU only."""
    items = [{**PICKUP["items"][0], "sku": None}]
    with pytest.raises(MappingError, match=r"item 1 \('Margherita'\) has no SKU") as caught:
        build(make_order(items=items))
    assert caught.value.error_class is ErrorClass.MENU


def test_modifier_without_sku_is_a_menu_error_naming_it() -> None:
    """A modifier without SKU names itself and its item."""
    items = [{**PICKUP["items"][0], "modifiers": [{"name": "No onions"}]}]
    with pytest.raises(MappingError, match=r"modifier 'No onions' of item 1 \('Margherita'\) has no SKU") as caught:
        build(make_order(items=items, payment={**PICKUP["payment"], "amount": 2000}))
    assert caught.value.error_class is ErrorClass.MENU


def test_sku_longer_than_25_is_a_menu_error() -> None:
    """The API caps sku at 25 characters."""
    items = [{**PICKUP["items"][0], "sku": "S" * 26}]
    with pytest.raises(MappingError, match="longer than the 25") as caught:
        build(make_order(items=items))
    assert caught.value.error_class is ErrorClass.MENU
    assert caught.value.skus == ("S" * 26,)


def test_missing_location_or_endpoint_is_an_error() -> None:
    """Without business location and webhook endpoint there is nothing to send."""
    with pytest.raises(MappingError, match="business_location_id and endpoint_id"):
        build(make_order(), settings=LightspeedKSettings(business_location_id=1))


def test_max_attempt_time_is_at_least_a_minute() -> None:
    """A smaller wish is raised to the API's 60000 ms minimum."""
    _, body = build(make_order(), max_attempt_ms=5_000)
    assert body["maxTimeToAttemptOrderDeliverToPos"] == 60_000
    _, body = build(make_order(), max_attempt_ms=120_000)
    assert body["maxTimeToAttemptOrderDeliverToPos"] == 120_000


# --- delivery with fee, service charge and discount ------------------------------------------------

DELIVERY: dict[str, Any] = {
    **PICKUP,
    "fulfillment": {
        "type": "delivery",
        "address": {"line1": "1 Quay Street", "line2": "Flat 2", "city": "Bristol", "postcode": "BS1 4DJ"},
        "instructions": "Ring the side door",
    },
    "charges": {"delivery_fee": 350, "service_charge": 125, "tip": 0},
    "discounts": [{"kind": "discount", "code": "SUMMER10", "pos_id": None, "description": "10% off", "amount": 200}],
    "payment": {"status": "paid", "method": "card", "amount": 2275, "currency": "GBP"},
}


def test_delivery_body_has_address_and_extra_lines() -> None:
    """Delivery fee, service charge and discount go on their SKUs with the amount as customItemPrice."""
    path, body = build(make_order(DELIVERY))
    assert path == TO_GO_PATH
    assert body["accountProfileCode"] == "DELIVERY"
    assert body["deliveryAddress"] == {
        "addressLine1": "1 Quay Street",
        "addressLine2": "Flat 2",
        "zip": "BS1 4DJ",
        "city": "Bristol",
    }
    assert body["items"][1:] == [
        {"sku": "STOREKIT_DELIVERY", "quantity": 1, "customItemPrice": 3.5},
        {"sku": "STOREKIT_SERVICE_CHARGE", "quantity": 1, "customItemPrice": 1.25},
        {"sku": "STOREKIT_DISCOUNT", "quantity": 1, "customItemPrice": 2},
    ]
    assert body["payment"] == {"paymentMethod": "STOREKIT", "paymentAmount": 22.75}
    assert "Instructions: Ring the side door" in body["orderNote"]
    assert "tableNumber" not in body


def test_delivery_address_leaves_out_missing_parts() -> None:
    """An address without line2 or postcode sends only what it has."""
    data = copy.deepcopy(DELIVERY)
    data["fulfillment"]["address"] = {"line1": "1 Quay Street", "city": "Bristol"}
    _, body = build(make_order(data))
    assert body["deliveryAddress"] == {"addressLine1": "1 Quay Street", "city": "Bristol"}


def test_zero_charges_add_no_lines() -> None:
    """No fee, no service charge and no discount: only the menu items."""
    _, body = build(make_order())
    assert [line["sku"] for line in body["items"]] == ["PZ-MARG"]


def test_custom_extra_skus_from_settings() -> None:
    """The extra lines use the SKUs configured for the venue."""
    settings = SETTINGS.model_copy(
        update={"delivery_fee_sku": "DLV", "service_charge_sku": "SVC", "discount_sku": "DSC", "payment_method": "WEB"}
    )
    _, body = build(make_order(DELIVERY), settings=settings)
    assert [line["sku"] for line in body["items"]] == ["PZ-MARG", "DLV", "SVC", "DSC"]
    assert body["payment"]["paymentMethod"] == "WEB"


def test_native_discount_with_pos_id_becomes_item_discount_code() -> None:
    """With native_discounts a discount that has a pos_id rides on a menu line as discountCode, not on extras."""
    data = copy.deepcopy(DELIVERY)
    data["discounts"][0]["pos_id"] = "SUMMER10"
    settings = SETTINGS.model_copy(update={"native_discounts": True})
    _, body = build(make_order(data), settings=settings)
    assert body["items"][0]["discountCode"] == "SUMMER10"
    assert [line["sku"] for line in body["items"]] == ["PZ-MARG", "STOREKIT_DELIVERY", "STOREKIT_SERVICE_CHARGE"]
    assert all("discountCode" not in line for line in body["items"][1:])


def test_native_discount_without_pos_id_falls_back_to_the_sku_line() -> None:
    """No pos_id: the discount SKU line, as without native discounts."""
    settings = SETTINGS.model_copy(update={"native_discounts": True})
    _, body = build(make_order(DELIVERY), settings=settings)
    assert "discountCode" not in body["items"][0]
    assert body["items"][-1] == {"sku": "STOREKIT_DISCOUNT", "quantity": 1, "customItemPrice": 2}


def test_pos_id_is_ignored_without_native_discounts() -> None:
    """native_discounts off: even a discount with a pos_id is a SKU line."""
    data = copy.deepcopy(DELIVERY)
    data["discounts"][0]["pos_id"] = "SUMMER10"
    _, body = build(make_order(data))
    assert "discountCode" not in body["items"][0]
    assert body["items"][-1]["sku"] == "STOREKIT_DISCOUNT"


def test_only_one_native_discount_per_line() -> None:
    """An item line carries one discountCode: a second native discount goes on the SKU line."""
    data = copy.deepcopy(DELIVERY)
    data["discounts"] = [
        {"kind": "discount", "code": "A", "pos_id": "STAFF", "amount": 100},
        {"kind": "loyalty", "code": "B", "pos_id": "LOYAL", "amount": 100},
    ]
    settings = SETTINGS.model_copy(update={"native_discounts": True})
    _, body = build(make_order(data), settings=settings)
    assert body["items"][0]["discountCode"] == "STAFF"
    assert body["items"][-1] == {"sku": "STOREKIT_DISCOUNT", "quantity": 1, "customItemPrice": 1}


THREE_LINES = [
    {"name": "Soup", "sku": "SOUP", "quantity": 1, "unit_price": 600},
    {"name": "Steak", "sku": "STEAK", "quantity": 2, "unit_price": 2200},
    {"name": "Cake", "sku": "CAKE", "quantity": 1, "unit_price": 700},
]


def _discounted(pos_id: str, amount: int, **settings: Any) -> dict[str, Any]:
    data = copy.deepcopy(PICKUP)
    data.update(items=THREE_LINES, charges={}, discounts=[{"kind": "discount", "pos_id": pos_id, "amount": amount}])
    data["payment"] = {"status": "paid", "amount": 6700 - amount, "currency": "GBP"}
    _, body = build(make_order(data), settings=SETTINGS.model_copy(update={"native_discounts": True, **settings}))
    return body


def test_an_amount_discount_rides_on_one_line_only() -> None:
    """A 5.00-off code on every line would take 15.00 off three lines: it goes on one, the largest (the steaks)."""
    body = _discounted("FIVE_OFF", 500)
    assert [line.get("discountCode") for line in body["items"]] == [None, "FIVE_OFF", None]


def test_a_percentage_discount_rides_on_every_line() -> None:
    """A code configured as a percentage takes the same share of each line: on every item line."""
    body = _discounted("TENPCT", 670, percentage_discount_codes=["TENPCT"])
    assert [line.get("discountCode") for line in body["items"]] == ["TENPCT", "TENPCT", "TENPCT"]
    assert all(line["sku"] != "STOREKIT_DISCOUNT" for line in body["items"])


def test_an_amount_discount_larger_than_any_line_goes_on_the_discount_sku_line() -> None:
    """No line can absorb 50.00 (the largest is 44.00): the exact amount goes on the discount SKU line instead."""
    body = _discounted("BIG_OFF", 5000)
    assert all("discountCode" not in line for line in body["items"])
    assert body["items"][-1] == {"sku": "STOREKIT_DISCOUNT", "quantity": 1, "customItemPrice": 50}


def test_equal_lines_give_the_amount_discount_to_the_first() -> None:
    data = copy.deepcopy(PICKUP)
    twins = [{"name": n, "sku": n, "quantity": 1, "unit_price": 500} for n in ("A", "B")]
    data.update(items=twins, charges={}, discounts=[{"kind": "discount", "pos_id": "OFF", "amount": 100}])
    data["payment"] = {"status": "paid", "amount": 900, "currency": "GBP"}
    _, body = build(make_order(data), settings=SETTINGS.model_copy(update={"native_discounts": True}))
    assert [line.get("discountCode") for line in body["items"]] == ["OFF", None]


# --- the local dine-in order -----------------------------------------------------------------------

DINE_IN: dict[str, Any] = {
    **PICKUP,
    "source": "qr_table",
    "display_code": "T12A",
    "fulfillment": {"type": "dine_in", "table": "12", "covers": 3},
    "customer": None,
    "items": [
        {"name": "Soup", "sku": "SOUP", "quantity": 1, "unit_price": 600, "course": 1},
        {"name": "Steak", "sku": "STEAK", "quantity": 2, "unit_price": 2200, "course": 2},
        {"name": "Water", "sku": "WATER", "quantity": 1, "unit_price": 0},
    ],
    "charges": {},
    "payment": {"status": "paid", "method": "card", "amount": 5000, "currency": "GBP"},
    "notes": None,
}


def test_dine_in_is_a_local_order_with_table_covers_and_courses() -> None:
    """dine_in goes to /order/local with tableNumber, clientCount and each item's course."""
    path, body = build(make_order(DINE_IN))
    assert path == LOCAL_PATH == "/o/op/1/order/local"
    assert body["tableNumber"] == "12"
    assert body["clientCount"] == 3
    assert body["accountProfileCode"] == "LOCALORDER"
    assert body["customerInfo"] == {"firstName": "Guest"}
    assert body["items"] == [
        {"sku": "SOUP", "quantity": 1, "course": 1},
        {"sku": "STEAK", "quantity": 2, "course": 2},
        {"sku": "WATER", "quantity": 1},
    ]
    assert "deliveryAddress" not in body
    assert body["orderNote"] == "Dine in: ASAP"


def test_to_go_items_carry_no_course() -> None:
    """course exists on local item lines only."""
    data = copy.deepcopy(DINE_IN)
    data["fulfillment"] = {"type": "pickup"}
    data["customer"] = {"name": "Sam"}
    _, body = build(make_order(data))
    assert all("course" not in line for line in body["items"])


def test_covers_default_to_one_and_table_number_is_normalised() -> None:
    """No covers: clientCount 1; a table written "07" is POS table 7."""
    data = copy.deepcopy(DINE_IN)
    data["fulfillment"] = {"type": "dine_in", "table": "07"}
    _, body = build(make_order(data))
    assert body["clientCount"] == 1
    assert body["tableNumber"] == "7"


@pytest.mark.parametrize("table", ["T12", "Terrace 4", "12a", "١٢"])
def test_non_numeric_table_is_a_clear_error(table: str) -> None:
    """K-Series tables are numbered: anything else cannot be placed on the floor plan."""
    data = copy.deepcopy(DINE_IN)
    data["fulfillment"] = {"type": "dine_in", "table": table}
    with pytest.raises(MappingError, match="not a table number") as caught:
        build(make_order(data))
    assert caught.value.error_class is ErrorClass.REJECTED


# --- customer --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Sam Reed", {"firstName": "Sam", "lastName": "Reed"}),
        ("Cher", {"firstName": "Cher"}),
        ("Anna  van der  Berg", {"firstName": "Anna", "lastName": "van der Berg"}),
        ("", {"firstName": "Guest"}),
    ],
)
def test_customer_name_is_split(name: str, expected: dict[str, str]) -> None:
    """The first word is the first name, the rest the last name; no name is "Guest"."""
    data = copy.deepcopy(DINE_IN)
    data["customer"] = {"name": name}
    _, body = build(make_order(data))
    assert body["customerInfo"] == expected


def test_long_first_name_is_cut_to_128_visibly_and_noted_in_full() -> None:
    """firstName is 1-128 characters: cut with "..." at 128, and the whole name goes in the order note."""
    data = copy.deepcopy(DINE_IN)
    data["customer"] = {"name": "A" * 300}
    _, body = build(make_order(data))
    assert body["customerInfo"]["firstName"] == "A" * 125 + "..."
    assert f"Customer: {'A' * 300}" in body["orderNote"]


def test_names_are_measured_in_utf16_units_as_the_java_api_counts() -> None:
    """An emoji counts 2 toward the 128 (Java String.length()); the cut never splits a character."""
    data = copy.deepcopy(DINE_IN)
    data["customer"] = {"name": "Zoë " + "🍕" * 100}
    _, body = build(make_order(data))
    last = body["customerInfo"]["lastName"]
    assert last == "🍕" * 62 + "..."
    assert utf16_len(last) == 127 <= FIELD_LIMITS["customerInfo.lastName"]
    assert body["customerInfo"]["firstName"] == "Zoë"
    assert body["orderNote"].endswith(f"Customer: Zoë {'🍕' * 100}")


def test_a_short_name_is_sent_whole_and_not_repeated_in_the_note() -> None:
    """Nothing cut, nothing added: the note stays as it was."""
    _, body = build(make_order())
    assert body["customerInfo"]["firstName"] == "Sam" and "Customer:" not in body["orderNote"]


@pytest.mark.parametrize(
    ("phone", "e164"),
    [
        ("+447700900123", "+447700900123"),
        ("+44 7700 900123", "+447700900123"),
        ("+1 (415) 555-2671", "+14155552671"),
        ("07700 900123", None),
        ("0044 7700 900123", None),
        ("+0 123", None),
        ("call me", None),
    ],
)
def test_e164_phone(phone: str, e164: str | None) -> None:
    """Only a number already written with +country code is normalised to E.164."""
    assert e164_phone(phone) == e164


def test_phone_that_is_not_e164_goes_in_the_note() -> None:
    """A national number is left out of customerInfo and shown to staff in the note instead."""
    _, body = build(make_order(customer={"name": "Sam Reed", "phone": "07700 900123"}))
    assert "contactNumberAsE164" not in body["customerInfo"]
    assert body["orderNote"].endswith("Phone: 07700 900123")


def test_a_national_number_is_placed_in_the_venues_country() -> None:
    """With venue.country GB, "07700 900123" and "+44 (0) 7700 900 123" are sent as +447700900123, not noted."""
    for typed in ("07700 900123", "+44 (0) 7700 900 123"):
        _, body = build(make_order(customer={"name": "Sam Reed", "phone": typed}), phone_region="GB")
        assert body["customerInfo"]["contactNumberAsE164"] == "+447700900123"
        assert "Phone:" not in body.get("orderNote", "")


# --- collection code and times ---------------------------------------------------------------------


def test_a_collection_code_over_eight_is_not_sent_but_noted() -> None:
    """collectionCode is at most 8: a longer one (intake stops it, a code built in Python need not) is not cut
    into another order's code; Lightspeed generates one and the note carries ours."""
    order = make_order().model_copy(update={"display_code": "ABCDEFGHIJK"})
    _, body = build(order)
    assert "collectionCode" not in body
    assert "Code: ABCDEFGHIJK" in body["orderNote"]


def test_no_display_code_means_no_collection_code() -> None:
    """Without a code Lightspeed generates one."""
    order = make_order().model_copy(update={"display_code": None})
    _, body = build(order)
    assert "collectionCode" not in body


def test_future_requested_time_is_the_collection_time() -> None:
    """A pre-order for later gets orderCollectionTimeAsIso8601, in venue time with its offset."""
    order = make_order(requested_at="2026-11-23T18:30:00+00:00")
    _, body = build(order)
    assert body["orderCollectionTimeAsIso8601"] == "2026-11-23T18:30:00+00:00"
    assert body["orderNote"].startswith("Pickup: Mon 23 Nov 18:30 GMT")


def test_past_requested_time_is_left_out_but_kept_in_the_note() -> None:
    """The API rejects past times; staff still see when it was wanted."""
    order = make_order(requested_at="2026-11-23T11:30:00+00:00")
    _, body = build(order)
    assert "orderCollectionTimeAsIso8601" not in body
    assert body["orderNote"].startswith("Pickup: Mon 23 Nov 11:30 GMT")


def test_requested_time_within_a_minute_is_left_out() -> None:
    """A time a few seconds ahead would be past when Lightspeed reads it."""
    order = make_order(requested_at=(NOW + timedelta(seconds=30)).isoformat())
    _, body = build(order)
    assert "orderCollectionTimeAsIso8601" not in body
    order = make_order(requested_at=(NOW + timedelta(minutes=2)).isoformat())
    _, body = build(order)
    assert "orderCollectionTimeAsIso8601" in body


@pytest.mark.parametrize(
    ("utc", "shown"),
    [
        ("2026-03-28T13:30:00+00:00", "Sat 28 Mar 13:30 GMT"),
        ("2026-03-29T00:30:00+00:00", "Sun 29 Mar 00:30 GMT"),
        ("2026-03-29T01:30:00+00:00", "Sun 29 Mar 02:30 BST"),
        ("2026-03-29T13:30:00+00:00", "Sun 29 Mar 14:30 BST"),
        ("2026-10-24T13:30:00+00:00", "Sat 24 Oct 14:30 BST"),
        ("2026-10-25T00:30:00+00:00", "Sun 25 Oct 01:30 BST"),
        ("2026-10-25T01:30:00+00:00", "Sun 25 Oct 01:30 GMT"),
        ("2026-10-25T13:30:00+00:00", "Sun 25 Oct 13:30 GMT"),
    ],
)
def test_note_time_is_venue_local_across_dst(utc: str, shown: str) -> None:
    """Europe/London changes at 01:00 UTC on the last Sunday of March and October."""
    assert local_time_text(datetime.fromisoformat(utc), LONDON) == shown


def test_collection_time_carries_the_summer_offset() -> None:
    """After the March change the collection time is written with +01:00."""
    now = datetime(2026, 3, 29, 9, 0, tzinfo=UTC)
    order = make_order(requested_at="2026-03-29T13:30:00+00:00")
    _, body = build(order, now=now)
    assert body["orderCollectionTimeAsIso8601"] == "2026-03-29T14:30:00+01:00"
    assert body["orderNote"].startswith("Pickup: Sun 29 Mar 14:30 BST")


# --- the note --------------------------------------------------------------------------------------


def test_already_printed_marker_comes_first() -> None:
    """A fallback-printed order is marked so the kitchen does not make it twice."""
    _, body = build(make_order(), already_printed=True)
    assert body["orderNote"].startswith(f"{ALREADY_PRINTED_NOTE} | Pickup: ASAP")


def test_unpaid_order_has_no_payment_and_says_so() -> None:
    """Pending payment: no payment object, the amount to collect in the note."""
    order = make_order(payment={"status": "pending", "amount": 2100, "currency": "GBP"})
    _, body = build(order)
    assert "payment" not in body
    assert "NOT PAID: collect 21.00 GBP" in body["orderNote"]


def test_no_tip_means_no_tip_amount() -> None:
    """tipAmount is sent only when there is a tip."""
    order = make_order(charges={}, payment={**PICKUP["payment"], "amount": 2000})
    _, body = build(order)
    assert body["payment"] == {"paymentMethod": "STOREKIT", "paymentAmount": 20}


def test_note_is_bounded_and_keeps_the_marker() -> None:
    """A very long set of notes is cut to ORDER_NOTE_MAX, marker and time intact, with an ellipsis."""
    items = [
        {
            "name": f"Dish {n}",
            "sku": f"D{n}",
            "quantity": 1,
            "unit_price": 100,
            "notes": "x" * 400,
            "allergens": ["nuts"],
        }
        for n in range(6)
    ]
    order = make_order(items=items, charges={}, payment={**PICKUP["payment"], "amount": 600}, notes="y" * 500)
    _, body = build(order, already_printed=True)
    note = body["orderNote"]
    assert len(note) <= ORDER_NOTE_MAX
    assert note.startswith(f"{ALREADY_PRINTED_NOTE} | Pickup: ASAP | 1x Dish 0: ALLERGENS nuts; ")
    assert note.endswith("...")


def test_note_flattens_newlines() -> None:
    """Notes are one line: newlines in customer text become spaces."""
    _, body = build(make_order(notes="No cutlery\nthanks"))
    assert "Note: No cutlery thanks" in body["orderNote"]


# --- exact amounts ---------------------------------------------------------------------------------


def test_amounts_are_exact_in_json() -> None:
    """0.1 + 0.2 stays 0.1 and 0.2 on the wire, and 18.60 is written 18.6."""
    data = copy.deepcopy(DELIVERY)
    data["charges"] = {"delivery_fee": 10, "service_charge": 20, "tip": 0}
    data["discounts"] = []
    data["items"] = [{"name": "Tea", "sku": "TEA", "quantity": 1, "unit_price": 1830}]
    data["payment"] = {"status": "paid", "amount": 1860, "currency": "GBP"}
    _, body = build(make_order(data))
    text = json.dumps(body)
    assert '"customItemPrice": 0.1}' in text
    assert '"customItemPrice": 0.2}' in text
    assert '"paymentAmount": 18.6' in text
    assert "0.30000000000000004" not in text


def test_three_decimal_currency() -> None:
    """KWD has three decimals: 1234 fils is 1.234."""
    order = make_order(payment={"status": "paid", "amount": 1234, "currency": "KWD"})
    _, body = build(order)
    assert json.dumps(body["payment"]) == '{"paymentMethod": "STOREKIT", "paymentAmount": 1.234, "tipAmount": 0.1}'


def test_zero_decimal_currency() -> None:
    """JPY has no minor unit: 1860 yen is 1860."""
    order = make_order(payment={"status": "paid", "amount": 1860, "currency": "JPY"})
    _, body = build(order)
    assert body["payment"] == {"paymentMethod": "STOREKIT", "paymentAmount": 1860, "tipAmount": 100}
    assert isinstance(body["payment"]["paymentAmount"], int)


def test_major_units_use_the_currency_exponent() -> None:
    """The exponent comes from ISO 4217, 2 by default."""
    assert major_units(1860, "GBP") == Decimal("18.60")
    assert major_units(1860, "JPY") == Decimal(1860)
    assert major_units(1860, "BHD") == Decimal("1.860")
    assert major_units(5, "XYZ") == Decimal("0.05")


@given(st.integers(min_value=0, max_value=100_000_000), st.sampled_from(["GBP", "JPY", "KWD", "CLF"]))
def test_amounts_round_trip_exactly(minor: int, currency: str) -> None:
    """Any amount json.dumps writes reads back as exactly minor / 10**exponent."""
    expected = major_units(minor, currency)
    written = json.dumps(json_amount(expected))
    assert Decimal(written) == expected


# --- the create call's answer ----------------------------------------------------------------------

VALIDATION_400 = {
    "timestamp": "2023-11-07T19:15:05.043+0000",
    "status": 400,
    "error": "Bad Request",
    "message": "Validation failed for object='toGoOrder'. Error count: 1",
    "errors": [
        {
            "codes": ["NotNull.toGoOrder.thirdPartyReference", "NotNull.thirdPartyReference", "NotNull"],
            "arguments": [{"codes": ["toGoOrder.thirdPartyReference"], "defaultMessage": "thirdPartyReference"}],
            "defaultMessage": "must not be null",
            "objectName": "toGoOrder",
            "field": "thirdPartyReference",
            "bindingFailure": False,
            "code": "NotNull",
        }
    ],
    "path": "/o/op/1/order/toGo",
}
SKU_400 = {
    **VALIDATION_400,
    "errors": [
        {
            "defaultMessage": "size must be between 0 and 25",
            "objectName": "toGoOrder",
            "field": "items[0].sku",
            "rejectedValue": "PIZZA-MARGHERITA-LARGE-EXTRA",
            "code": "Size",
        }
    ],
}
NGINX_502 = (
    "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>"
)


def test_ok_is_accepted_awaiting_the_webhook() -> None:
    """200 {"status":"ok"} is accepted for delivery, not yet in the POS."""
    assert classify_answer(200, {"status": "ok"}) == Accepted(pos_reference=None)
    assert classify_answer(200, b'{"status":"ok"}') == Accepted(pos_reference=None)


def test_duplicate_reference_is_accepted() -> None:
    """409 "reference has already been used" is a resend of an order already accepted."""
    assert classify_answer(409, {"status": "fail", "msg": "reference has already been used 123456789"}) == Accepted()
    assert classify_answer(400, {"message": "reference has already been used 1234"}) == Accepted()


def test_validation_error_is_rejected_with_the_field() -> None:
    """A 400 about an ordinary field is rejected, naming the field and the API's message."""
    result = classify_answer(400, VALIDATION_400)
    assert isinstance(result, Permanent)
    assert result.error_class is ErrorClass.REJECTED
    assert result.status == 400
    assert "thirdPartyReference: must not be null" in result.reason
    assert "Validation failed for object='toGoOrder'" in result.reason


def test_sku_error_is_a_menu_problem() -> None:
    """A 400 about a SKU is a menu problem and names the SKU."""
    result = classify_answer(400, SKU_400)
    assert isinstance(result, Permanent)
    assert result.error_class is ErrorClass.MENU
    assert result.skus == ("PIZZA-MARGHERITA-LARGE-EXTRA",)
    assert "items[0].sku" in result.reason


@pytest.mark.parametrize("message", ["Unknown product 'PZ-X'", "No product found for sku PZ-X", "Item not found"])
def test_message_about_products_is_a_menu_problem(message: str) -> None:
    """Without a field list, the message decides."""
    result = classify_answer(400, {"status": 400, "error": "Bad Request", "message": message})
    assert isinstance(result, Permanent)
    assert result.error_class is ErrorClass.MENU


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (401, {"message": "Authentication failed."}),
        (403, {"message": "Access Denied."}),
        (403, {"message": "Access token not relevant for the businessLocation, use authorization-code"}),
        (401, ""),
    ],
)
def test_auth_failures(status: int, body: object) -> None:
    """401/403 are auth (the driver has already refreshed once)."""
    result = classify_answer(status, body)
    assert isinstance(result, Permanent)
    assert result.error_class is ErrorClass.AUTH
    assert "re-authorise" in result.reason


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (429, {"error": "Too Many Requests", "message": "Rate limiting enforced"}),
        (500, {"status": "500", "message": "Internal error"}),
        (502, NGINX_502),
        (503, {"status": "503", "message": "Service Unavailable", "apiSubExceptions": []}),
        (504, b""),
        (408, None),
    ],
)
def test_transient_failures(status: int, body: object) -> None:
    """Rate limits, server errors and gateway pages are worth retrying."""
    result = classify_answer(status, body)
    assert isinstance(result, Transient)
    assert result.status == status
    assert not result.in_doubt


def test_html_error_page_reads_as_text() -> None:
    """An HTML body is reported without its tags."""
    result = classify_answer(502, NGINX_502)
    assert isinstance(result, Transient)
    assert "HTML body: 502 Bad Gateway 502 Bad Gateway" in result.reason
    assert "<" not in result.reason


def test_non_json_4xx_is_rejected_readably() -> None:
    """A 4xx that is not JSON cannot be understood better than its text."""
    result = classify_answer(400, "<html><body>Bad request</body></html>")
    assert isinstance(result, Permanent)
    assert result.error_class is ErrorClass.REJECTED
    assert result.reason.endswith("HTML body: Bad request")
    result = classify_answer(404, "Not Found")
    assert isinstance(result, Permanent)
    assert result.reason.endswith("non-JSON body: Not Found")


def test_unknown_location_is_rejected() -> None:
    """404 "Invalid input business location id" points at the config."""
    result = classify_answer(404, {"message": "Invalid input business location id"})
    assert isinstance(result, Permanent)
    assert result.error_class is ErrorClass.REJECTED
    assert "business_location_id" in result.reason


def test_other_conflict_is_rejected() -> None:
    """A 409 that is not the duplicate reference is not taken for success."""
    result = classify_answer(409, {"status": "fail", "msg": "table is locked"})
    assert isinstance(result, Permanent)
    assert result.error_class is ErrorClass.REJECTED
    assert "table is locked" in result.reason


def test_unexpected_success_body_is_in_doubt() -> None:
    """A 200 that is not {"status":"ok"} may be a proxy page: resend with the same reference."""
    result = classify_answer(200, "<html>captive portal</html>")
    assert isinstance(result, Transient)
    assert result.in_doubt
    result = classify_answer(200, {"status": "fail", "msg": "nope"})
    assert isinstance(result, Permanent)


# --- order notifications ---------------------------------------------------------------------------

SUCCESS = {
    "status": "SUCCESS",
    "ikentooAccountId": "2114502594134196",
    "ikentooAccountIdentifier": "A123080.14",
    "thirdPartyReference": "REF11",
    "type": "ORDER",
}
SUCCESS_WITH_ACCOUNT = {
    "thirdPartyReference": "order-wFUBVgHNGPAJsryIrSaE",
    "businessLocationId": 247158188015618,
    "status": "SUCCESS",
    "account": {
        "clientCount": 2,
        "uuid": "5a81c7f4-9e2f-4db2-965d-6946a4f9c25b",
        "paidAmount": "0.00",
        "name": "Order NZVV",
        "salesEntries": [{"itemName": "Appetizer 2", "itemSku": "21", "unitAmount": "4.00", "quantity": 1}],
        "paymentEntries": [],
        "ikaccountId": "A17700.3",
        "tableNumber": 3,
        "posId": 17700,
    },
    "ikentooAccountId": 304087979524124,
    "type": "ORDER",
}
FAILURE_CONSUMER = {
    "status": "FAILURE",
    "reason": "A consumer already exists for this email address with a different external reference.",
    "thirdPartyReference": "REF12212",
}


def test_success_carries_the_account_identifier() -> None:
    """SUCCESS: the POS reference is ikentooAccountIdentifier (V3)."""
    assert classify_webhook(SUCCESS) == WebhookOutcome(
        third_party_reference="REF11", status="SUCCESS", pos_reference="A123080.14", raw_status="SUCCESS"
    )


def test_success_with_account_uses_the_account_identifier() -> None:
    """Without ikentooAccountIdentifier the account snapshot's V3 id is used, before the V2 number."""
    outcome = classify_webhook(SUCCESS_WITH_ACCOUNT)
    assert outcome.status == "SUCCESS"
    assert outcome.pos_reference == "A17700.3"
    assert outcome.business_location_id == 247158188015618


def test_success_with_only_the_v2_id() -> None:
    """The deprecated numeric id is better than nothing."""
    outcome = classify_webhook(
        {"type": "ORDER", "status": "SUCCESS", "thirdPartyReference": "R", "iKentooAccountId": 42}
    )
    assert outcome.pos_reference == "42"


def test_failure_without_type_is_an_order_notification() -> None:
    """The API's own FAILURE example has no type; other reasons are rejected."""
    outcome = classify_webhook(FAILURE_CONSUMER)
    assert outcome.status == "FAILURE"
    assert outcome.third_party_reference == "REF12212"
    assert outcome.error_class is ErrorClass.REJECTED
    assert "A consumer already exists for this email address" in outcome.reason


@pytest.mark.parametrize(
    ("reason", "error_class", "skus"),
    [
        ("Not processed before validity ended", ErrorClass.OUTAGE, ()),
        ("Item PZ-MARG is restricted", ErrorClass.UNAVAILABLE, ("PZ-MARG",)),
        ("Sales restriction: MOD-BASIL sold out", ErrorClass.UNAVAILABLE, ("MOD-BASIL",)),
        ("Product not available: PZ-MARG", ErrorClass.UNAVAILABLE, ("PZ-MARG",)),
        ("Unknown product PZ-MARG", ErrorClass.MENU, ("PZ-MARG",)),
        ("No item found with sku PZ-MARGX", ErrorClass.MENU, ()),
        ("Invalid SKU", ErrorClass.MENU, ()),
        ("Staff not found", ErrorClass.REJECTED, ()),
        ("", ErrorClass.REJECTED, ()),
    ],
)
def test_failure_reasons(reason: str, error_class: ErrorClass, skus: tuple[str, ...]) -> None:
    """The reason decides the class; SKUs of the order named in it are reported (whole words only)."""
    payload = {"type": "ORDER", "status": "FAILURE", "thirdPartyReference": "R", "reason": reason}
    outcome = classify_webhook(payload, order_skus=("PZ-MARG", "MOD-BASIL"))
    assert outcome.status == "FAILURE"
    assert outcome.error_class is error_class
    assert outcome.skus == skus


def test_failure_with_structured_errors() -> None:
    """A timeout or account error object is read like a reason."""
    payload = {
        "type": "ORDER",
        "status": "FAILURE",
        "thirdPartyReference": "R",
        "errors": {
            "timeout": {"errorKey": "errors.payment.pos.task_timeout", "message": "Not processed before validity ended"}
        },
    }
    assert classify_webhook(payload).error_class is ErrorClass.OUTAGE
    payload = {
        "type": "ORDER",
        "status": "FAILURE",
        "thirdPartyReference": "R",
        "errors": {"account": {"type": "ITEM_NOT_FOUND"}},
    }
    assert classify_webhook(payload).error_class is ErrorClass.MENU


def test_failure_payload_skus_are_reported() -> None:
    """A sku field in the payload names the item."""
    payload = {"status": "FAILURE", "thirdPartyReference": "R", "reason": "Item is sold out", "sku": "PZ-MARG"}
    outcome = classify_webhook(payload)
    assert outcome.error_class is ErrorClass.UNAVAILABLE
    assert outcome.skus == ("PZ-MARG",)


@pytest.mark.parametrize(
    "status", ["READY_FOR_PICKUP", "CANCELLED", "CLOSED", "CHECK_WAS_UPDATED", "IN_DELIVERY", "ABANDONED"]
)
def test_other_statuses(status: str) -> None:
    """Anything but SUCCESS/FAILURE is OTHER, with the API's status kept."""
    outcome = classify_webhook({**SUCCESS_WITH_ACCOUNT, "status": status})
    assert outcome.status == "OTHER"
    assert outcome.raw_status == status
    assert outcome.error_class is None


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({"sku": "X", "status": "RESTRICTED", "type": "ITEM", "businessLocationId": 1}, "use classify_restriction"),
        ({"type": "ORDER_API", "status": "READY"}, "type ORDER_API"),
        ({"type": "ORDER", "status": "SUCCESS"}, "without a thirdPartyReference"),
        ({"type": "ORDER", "thirdPartyReference": "R"}, "without a status"),
        ({"hello": "world"}, "not a K-Series notification"),
        ({}, "not a K-Series notification"),
    ],
)
def test_not_order_notifications_are_errors(payload: dict[str, Any], match: str) -> None:
    """Payloads that are not order notifications raise a clear ValueError."""
    with pytest.raises(ValueError, match=match):
        classify_webhook(payload)


def test_non_object_is_not_a_notification() -> None:
    """A list or a string is not a notification."""
    with pytest.raises(ValueError, match="expected a JSON object, got list"):
        classify_webhook([])  # type: ignore[arg-type]


# --- sales restrictions ----------------------------------------------------------------------------

RESTRICTED = {
    "sku": "UGG-BB-PUR-06",
    "businessLocationId": 247158188015618,
    "count": 5,
    "countUpdatedAt": "2024-04-04T09:42:00.000+00:00",
    "status": "RESTRICTED",
    "type": "ITEM",
}
NOT_RESTRICTED = {**RESTRICTED, "count": None, "status": "NOT_RESTRICTED"}


def test_restriction_states() -> None:
    """Sold out (count 0) cannot be sold; a restriction with stock left can; NOT_RESTRICTED can; null is none."""
    here = 247158188015618
    assert classify_restriction({**RESTRICTED, "count": 0}) == [("UGG-BB-PUR-06", True, here)]
    assert classify_restriction(RESTRICTED) == [("UGG-BB-PUR-06", False, here)]
    assert classify_restriction(NOT_RESTRICTED) == [("UGG-BB-PUR-06", False, here)]
    # "count (null = no restriction)": the sales-restrictions reference, whatever the status says.
    assert classify_restriction({**RESTRICTED, "count": None}) == [("UGG-BB-PUR-06", False, here)]


def test_restriction_list() -> None:
    """Several notifications at once are read in order."""
    changes = classify_restriction(
        [{**RESTRICTED, "sku": "A", "count": 0}, {**NOT_RESTRICTED, "sku": "B", "businessLocationId": "77"}]
    )
    assert changes == [("A", True, 247158188015618), ("B", False, 77)]
    assert [(c.sku, c.unavailable) for c in changes] == [("A", True), ("B", False)]
    missing = {k: v for k, v in RESTRICTED.items() if k != "businessLocationId"}
    assert classify_restriction(missing)[0].business_location_id is None


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (SUCCESS, "not a sales-restriction notification: type ORDER"),
        ({**RESTRICTED, "status": "MAYBE"}, "with status 'MAYBE'"),
        ({**RESTRICTED, "sku": ""}, "without a sku"),
        ({**RESTRICTED, "count": "5"}, "with count '5'"),
        ({**RESTRICTED, "businessLocationId": True}, "with businessLocationId True"),
        ({**RESTRICTED, "businessLocationId": -1}, "with businessLocationId -1"),
        ("RESTRICTED", "not a K-Series notification"),
    ],
)
def test_bad_restrictions(payload: object, match: str) -> None:
    """Anything else raises a clear ValueError."""
    with pytest.raises(ValueError, match=match):
        classify_restriction(payload)


# --- readiness -------------------------------------------------------------------------------------

READY: dict[str, Any] = {
    "status": "READY",
    "lastUpdatedAt": "2025-12-11T07:27:47.407Z",
    "onlineOrderingApiConfiguration": {"enabled": True, "orderProfileId": 123456, "staffId": 789012},
    "posStatus": {"salesPeriod": "OPENED", "acceptingOnlineOrders": True, "availableDevices": True},
}
NOT_READY: dict[str, Any] = {
    "businessLocationId": 247158188015618,
    "lastUpdatedAt": "2025-10-04T09:40:00.000+00:00",
    "status": "NOT_READY",
    "type": "ORDER_API",
    "onlineOrderingApiConfiguration": {"enabled": False, "orderProfileId": None, "staffId": None},
    "posStatus": {"salesPeriod": "CLOSED", "acceptingOnlineOrders": False, "availableDevices": False},
}
ALL_TRUE = {"enabled": True, "salesPeriodOpened": True, "acceptingOnlineOrders": True, "availableDevices": True}


def test_ready() -> None:
    """READY with the four conditions true."""
    assert readiness_from(READY) == (True, ALL_TRUE, "READY (as of 2025-12-11T07:27:47.407Z)")
    assert readiness_from(json.dumps(READY).encode())[0] is True


def test_not_ready_names_every_missing_condition() -> None:
    """NOT_READY (here the readiness notification) explains each failed condition."""
    ready, conditions, detail = readiness_from(NOT_READY)
    assert not ready
    assert conditions == dict.fromkeys(ALL_TRUE, False)
    assert detail.startswith("NOT_READY: the Online Ordering API is not enabled")
    assert "sales period is closed" in detail
    assert "Online Orders enabled" in detail
    assert "no POS device" in detail


def test_not_ready_because_the_day_is_closed() -> None:
    """One failed condition, one reason."""
    body = {**READY, "status": "NOT_READY", "posStatus": {**READY["posStatus"], "salesPeriod": "CLOSED"}}
    ready, conditions, detail = readiness_from(body)
    assert not ready
    assert conditions == {**ALL_TRUE, "salesPeriodOpened": False}
    assert detail == "NOT_READY: the sales period is closed (open the day on the POS) (as of 2025-12-11T07:27:47.407Z)"


def test_readiness_without_status_uses_the_conditions() -> None:
    """No status field: ready when all four conditions hold."""
    body = {k: v for k, v in READY.items() if k not in ("status", "lastUpdatedAt")}
    assert readiness_from(body) == (True, ALL_TRUE, "READY")
    body["posStatus"] = {**READY["posStatus"], "availableDevices": False}
    assert readiness_from(body)[0] is False


@pytest.mark.parametrize("body", [None, "<html>oops</html>", [READY], 42])
def test_readiness_garbage_is_not_ready(body: object) -> None:
    """Anything but a JSON object is not ready, with a readable detail."""
    ready, conditions, detail = readiness_from(body)
    assert not ready
    assert conditions == {}
    assert detail.startswith("unexpected readiness answer")


# --- field limits ----------------------------------------------------------------------------------


def test_the_limits_table_holds_the_documented_limits() -> None:
    """The OAS limits (48, 8, 128, 25, 25) and the agent's own (lastName 128, orderNote 1000) are in the one table."""
    assert {k: FIELD_LIMITS[k] for k in FIELD_LIMITS if k not in ("customerInfo.email", "tableNumber")} == {
        "thirdPartyReference": 48,
        "collectionCode": 8,
        "customerInfo.firstName": 128,
        "customerInfo.lastName": 128,
        "orderNote": 1000,
        "deliveryAddress.addressLine1": 255,
        "deliveryAddress.addressLine2": 255,
        "deliveryAddress.zip": 255,
        "deliveryAddress.city": 255,
        "items[].sku": 25,
        "items[].subItems[].sku": 25,
    }
    assert FIELD_LIMITS["customerInfo.email"] == 254 and FIELD_LIMITS["tableNumber"] == 10


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("Margherita", 10, "Margherita"),
        ("Margheritas", 10, "Margher..."),
        ("Big  pizza", 8, "Big..."),  # no space left before the ellipsis
        ("ab🍕🍕", 5, "ab..."),  # the pizza (2 units) does not fit before the ellipsis; never half of it
        ("🍕🍕🍕🍕", 7, "🍕🍕..."),
    ],
)
def test_fit_cuts_visibly_within_the_limit(text: str, limit: int, expected: str) -> None:
    assert fit(text, limit) == expected
    assert utf16_len(fit(text, limit)) <= limit


@given(st.text(max_size=300), st.integers(min_value=4, max_value=300))
def test_fit_always_fits_and_keeps_a_prefix(text: str, limit: int) -> None:
    """Whatever the text: it fits, is unchanged when it already fitted, else a prefix plus the ellipsis."""
    cut = fit(text, limit)
    assert utf16_len(cut) <= limit
    if utf16_len(text) <= limit:
        assert cut == text
    else:
        assert cut.endswith("...") and text.startswith(cut[:-3])


def test_utf16_length_counts_astral_characters_twice() -> None:
    assert utf16_len("Zoë") == 3 and utf16_len("🍕") == 2 == len("🍕".encode("utf-16-le")) // 2


def test_a_sku_of_26_utf16_units_is_a_menu_error_before_sending() -> None:
    """24 letters and an emoji are 25 characters in Python but 26 for the API: refused here, named."""
    sku = "PIZZA-MARGHERITA-LARGE-X" + "🍕"
    items = [{**PICKUP["items"][0], "sku": sku}]
    with pytest.raises(MappingError, match=r"item 1 \('Margherita'\) has SKU .* longer than the 25") as caught:
        build(make_order(items=items))
    assert caught.value.error_class is ErrorClass.MENU and caught.value.skus == (sku,)


def test_a_modifier_sku_over_25_names_the_modifier_and_its_item() -> None:
    items = [{**PICKUP["items"][0], "modifiers": [{"name": "Extra basil", "sku": "M" * 26, "unit_price": 50}]}]
    with pytest.raises(MappingError, match=r"modifier 'Extra basil' of item 1 \('Margherita'\)") as caught:
        build(make_order(items=items))
    assert caught.value.error_class is ErrorClass.MENU


def test_a_long_address_line_is_cut_and_the_whole_address_noted() -> None:
    data = copy.deepcopy(DELIVERY)
    data["fulfillment"]["address"] = {"line1": "Flat 2, " + "Long Street " * 30, "city": "Bristol", "postcode": "BS1"}
    _, body = build(make_order(data))
    line1 = body["deliveryAddress"]["addressLine1"]
    assert line1.endswith("...") and utf16_len(line1) <= 255
    assert body["deliveryAddress"]["city"] == "Bristol"
    assert "Address: Flat 2, Long Street Long Street" in body["orderNote"]
    assert body["orderNote"].endswith("Bristol") or len(body["orderNote"]) == ORDER_NOTE_MAX


def test_an_email_too_long_for_the_api_is_not_cut_but_noted() -> None:
    """A cut email is a wrong email: it is left out and shown in the note."""
    email = "🍕" * 130 + "@example.com"  # 130 characters would pass intake; 272 UTF-16 units do not fit 254
    order = make_order().model_copy(
        update={"customer": make_order().customer.model_copy(update={"email": email})}  # type: ignore[union-attr]
    )
    _, body = build(order)
    assert "email" not in body["customerInfo"]
    assert f"Email: {email}" in body["orderNote"]


def test_a_table_number_beyond_int32_is_rejected() -> None:
    data = copy.deepcopy(DINE_IN)
    data["fulfillment"]["table"] = "99999999999"
    with pytest.raises(MappingError, match="not a table number"):
        build(make_order(data))


def test_limit_violations_names_each_field_over_its_limit() -> None:
    body = {
        "thirdPartyReference": "r" * 49,
        "collectionCode": "C" * 9,
        "customerInfo": {"firstName": "🍕" * 65, "lastName": "L" * 128, "email": "e" * 255},
        "orderNote": "n" * 1001,
        "deliveryAddress": {"addressLine1": "a" * 256, "city": "Bristol"},
        "tableNumber": "12345678901",
        "items": [{"sku": "S" * 26, "subItems": [{"sku": "ok", "subItems": [{"sku": "D" * 30}]}]}],
    }
    assert limit_violations(body) == [
        ("thirdPartyReference", 49, 48),
        ("collectionCode", 9, 8),
        ("customerInfo.firstName", 130, 128),
        ("customerInfo.email", 255, 254),
        ("orderNote", 1001, 1000),
        ("deliveryAddress.addressLine1", 256, 255),
        ("tableNumber", 11, 10),
        ("items[0].sku", 26, 25),
        ("items[0].subItems[0].subItems[0].sku", 30, 25),
    ]


# Arbitrary valid intake orders: every text field up to its intake maximum (500 characters; email 254, table
# 32, SKUs 64), with accents, newlines and characters beyond U+FFFF that count twice for the API.
_CHARS = st.one_of(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")),
    st.sampled_from([*"éøßç🍕👍🏽\n ", "\u00a0"]),
)


def _text(max_size: int = 500, min_size: int = 1) -> st.SearchStrategy[str]:
    long = st.builds(lambda c, n: c * n, st.sampled_from(["A", "🍕", "é ", "x y"]), st.integers(1, max_size))
    either = st.one_of(st.text(_CHARS, min_size=min_size, max_size=max_size), long.map(lambda t: t[:max_size]))
    return either.filter(lambda t: len(t.strip()) >= min_size)


def _sku() -> st.SearchStrategy[str]:
    # Mostly SKUs that fit, some over 25 (intake takes 64): those must fail as menu errors, naming the item.
    return st.one_of(
        st.from_regex(r"[A-Z0-9-]{1,25}", fullmatch=True),
        st.text(_CHARS, min_size=1, max_size=64).filter(lambda t: bool(t.strip())),
    )


@st.composite
def _modifiers(draw: st.DrawFn, depth: int = 1) -> list[dict[str, Any]]:
    return [
        {
            "name": draw(_text(40)),
            "sku": draw(_sku()),
            "quantity": draw(st.integers(1, 3)),
            "unit_price": draw(st.integers(0, 300)),
            "modifiers": draw(_modifiers(depth + 1)) if depth < 3 else [],
        }
        for _ in range(draw(st.integers(0, 2 if depth == 1 else 1)))
    ]


@st.composite
def spec_orders(draw: st.DrawFn) -> Order:
    """A valid intake order with random text in every field the K-Series body carries."""
    kind = draw(st.sampled_from(["pickup", "delivery", "dine_in"]))
    fulfillment: dict[str, Any] = {"type": kind, "instructions": draw(st.none() | _text())}
    if kind == "dine_in":
        fulfillment["table"] = draw(st.from_regex(r"[0-9]{1,12}", fullmatch=True) | _text(32))
        fulfillment["covers"] = draw(st.none() | st.integers(1, 999))
    if kind == "delivery":
        fulfillment["address"] = {
            "line1": draw(_text()),
            "line2": draw(st.none() | _text()),
            "city": draw(st.none() | _text()),
            "postcode": draw(st.none() | _text()),
        }
    items = [
        {
            "name": draw(_text()),
            "sku": draw(_sku()),
            "quantity": draw(st.integers(1, 999)),
            "unit_price": draw(st.integers(0, 2000)),
            "course": draw(st.none() | st.integers(0, 20)),
            "notes": draw(st.none() | _text()),
            "allergens": draw(st.lists(_text(64), max_size=3)),
            "modifiers": draw(_modifiers()),
        }
        for _ in range(draw(st.integers(1, 4)))
    ]
    discounts = [
        {"kind": "discount", "code": draw(st.none() | _text(20)), "pos_id": draw(st.none() | _text(64)), "amount": 1}
        for _ in range(draw(st.integers(0, 2)))
    ]
    data = {
        **PICKUP,
        "id": draw(st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True)),
        "display_code": draw(st.none() | st.from_regex(r"[A-Za-z0-9-]{1,8}", fullmatch=True)),
        "requested_at": draw(st.none() | st.sampled_from(["2026-11-23T18:00:00+00:00", "2026-11-23T11:00:00Z"])),
        "fulfillment": fulfillment,
        "customer": {
            "name": draw(st.none() | _text()),
            "email": draw(st.none() | _text(254)),
        },
        "items": items,
        "charges": {
            "delivery_fee": draw(st.integers(0, 500)),
            "service_charge": draw(st.integers(0, 500)),
            "tip": draw(st.integers(0, 500)),
        },
        "discounts": discounts,
        "payment": {"status": draw(st.sampled_from(["paid", "pending"])), "amount": 0, "currency": "GBP"},
        "notes": draw(st.none() | _text()),
    }
    total = _total(data)
    assume(total >= 0)
    data["payment"]["amount"] = total
    try:
        return make_order(data)
    except ValidationError:
        assume(False)
        raise


def _too_long_sku(order: Order) -> bool:
    def skus(mods: list[Any]) -> list[str | None]:
        return [s for m in mods for s in (m.sku, *skus(m.modifiers))]

    every = [s for i in order.items for s in (i.sku, *skus(i.modifiers))]
    return any(s is not None and utf16_len(s) > 25 for s in every)


def _violations(body: dict[str, Any]) -> list[str]:
    """The limits checked again here, field by field, independently of limit_violations."""
    units = utf16_len
    found = [
        k
        for k in ("thirdPartyReference", "collectionCode", "orderNote", "tableNumber")
        if units(str(body.get(k, ""))) > FIELD_LIMITS[k]
    ]
    for key, value in body["customerInfo"].items():
        if f"customerInfo.{key}" in FIELD_LIMITS and units(value) > FIELD_LIMITS[f"customerInfo.{key}"]:
            found.append(key)
    for key, value in body.get("deliveryAddress", {}).items():
        if units(value) > FIELD_LIMITS[f"deliveryAddress.{key}"]:
            found.append(key)
    stack = list(body["items"])
    while stack:
        line = stack.pop()
        if units(line["sku"]) > 25:
            found.append(line["sku"])
        stack.extend(line.get("subItems", []))
    return found


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(order=spec_orders(), printed=st.booleans(), native=st.booleans())
def test_every_mapped_request_satisfies_every_limit(order: Order, printed: bool, native: bool) -> None:
    """Any valid intake order maps to a body within every FIELD_LIMITS entry, or fails before sending, naming why.

    Only a SKU over 25 (menu) or a table that is no floor-plan number (rejected) may stop it; nothing is
    left for the POS to refuse on length.
    """
    options = SETTINGS.model_copy(update={"native_discounts": native})
    try:
        _, body = build(order, settings=options, already_printed=printed)
    except MappingError as exc:
        if exc.error_class is ErrorClass.MENU:
            assert _too_long_sku(order) and "longer than the 25 characters" in str(exc)
        else:
            assert "is not a table number" in str(exc)
        return
    assert limit_violations(body) == []
    assert _violations(body) == []
    assert body["customerInfo"]["firstName"]
    assert 60_000 <= body["maxTimeToAttemptOrderDeliverToPos"] <= 2**31 - 1
    assert json.loads(json.dumps(body)) == body
    if printed:
        assert body["orderNote"].startswith(ALREADY_PRINTED_NOTE)
