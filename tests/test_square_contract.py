"""Contract fixtures written from Square's published reference, each with its source, against the mapping and the
simulator's Square dialect.

The numbers and payloads here are typed in from the reference, not imported from the code, so the table the code
uses (``square_limits.LIMITS``) and the simulator are checked against Square's own words. Sources:

- API: Square's OpenAPI document, github.com/square/connect-api-specification ``api.json``, release 2025-08-20
  (commit 5733f66), abbreviated "api.json" below; ``components.schemas.<Schema>.properties.<field>``.
- Error envelope: https://developer.squareup.com/docs/build-basics/handling-errors ("errors array with an Error
  object for each error"; ``category`` and ``code`` always, ``detail`` and ``field`` optional) and api.json
  ``components.schemas.Error`` (required: category, code).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from agent.domain.states import ErrorClass
from drivers.pos.base import Permanent
from drivers.pos.sim_square import configure
from drivers.pos.sim_state import SimulatorState
from drivers.pos.simulator import create_app
from drivers.pos.square_answers import classify_error
from drivers.pos.square_limits import LIMITS

LOCATION = "057P5VYJ4A5X1"
AUTH = {"Authorization": "Bearer EAAA-contract-token"}

# A CreateOrder body of the shape of api.json components.schemas.CreateOrderRequest.example: an ad hoc line
# (name + base_price_money, quantity as a string), a catalog line with a catalog modifier and a LINE_ITEM
# discount applied to it, an ORDER percentage discount without "type" (the example gives none), a catalog
# discount, and an ORDER-scoped tax.
CREATE_ORDER: dict[str, Any] = {
    "idempotency_key": "0f6a2c4e-3d6b-4e59-9d1e-6c1f3b2a7e90",
    "order": {
        "location_id": LOCATION,
        "reference_id": "my-order-001",
        "line_items": [
            {"name": "New York Strip Steak", "quantity": "1", "base_price_money": {"amount": 1599, "currency": "USD"}},
            {
                "quantity": "2",
                "catalog_object_id": "BEMYCSMIJL46OCDV4KYIKXIB",
                "modifiers": [{"catalog_object_id": "CHQX7Y4KY6N5KINJKZCFURPZ"}],
                "applied_discounts": [{"discount_uid": "one-dollar-off"}],
            },
        ],
        "taxes": [{"uid": "state-sales-tax", "name": "State Sales Tax", "percentage": "9", "scope": "ORDER"}],
        "discounts": [
            {"uid": "labor-day-sale", "name": "Labor Day Sale", "percentage": "5", "scope": "ORDER"},
            {"uid": "membership-discount", "catalog_object_id": "DB7L55ZH2BGWI4H23ULIWOQ7", "scope": "ORDER"},
            {
                "uid": "one-dollar-off",
                "name": "Sale - $1.00 off",
                "amount_money": {"amount": 100, "currency": "USD"},
                "scope": "LINE_ITEM",
            },
        ],
    },
}
CATALOG_IDS = ["BEMYCSMIJL46OCDV4KYIKXIB", "CHQX7Y4KY6N5KINJKZCFURPZ", "DB7L55ZH2BGWI4H23ULIWOQ7"]

# The fulfilment of a pickup and of a delivery, with the fields of api.json FulfillmentPickupDetails,
# FulfillmentDeliveryDetails and FulfillmentRecipient (display_name, phone_number, email_address, address).
PICKUP = {
    "uid": "fulfillment-1",
    "type": "PICKUP",
    "pickup_details": {
        "recipient": {"display_name": "Jaiden Urie", "phone_number": "+12223334444", "email_address": "j@example.com"},
        "schedule_type": "SCHEDULED",
        "pickup_at": "2026-06-01T19:30:00+01:00",
        "note": "Ring the side door",
    },
}
DELIVERY = {
    "uid": "fulfillment-1",
    "type": "DELIVERY",
    "delivery_details": {
        "recipient": {
            "display_name": "Jaiden Urie",
            "phone_number": "+12223334444",
            "address": {"address_line_1": "1 Quay St", "address_line_2": "Flat 2", "locality": "Bristol"},
        },
        "schedule_type": "ASAP",
        "note": "Leave at the door",
    },
}

# maxLength (and minLength) of every field the mapping sets, as api.json states them, typed in here.
PUBLISHED_LENGTHS: dict[str, tuple[int, int]] = {
    "idempotency_key": (0, 192),  # CreateOrderRequest.idempotency_key
    "order.reference_id": (0, 40),  # Order.reference_id
    "order.ticket_name": (0, 30),  # Order.ticket_name
    "order.line_items[].uid": (0, 60),  # OrderLineItem.uid
    "order.line_items[].name": (0, 512),  # OrderLineItem.name
    "order.line_items[].quantity": (1, 12),  # OrderLineItem.quantity: minLength 1, maxLength 12
    "order.line_items[].note": (0, 2000),  # OrderLineItem.note
    "order.line_items[].catalog_object_id": (0, 192),  # OrderLineItem.catalog_object_id
    "order.line_items[].modifiers[].name": (0, 255),  # OrderLineItemModifier.name
    "order.line_items[].modifiers[].catalog_object_id": (0, 192),  # OrderLineItemModifier.catalog_object_id
    "order.service_charges[].uid": (0, 60),  # OrderServiceCharge.uid
    "order.service_charges[].name": (0, 512),  # OrderServiceCharge.name
    "order.discounts[].uid": (0, 60),  # OrderLineItemDiscount.uid
    "order.discounts[].name": (0, 255),  # OrderLineItemDiscount.name
    "order.discounts[].catalog_object_id": (0, 192),  # OrderLineItemDiscount.catalog_object_id
    "order.fulfillments[].uid": (0, 60),  # Fulfillment.uid
    "order.fulfillments[].pickup_details.note": (0, 500),  # FulfillmentPickupDetails.note
    "order.fulfillments[].delivery_details.note": (0, 550),  # FulfillmentDeliveryDetails.note
    "order.fulfillments[].pickup_details.recipient.display_name": (0, 255),  # FulfillmentRecipient.display_name
    "order.fulfillments[].pickup_details.recipient.email_address": (0, 255),  # FulfillmentRecipient.email_address
    "order.fulfillments[].pickup_details.recipient.phone_number": (0, 17),  # FulfillmentRecipient.phone_number
    "order.fulfillments[].delivery_details.recipient.display_name": (0, 255),
    "order.fulfillments[].delivery_details.recipient.email_address": (0, 255),
    "order.fulfillments[].delivery_details.recipient.phone_number": (0, 17),
}
# Order.metadata (and every other metadata property): "Keys written by applications must be 60 characters or less
# and must be in the character set [a-zA-Z0-9_-]", "Values have a maximum length of 255 characters", "An application
# can have up to 10 entries per metadata field".
METADATA = {"keys": 60, "values": 255, "entries": 10}
# api.json components.schemas.ErrorCategory.enum.
ERROR_CATEGORIES = {
    "API_ERROR",
    "AUTHENTICATION_ERROR",
    "INVALID_REQUEST_ERROR",
    "RATE_LIMIT_ERROR",
    "PAYMENT_METHOD_ERROR",
    "REFUND_ERROR",
    "MERCHANT_SUBSCRIPTION_ERROR",
    "EXTERNAL_VENDOR_ERROR",
}
# A VALUE_TOO_LONG answer in the envelope the handling-errors page describes (api.json ErrorCode has VALUE_TOO_LONG).
VALUE_TOO_LONG_ANSWER = {
    "errors": [
        {
            "category": "INVALID_REQUEST_ERROR",
            "code": "VALUE_TOO_LONG",
            "detail": "Field must not be greater than 500 length",
            "field": "order.fulfillments[0].pickup_details.note",
        }
    ]
}

_KEYS = itertools.count()


@pytest.fixture
async def square() -> AsyncIterator[httpx.AsyncClient]:
    """A client for a fresh simulator's Square dialect, in process, knowing the reference's catalog ids."""
    state = SimulatorState()
    long_ids = ["I" * 192]
    configure(state, {"location_id": LOCATION, "catalog_ids": [*CATALOG_IDS, *long_ids]})
    transport = httpx.ASGITransport(app=create_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://square.test", headers=AUTH) as client:
        yield client


async def create(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    """POST ``body`` as CreateOrder (with a fresh idempotency key unless the test is about that key)."""
    sent = copy.deepcopy(body)
    if sent["idempotency_key"] == CREATE_ORDER["idempotency_key"]:
        sent["idempotency_key"] = f"contract-{next(_KEYS)}"
    return await client.post("/v2/orders", json=sent)


def with_fulfillment(fulfillment: dict[str, Any]) -> dict[str, Any]:
    """Return the CreateOrder fixture with ``fulfillment``, a tip service charge and metadata."""
    body = copy.deepcopy(CREATE_ORDER)
    body["order"]["fulfillments"] = [copy.deepcopy(fulfillment)]
    body["order"]["ticket_name"] = "Table 12"
    body["order"]["service_charges"] = [
        {
            "uid": "tip",
            "name": "Tip",
            "amount_money": {"amount": 100, "currency": "USD"},
            "calculation_phase": "TOTAL_PHASE",
            "taxable": False,
        }
    ]
    body["order"]["line_items"][0].update(
        uid="line-1",
        note="well done",
        modifiers=[{"name": "Extra", "quantity": "1", "base_price_money": {"amount": 0, "currency": "USD"}}],
    )
    body["order"]["line_items"][1]["uid"] = "line-2"
    return body


def set_at(body: dict[str, Any], path: str, value: str) -> str:
    """Set the first place ``path`` (a LIMITS-style path) names in ``body`` to ``value``; return Square's field."""
    parts = path.replace("[]", ".[]").split(".")
    node: Any = body
    field = ""
    for part in parts[:-1]:
        if part == "[]":
            node = node[0]
            field += "[0]"
        else:
            node = node[part]
            field += f".{part}" if field else part
    node[parts[-1]] = value
    return f"{field}.{parts[-1]}" if field else parts[-1]


def value_of(path: str, length: int) -> str:
    """Return a value of ``length`` characters that is otherwise valid for ``path``."""
    if path.endswith("quantity"):
        return ("1234567.12345678")[:length]
    if path.endswith("phone_number"):
        return "+" + "4" * (length - 1)
    if path.endswith("catalog_object_id"):
        return "I" * length
    return "x" * length


# ---- the published request ------------------------------------------------------------------------------------


async def test_the_reference_create_order_is_taken(square: httpx.AsyncClient) -> None:
    """The request of Square's own example (discount without type, catalog modifier, tax) is created."""
    response = await create(square, CREATE_ORDER)
    assert response.status_code == 200, response.text
    order = response.json()["order"]
    assert order["id"] and order["location_id"] == LOCATION and order["state"] == "OPEN"


@pytest.mark.parametrize("fulfillment", [PICKUP, DELIVERY], ids=["pickup", "delivery"])
async def test_reference_fulfilments_are_taken(square: httpx.AsyncClient, fulfillment: dict[str, Any]) -> None:
    """A PICKUP or DELIVERY fulfilment written from the reference, with a tip service charge, is created."""
    response = await create(square, with_fulfillment(fulfillment))
    assert response.status_code == 200, response.text


# ---- the published limits --------------------------------------------------------------------------------------


def test_the_code_s_table_says_what_square_publishes() -> None:
    """Every published length is in LIMITS with Square's number; LIMITS adds only metadata and the address."""
    for path, (least, most) in PUBLISHED_LENGTHS.items():
        assert (LIMITS[path].least, LIMITS[path].most) == (least, most), path
    metadata = {p: limit.most for p, limit in LIMITS.items() if "metadata" in p}
    assert set(metadata.values()) == set(METADATA.values())
    extra = set(LIMITS) - set(PUBLISHED_LENGTHS) - set(metadata)
    assert extra == {p for p in LIMITS if ".address." in p}  # not published: intake's 500, see LIMITS


@pytest.mark.parametrize("path", sorted(PUBLISHED_LENGTHS))
async def test_simulator_takes_the_limit_and_refuses_one_more(square: httpx.AsyncClient, path: str) -> None:
    """At its published length a value is taken; one character more is VALUE_TOO_LONG naming the field."""
    least, most = PUBLISHED_LENGTHS[path]
    base = with_fulfillment(DELIVERY if "delivery_details" in path else PICKUP)
    at_limit = copy.deepcopy(base)
    set_at(at_limit, path, value_of(path, most))
    response = await create(square, at_limit)
    assert response.status_code == 200, response.text
    over = copy.deepcopy(base)
    field = set_at(over, path, value_of(path, most + 1))
    response = await create(square, over)
    assert response.status_code == 400, response.text
    assert response.json() == {
        "errors": [
            {
                "category": "INVALID_REQUEST_ERROR",
                "code": "VALUE_TOO_LONG",
                "detail": f"Field must not be greater than {most} length",
                "field": field,
            }
        ]
    }
    if least:
        empty = copy.deepcopy(base)
        set_at(empty, path, "")
        assert (await create(square, empty)).json()["errors"][0]["code"] == "VALUE_TOO_SHORT"


async def test_simulator_applies_the_published_metadata_rules(square: httpx.AsyncClient) -> None:
    """10 entries, keys of 60 from [a-zA-Z0-9_-] and values of 255 are taken; past any of them is refused."""
    body = copy.deepcopy(CREATE_ORDER)
    body["order"]["metadata"] = {f"{i}{'k' * 59}": "v" * METADATA["values"] for i in range(METADATA["entries"])}
    assert (await create(square, body)).status_code == 200
    cases = {
        "TOO_MANY_MAP_ENTRIES": {f"k{i}": "v" for i in range(METADATA["entries"] + 1)},
        "MAP_KEY_LENGTH_TOO_LONG": {"k" * (METADATA["keys"] + 1): "v"},
        "VALUE_REGEX_MISMATCH": {"venue order": "v"},
        "VALUE_TOO_LONG": {"venue_order_id": "v" * (METADATA["values"] + 1)},
    }
    for code, metadata in cases.items():
        body["order"]["metadata"] = metadata
        [error] = (await create(square, body)).json()["errors"]
        assert error["code"] == code, (code, error)
        assert error["field"].startswith("order.metadata")


# ---- the published error envelope ------------------------------------------------------------------------------


def test_a_value_too_long_answer_is_rejected_naming_the_field() -> None:
    """Square's VALUE_TOO_LONG answer fails the order as rejected, with Square's code and field in the reason."""
    result = classify_error(400, VALUE_TOO_LONG_ANSWER, None)
    assert isinstance(result, Permanent)
    assert result.error_class is ErrorClass.REJECTED
    assert "VALUE_TOO_LONG" in result.reason and "order.fulfillments[0].pickup_details.note" in result.reason


async def test_simulator_errors_are_in_square_s_envelope(square: httpx.AsyncClient) -> None:
    """Every error the dialect answers has a category of the published enum, a code, and a detail and field."""
    body = with_fulfillment(PICKUP)
    body["order"]["ticket_name"] = "T" * 31
    body["order"]["total_tip_money"] = {"amount": 100, "currency": "USD"}
    for sent in (body, {"idempotency_key": "k", "order": {"location_id": LOCATION, "line_items": "none"}}):
        answer = (await create(square, sent)).json()
        assert set(answer) == {"errors"} and answer["errors"]
        for error in answer["errors"]:
            assert error["category"] in ERROR_CATEGORIES
            assert error["code"] and error["detail"] and error["field"]
            assert set(error) <= {"category", "code", "detail", "field"}
