"""The Square Orders API (SPEC §7.2) as pure functions: the CreateOrder body, its limits, what answers mean.

No I/O here: ``drivers.pos.square`` does the network, and the simulator's Square dialect checks bodies
against the same table of limits (``LIMITS``, through ``limit_breaches``).

Mapping choices the Square reference forces (docs/reference pos-apis.md §2):

- Square fulfilments are PICKUP, DELIVERY or SHIPMENT only. A dine-in order gets no fulfilment: the table
  goes into ``ticket_name`` (Square's "short-term identifier, such as a table number") and the table,
  covers, instructions and order notes into the first line's note, the only free text Square shows for an
  order without a fulfilment (an Order has no order-level note).
- Square has no writable order tip: ``Order.total_tip_money`` is read-only and tips belong to payments
  (``tip_money``), and this agent creates no payment. The tip becomes a TOTAL_PHASE, non-taxable service
  charge named "Tip" (``OrderServiceCharge.taxable``: "service charges calculated in the TOTAL_PHASE cannot
  be marked as taxable"), so the order's total in Square equals what the customer paid.
- Every value fits Square's limits before it is sent (``fit``): a longer text is cut with a visible ellipsis
  and its full text goes into a note (the line's note for item and modifier names, the fulfilment note, or
  the first line's note for dine-in, for the recipient and discount names). A customer's email that does not
  fit, and a phone number that cannot be written as E.164, are left out of the recipient and shown in the
  fulfilment note instead ("Phone: …"); a note that is itself too long is cut (the kitchen ticket has it all).
- ``ticket_name`` holds at most 30 characters, fewer than the ALREADY PRINTED marker: it gets a short
  "ALREADY PRINTED" prefix; the full marker starts the fulfilment note and every line's note.
- Every line carries ``base_price_money`` (what the customer was charged), also on catalog lines, where
  it overrides the catalog price, so Square's totals match the online payment.
- Taxes: no ``order.taxes``; ``pricing_options.auto_apply_taxes`` lets Square apply the venue's own tax
  (one tax only, SPEC §7.2), and ``auto_apply_discounts`` is off because the order's discounts are sent.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, NamedTuple

from agent.domain.models import Discount, FulfillmentType, Item, Modifier, Order
from agent.domain.states import ErrorClass
from drivers.pos.base import (
    ALREADY_PRINTED_NOTE,
    Injected,
    InjectResult,
    Permanent,
    Readiness,
    ReadinessState,
    Transient,
)
from drivers.pos.phone import to_e164


class Limit(NamedTuple):
    """One of Square's limits: at most ``most`` (characters, or entries of a metadata map), at least ``least``."""

    most: int
    source: str
    least: int = 0
    pattern: str | None = None  # the characters a metadata key may use


# Where the rows come from, unless a row says otherwise: Square's OpenAPI document, square/connect-api-specification
# api.json at release 2025-08-20 (commit 5733f66), components.schemas.<Schema>.properties.<field>.maxLength (and
# minLength for ``least``); square/square-python-sdk doc/models/<schema>.md shows the same numbers as "Constraints".
# The metadata rows are the text of every metadata property (Order.metadata, OrderLineItem.metadata): "Keys written
# by applications must be 60 characters or less and must be in the character set [a-zA-Z0-9_-]", "Values have a
# maximum length of 255 characters", "An application can have up to 10 entries per metadata field".
_META_KEY = r"[A-Za-z0-9_-]+"
_ADDRESS = "not published (Address has no maxLength); 500 is SPEC §4's own text limit, set by issue 12"

LIMITS: Final[Mapping[str, Limit]] = MappingProxyType(
    {
        # A path is Square's error ``field``: "[]" is every element of a list, "{}" every value of a metadata map
        # and "{key}" every key of one; the path of a metadata map itself limits its number of entries.
        "idempotency_key": Limit(192, "CreateOrderRequest.idempotency_key"),
        "order.reference_id": Limit(40, "Order.reference_id"),
        "order.ticket_name": Limit(30, "Order.ticket_name"),
        "order.metadata": Limit(10, "Order.metadata (entries)"),
        "order.metadata{key}": Limit(60, "Order.metadata (keys)", least=1, pattern=_META_KEY),
        "order.metadata{}": Limit(255, "Order.metadata (values)"),
        "order.line_items[].uid": Limit(60, "OrderLineItem.uid"),
        "order.line_items[].name": Limit(512, "OrderLineItem.name"),
        "order.line_items[].quantity": Limit(12, "OrderLineItem.quantity", least=1),
        "order.line_items[].note": Limit(2000, "OrderLineItem.note"),
        "order.line_items[].catalog_object_id": Limit(192, "OrderLineItem.catalog_object_id"),
        "order.line_items[].metadata": Limit(10, "OrderLineItem.metadata (entries)"),
        "order.line_items[].metadata{key}": Limit(60, "OrderLineItem.metadata (keys)", least=1, pattern=_META_KEY),
        "order.line_items[].metadata{}": Limit(255, "OrderLineItem.metadata (values)"),
        "order.line_items[].modifiers[].name": Limit(255, "OrderLineItemModifier.name"),
        "order.line_items[].modifiers[].catalog_object_id": Limit(192, "OrderLineItemModifier.catalog_object_id"),
        "order.service_charges[].uid": Limit(60, "OrderServiceCharge.uid"),
        "order.service_charges[].name": Limit(512, "OrderServiceCharge.name"),
        "order.discounts[].uid": Limit(60, "OrderLineItemDiscount.uid"),
        "order.discounts[].name": Limit(255, "OrderLineItemDiscount.name"),
        "order.discounts[].catalog_object_id": Limit(192, "OrderLineItemDiscount.catalog_object_id"),
        "order.fulfillments[].uid": Limit(60, "Fulfillment.uid"),
        "order.fulfillments[].pickup_details.note": Limit(500, "FulfillmentPickupDetails.note"),
        "order.fulfillments[].pickup_details.recipient.display_name": Limit(255, "FulfillmentRecipient.display_name"),
        "order.fulfillments[].pickup_details.recipient.email_address": Limit(255, "FulfillmentRecipient.email_address"),
        "order.fulfillments[].pickup_details.recipient.phone_number": Limit(17, "FulfillmentRecipient.phone_number"),
        "order.fulfillments[].delivery_details.note": Limit(550, "FulfillmentDeliveryDetails.note"),
        "order.fulfillments[].delivery_details.recipient.display_name": Limit(255, "FulfillmentRecipient.display_name"),
        "order.fulfillments[].delivery_details.recipient.email_address": Limit(
            255, "FulfillmentRecipient.email_address"
        ),
        "order.fulfillments[].delivery_details.recipient.phone_number": Limit(17, "FulfillmentRecipient.phone_number"),
        "order.fulfillments[].delivery_details.recipient.address.address_line_1": Limit(500, _ADDRESS),
        "order.fulfillments[].delivery_details.recipient.address.address_line_2": Limit(500, _ADDRESS),
        "order.fulfillments[].delivery_details.recipient.address.locality": Limit(500, _ADDRESS),
        "order.fulfillments[].delivery_details.recipient.address.postal_code": Limit(500, _ADDRESS),
    }
)

ELLIPSIS = "\u2026"
TAX_HINT = "check the Square tax setup: one tax only"
TICKET_PRINTED_PREFIX = "ALREADY PRINTED "
DELIVERY_FEE_NAME = "Delivery fee"
SERVICE_CHARGE_NAME = "Service charge"
TIP_NAME = "Tip"
NESTED_SEPARATOR = " > "
_SNIPPET_CHARS = 120
_DETAIL_CHARS = 300
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
_LINE_PATH = re.compile(r"line_items\[(\d+)\]")
_MODIFIER_PATH = re.compile(r"line_items\[(\d+)\]\.modifiers\[(\d+)\]")
_DISCOUNT_PATH = re.compile(r"discounts\[(\d+)\]")
_TAX_WORD = re.compile(r"\btax(es)?\b|tax_", re.IGNORECASE)
_RATE_LIMIT_CATEGORIES = frozenset({"RATE_LIMIT_ERROR", "RATE_LIMITED_ERROR"})
_PATH_TOKEN = re.compile(r"\[\]|\{key\}|\{\}|[A-Za-z0-9_]+")


# ---- Square's limits -------------------------------------------------------------------------------------------


def square_length(text: str) -> int:
    """Return the length Square's limits are checked against: UTF-16 code units.

    Square does not say how it counts. JSON Schema's maxLength counts code points and a Java service counts
    UTF-16 units (an emoji is two); counting UTF-16 units keeps a value within both.
    """
    return len(text.encode("utf-16-le")) // 2


def fit(field: str, text: str) -> str:
    """Return ``text`` within Square's limit for ``field`` (a ``LIMITS`` path): itself, or cut with an ellipsis."""
    most = LIMITS[field].most
    if square_length(text) <= most:
        return text
    return _head(text, most - square_length(ELLIPSIS)).rstrip() + ELLIPSIS


def _head(text: str, room: int) -> str:
    """Return the longest start of ``text`` whose ``square_length`` is at most ``room``."""
    kept: list[str] = []
    for char in text:
        room -= square_length(char)
        if room < 0:
            break
        kept.append(char)
    return "".join(kept)


def fits(field: str, text: str) -> bool:
    """Return whether ``text`` is within Square's limit for ``field`` as it is."""
    return square_length(text) <= LIMITS[field].most


class LimitBreach(NamedTuple):
    """A value Square would refuse for its length: where (Square's ``field``), Square's error code, and why."""

    field: str
    code: str
    detail: str


def reach(node: object, path: str) -> Iterator[tuple[str, object, bool]]:
    """Yield ``(field, value, is_key)`` for every place the ``LIMITS``-style ``path`` names in ``node``."""
    yield from _reach(node, _PATH_TOKEN.findall(path), "")


def _reach(node: object, tokens: Sequence[str], where: str) -> Iterator[tuple[str, object, bool]]:
    if not tokens:
        yield where, node, False
        return
    head, rest = tokens[0], tokens[1:]
    if head == "[]":
        if isinstance(node, list):
            for index, child in enumerate(node):
                yield from _reach(child, rest, f"{where}[{index}]")
    elif head in ("{}", "{key}"):
        if isinstance(node, dict):
            for key, child in node.items():
                if head == "{key}":
                    yield f"{where}.{key}", key, True
                else:
                    yield from _reach(child, rest, f"{where}.{key}")
    elif isinstance(node, dict) and head in node:
        yield from _reach(node[head], rest, f"{where}.{head}" if where else head)


def limit_breaches(body: Mapping[str, Any]) -> list[LimitBreach]:
    """Return every place a CreateOrder ``body`` breaks a row of ``LIMITS``, in table order (empty: none)."""
    found: list[LimitBreach] = []
    for path, limit in LIMITS.items():
        for field, value, is_key in reach(body, path):
            breach = _breach(field, value, is_key, limit)
            if breach is not None:
                found.append(breach)
    return found


def _breach(field: str, value: object, is_key: bool, limit: Limit) -> LimitBreach | None:
    # Square's codes are from its ErrorCode enum (api.json components.schemas.ErrorCode); the detail wording is
    # the simulator's own (Square's detail is free text "for debugging purposes").
    if isinstance(value, dict):
        if len(value) > limit.most:
            return LimitBreach(field, "TOO_MANY_MAP_ENTRIES", f"Must have at most {limit.most} entries")
        return None
    if not isinstance(value, str):
        return None  # a type error, which the simulator reports on its own
    size = square_length(value)
    if is_key:
        if size > limit.most:
            return LimitBreach(field, "MAP_KEY_LENGTH_TOO_LONG", f"Keys must be at most {limit.most} characters")
        if size < limit.least:
            return LimitBreach(field, "MAP_KEY_LENGTH_TOO_SHORT", f"Keys must be at least {limit.least} characters")
        if limit.pattern is not None and not re.fullmatch(limit.pattern, value):
            return LimitBreach(field, "VALUE_REGEX_MISMATCH", f"Keys must match {limit.pattern}")
        return None
    if size > limit.most:
        return LimitBreach(field, "VALUE_TOO_LONG", f"Field must not be greater than {limit.most} length")
    if size < limit.least:
        return LimitBreach(field, "VALUE_TOO_SHORT", f"Field must not be less than {limit.least} length")
    return None


# ---- the CreateOrder body --------------------------------------------------------------------------------------


def square_idempotency_key(key: str) -> str:
    """Return the CreateOrder idempotency key for an inject key: the key itself, hash-shortened past 192 chars."""
    return _fit_id(key, LIMITS["idempotency_key"].most)


def reference_id(order_id: str) -> str:
    """Return the order's Square ``reference_id``: its id, hash-shortened to 40 characters when longer."""
    return _fit_id(order_id, LIMITS["order.reference_id"].most)


def money(amount: int, currency: str) -> dict[str, Any]:
    """Return a Square Money object: integer minor units and an ISO 4217 code."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        msg = f"money must be integer minor units, not {amount!r}"
        raise TypeError(msg)
    return {"amount": amount, "currency": currency}


def build_create_order(
    order: Order,
    *,
    location_id: str,
    idempotency_key: str,
    catalog: Mapping[str, str],
    already_printed: bool,
    phone_region: str | None = None,
) -> dict[str, Any]:
    """Return the ``POST /v2/orders`` body for ``order``, within every limit of ``LIMITS`` (see the module docstring).

    ``phone_region`` (ISO 3166-1 alpha-2, the venue's country) places a phone number typed without its
    country code.
    """
    currency = order.payment.currency
    dine_in = order.fulfillment.type is FulfillmentType.DINE_IN
    # Full texts of order-level values cut to fit: they go into the fulfilment note (dine-in: first line's note).
    spilled: list[str] = []
    discounts = [_discount(d, i, currency, spilled) for i, d in enumerate(order.discounts) if d.amount > 0]
    fulfillment = None if dine_in else _fulfillment(order, already_printed, phone_region, spilled)
    # An order without a fulfilment has no other free text Square shows: its own text leads the first line's note.
    order_text = f"ORDER: {_join(_dine_in_text(order), *spilled)}" if dine_in else None
    lines = [
        _line_item(item, index, catalog, currency, lead=order_text if index == 0 else None, marked=already_printed)
        for index, item in enumerate(order.items)
    ]
    body: dict[str, Any] = {
        "location_id": location_id,
        "reference_id": reference_id(order.id),
        "source": {"name": f"ONLINE/{order.source}"},
        "ticket_name": _ticket_name(order, already_printed=already_printed),
        "line_items": lines,
        "pricing_options": {"auto_apply_taxes": True, "auto_apply_discounts": False},
        "metadata": _metadata(order, already_printed=already_printed),
    }
    if fulfillment is not None:
        body["fulfillments"] = [fulfillment]
    charges = _service_charges(order, currency)
    if charges:
        body["service_charges"] = charges
    if discounts:
        body["discounts"] = discounts
    return {"idempotency_key": square_idempotency_key(idempotency_key), "order": body}


def _line_item(
    item: Item, index: int, catalog: Mapping[str, str], currency: str, *, lead: str | None, marked: bool
) -> dict[str, Any]:
    line: dict[str, Any] = {"uid": f"line-{index + 1}", "quantity": str(item.quantity)}
    spilled: list[str] = []
    catalog_id = catalog.get(item.sku) if item.sku else None
    if catalog_id:
        line["catalog_object_id"] = catalog_id
    else:
        line["name"] = _fitted("order.line_items[].name", item.name, spilled, "Item")
    line["base_price_money"] = money(item.unit_price, currency)
    modifiers = _modifiers(item.modifiers, catalog, currency, prefix="", per_item=1, spilled=spilled)
    allergens = f"Allergens: {', '.join(item.allergens)}" if item.allergens else None
    note = _join_note(lead, item.notes, allergens, *spilled, already_printed=marked)
    if note:
        line["note"] = fit("order.line_items[].note", note)
    if modifiers:
        line["modifiers"] = modifiers
    if item.sku:
        line["metadata"] = {"sku": fit("order.line_items[].metadata{}", item.sku)}
    return line


def _modifiers(
    modifiers: Sequence[Modifier],
    catalog: Mapping[str, str],
    currency: str,
    *,
    prefix: str,
    per_item: int,
    spilled: list[str],
) -> list[dict[str, Any]]:
    """Return Square modifiers, nested choices flattened as "Parent > Child" with per-item quantities."""
    flat: list[dict[str, Any]] = []
    for modifier in modifiers:
        name = f"{prefix}{modifier.name}"
        # Square prices a modifier as base price x modifier quantity x line quantity: a nested choice counts
        # once per unit of its parent, so its quantity is multiplied down the tree.
        quantity = per_item * modifier.quantity
        entry: dict[str, Any] = {"quantity": str(quantity)}
        catalog_id = catalog.get(modifier.sku) if modifier.sku else None
        if catalog_id:
            entry["catalog_object_id"] = catalog_id
        else:
            entry["name"] = _fitted("order.line_items[].modifiers[].name", name, spilled, "Modifier")
        entry["base_price_money"] = money(modifier.unit_price, currency)
        flat.append(entry)
        flat.extend(
            _modifiers(
                modifier.modifiers,
                catalog,
                currency,
                prefix=f"{name}{NESTED_SEPARATOR}",
                per_item=quantity,
                spilled=spilled,
            )
        )
    return flat


def _fulfillment(order: Order, already_printed: bool, phone_region: str | None, spilled: list[str]) -> dict[str, Any]:
    fulfillment = order.fulfillment
    delivery = fulfillment.type is FulfillmentType.DELIVERY
    kind = "delivery_details" if delivery else "pickup_details"
    at = f"order.fulfillments[].{kind}"
    recipient: dict[str, Any] = {}
    # Shown first in the note, so a note cut to fit never loses how to reach the customer.
    contact: list[str] = []
    customer = order.customer
    if customer is not None:
        if customer.name:
            recipient["display_name"] = _fitted(f"{at}.recipient.display_name", customer.name, spilled, "Name")
        if customer.phone:
            e164 = to_e164(customer.phone, phone_region)
            if e164 is not None and fits(f"{at}.recipient.phone_number", e164):
                recipient["phone_number"] = e164
            else:
                contact.append(f"Phone: {customer.phone}")
        if customer.email:
            # A cut email address reaches nobody: one too long is shown to staff instead.
            if fits(f"{at}.recipient.email_address", customer.email):
                recipient["email_address"] = customer.email
            else:
                contact.append(f"Email: {customer.email}")
    if delivery and fulfillment.address is not None:
        address = fulfillment.address
        square_address = {
            "address_line_1": address.line1,
            "address_line_2": address.line2,
            "locality": address.city,
            "postal_code": address.postcode,
        }
        recipient["address"] = {
            key: _fitted(f"{at}.recipient.address.{key}", value, spilled, "Address")
            for key, value in square_address.items()
            if value
        }
    details: dict[str, Any] = {"recipient": recipient}
    if order.requested_at is None:
        details["schedule_type"] = "ASAP"
    else:
        details["schedule_type"] = "SCHEDULED"
        details["deliver_at" if delivery else "pickup_at"] = order.requested_at.isoformat()
    note = _join_note(*contact, fulfillment.instructions, order.notes, *spilled, already_printed=already_printed)
    if note:
        details["note"] = fit(f"{at}.note", note)
    return {"uid": "fulfillment-1", "type": "DELIVERY" if delivery else "PICKUP", kind: details}


def _fitted(field: str, text: str, spilled: list[str], label: str) -> str:
    """Return ``text`` fitted to ``field``; when it had to be cut, its full text is added to ``spilled``."""
    shown = fit(field, text)
    if shown != text:
        spilled.append(f"{label}: {text}")
    return shown


def _dine_in_text(order: Order) -> str:
    fulfillment = order.fulfillment
    table = f"Table {fulfillment.table}"
    if fulfillment.covers:
        table += f", {fulfillment.covers} covers"
    return _join(table, fulfillment.instructions, order.notes)


def _ticket_name(order: Order, *, already_printed: bool) -> str:
    if order.fulfillment.type is FulfillmentType.DINE_IN:
        name = f"Table {order.fulfillment.table}"
    else:
        who = order.customer.name if order.customer and order.customer.name else ""
        name = " ".join(p for p in (order.display_code, who) if p) or order.id
    if already_printed:
        name = f"{TICKET_PRINTED_PREFIX}{name}"
    # The whole name is elsewhere: the table in the first line's note, the customer in the recipient.
    return fit("order.ticket_name", name)


def _metadata(order: Order, *, already_printed: bool) -> dict[str, str]:
    data = {"venue_order_id": order.id, "source": order.source}
    if order.venue_id:
        data["venue_id"] = order.venue_id
    if order.display_code:
        data["display_code"] = order.display_code
    if already_printed:
        data["already_printed"] = "true"
    return {k: fit("order.metadata{}", v) for k, v in data.items()}


def _service_charges(order: Order, currency: str) -> list[dict[str, Any]]:
    charges = order.charges
    found: list[dict[str, Any]] = []
    for uid, name, amount, phase in (
        ("delivery-fee", DELIVERY_FEE_NAME, charges.delivery_fee, "SUBTOTAL_PHASE"),
        ("service-charge", SERVICE_CHARGE_NAME, charges.service_charge, "SUBTOTAL_PHASE"),
        # After tax: a tip is never taxed, and TOTAL_PHASE charges cannot be taxable.
        ("tip", TIP_NAME, charges.tip, "TOTAL_PHASE"),
    ):
        if amount > 0:
            found.append(
                {
                    "uid": uid,
                    "name": fit("order.service_charges[].name", name),
                    "amount_money": money(amount, currency),
                    "calculation_phase": phase,
                    "taxable": False,
                }
            )
    return found


def _discount(discount: Discount, index: int, currency: str, spilled: list[str]) -> dict[str, Any]:
    entry: dict[str, Any] = {"uid": f"discount-{index + 1}"}
    if discount.pos_id:
        # The seller's own discount; a variable-amount catalog discount takes the amount given here.
        entry["catalog_object_id"] = discount.pos_id
    else:
        entry["name"] = _fitted("order.discounts[].name", discount_name(discount), spilled, "Discount")
        entry["type"] = "FIXED_AMOUNT"
    entry["amount_money"] = money(discount.amount, currency)
    entry["scope"] = "ORDER"
    return entry


def discount_name(discount: Discount) -> str:
    """Return the name a discount shows in Square: its description and code, else its kind."""
    if discount.description and discount.code:
        return f"{discount.description} ({discount.code})"
    return discount.description or discount.code or discount.kind.value.replace("_", " ").capitalize()


def _join(*parts: str | None) -> str:
    return "; ".join(p for p in parts if p)


def _join_note(*parts: str | None, already_printed: bool) -> str:
    text = _join(*parts)
    if not already_printed:
        return text
    if text.startswith(ALREADY_PRINTED_NOTE):
        return text
    return f"{ALREADY_PRINTED_NOTE} - {text}" if text else ALREADY_PRINTED_NOTE


# ---- answers ---------------------------------------------------------------------------------------------------


def decode_body(content: bytes) -> object:
    """Return the JSON an answer carries, or the raw bytes when it is not JSON."""
    try:
        return json.loads(content)
    except (
        ValueError,
        UnicodeDecodeError,
        RecursionError,
    ):  # RecursionError: a nesting bomb from a broken or hostile POS is just not JSON
        return content


def classify_error(
    status: int,
    body: object,
    retry_after: float | None,
    *,
    catalog: Mapping[str, str] | None = None,
    sent: Mapping[str, Any] | None = None,
) -> InjectResult:
    """Turn Square's answer to CreateOrder into a result, as SPEC §7.2 says.

    ``body`` is the decoded JSON, or the raw bytes/text when the answer was not JSON. ``catalog`` (SKU to
    catalog object id) and ``sent`` (the body sent) let a NOT_FOUND name the SKU behind a catalog id.
    """
    answer = _SquareAnswer(status, body)
    if 200 <= status < 300:
        order_id = answer.order_id()
        if order_id is not None:
            return Injected(pos_reference=order_id)
        # Square may have created the order; only a resend with the same key can tell.
        return Transient(
            reason=f"Square answered {status} without an order id; it may have the order. {answer.evidence()}",
            status=status,
            in_doubt=True,
        )
    if status == 429 or answer.has_category(*_RATE_LIMIT_CATEGORIES) or answer.has_code("RATE_LIMITED"):
        return Transient(
            reason=f"Square is limiting how fast it takes requests. {answer.evidence()}",
            retry_after=retry_after,
            status=status,
        )
    if status >= 500:
        return Transient(
            reason=f"Square had a server error. {answer.evidence()}", retry_after=retry_after, status=status
        )
    if status in (401, 403) or answer.has_category("AUTHENTICATION_ERROR"):
        return Permanent(
            ErrorClass.AUTH,
            f"Square refused the access token: check pos.square.access_token. {answer.evidence()}",
            status=status,
        )
    if status < 400:
        return Transient(
            reason=f"Square gave an answer the agent does not understand. {answer.evidence()}", status=status
        )
    if not answer.is_square_json:
        return Permanent(
            ErrorClass.REJECTED,
            f"The POS answered something that is not Square JSON: check pos.square.base_url. {answer.evidence()}",
            status=status,
        )
    if answer.has_code("IDEMPOTENCY_KEY_REUSED") or "idempotency" in answer.words().lower():
        return Permanent(
            ErrorClass.REJECTED,
            "Square already took a request with this order's idempotency key but different content (changed, or "
            "marked already printed, after an attempt whose answer was lost); it may already be in Square: check "
            f"the Square order manager before entering it by hand. {answer.evidence()}",
            status=status,
        )
    if answer.has_code("NOT_FOUND") or status == 404:
        if "location" in answer.words().lower():
            return Permanent(
                ErrorClass.REJECTED,
                f"Square does not know the location: check pos.square.location_id. {answer.evidence()}",
                status=status,
            )
        skus = answer.skus(catalog or {}, sent or {})
        listed = f" (SKU {', '.join(skus)})" if skus else ""
        return Permanent(
            ErrorClass.MENU,
            f"Square does not know a catalog object of this order{listed}: check [pos.square.catalog]. "
            f"{answer.evidence()}",
            status=status,
            skus=skus,
        )
    if "sold out" in answer.words().lower():
        skus = answer.skus(catalog or {}, sent or {})
        return Permanent(
            ErrorClass.UNAVAILABLE, f"Square says items are sold out. {answer.evidence()}", status=status, skus=skus
        )
    hint = f" {TAX_HINT}." if answer.tax_related() else ""
    return Permanent(ErrorClass.REJECTED, f"Square rejected the order.{hint} {answer.evidence()}", status=status)


def classify_probe(status: int, body: object, latency_ms: float | None, location_id: str) -> Readiness:
    """Turn the answer to ``GET /v2/locations/{id}`` into a readiness."""
    answer = _SquareAnswer(status, body)
    if status in (401, 403) or answer.has_category("AUTHENTICATION_ERROR"):
        return Readiness(
            ReadinessState.AUTH_REQUIRED, latency_ms, f"Square refused the access token. {answer.evidence()}"
        )
    if status == 200 and isinstance(body, dict) and isinstance(body.get("location"), dict):
        location = body["location"]
        state = location.get("status")
        active = state in (None, "ACTIVE")
        conditions = {"authenticated": True, "location_active": active}
        if active:
            return Readiness(ReadinessState.READY, latency_ms, f"Square location {location_id} is active", conditions)
        return Readiness(ReadinessState.NOT_READY, latency_ms, f"Square location {location_id} is {state}", conditions)
    if status == 404:
        return Readiness(
            ReadinessState.NOT_READY,
            latency_ms,
            f"Square has no location {location_id}: check pos.square.location_id. {answer.evidence()}",
            {"authenticated": True, "location_active": False},
        )
    return Readiness(ReadinessState.UNREACHABLE, latency_ms, f"The Square readiness check failed. {answer.evidence()}")


class _SquareAnswer:
    """A Square answer whose body may or may not be the ``{"errors": [...]}`` envelope."""

    def __init__(self, status: int, body: object) -> None:
        self.status = status
        self.body = body
        if isinstance(body, str | bytes | bytearray):
            decoded = decode_body(bytes(body, "utf-8") if isinstance(body, str) else bytes(body))
        else:
            decoded = body
        self.data: dict[str, Any] = decoded if isinstance(decoded, dict) else {}
        raw_errors = self.data.get("errors")
        self.errors: list[dict[str, Any]] = (
            [e for e in raw_errors if isinstance(e, dict)] if isinstance(raw_errors, list) else []
        )
        self.is_square_json = isinstance(decoded, dict) and (bool(self.errors) or "order" in self.data)

    def order_id(self) -> str | None:
        """Return ``order.id`` of a CreateOrder answer."""
        order = self.data.get("order")
        value = order.get("id") if isinstance(order, dict) else None
        return value if isinstance(value, str) and value else None

    def has_category(self, *categories: str) -> bool:
        """Return whether any error has one of ``categories``."""
        return any(e.get("category") in categories for e in self.errors)

    def has_code(self, code: str) -> bool:
        """Return whether any error has ``code``."""
        return any(e.get("code") == code for e in self.errors)

    def words(self) -> str:
        """Return every error's code, detail and field, for matching."""
        return " ".join(str(e.get(k, "")) for e in self.errors for k in ("code", "detail", "field"))

    def tax_related(self) -> bool:
        """Return whether an error is about taxes (field or detail)."""
        return any(_TAX_WORD.search(f"{e.get('field', '')} {e.get('detail', '')}") for e in self.errors)

    def skus(self, catalog: Mapping[str, str], sent: Mapping[str, Any]) -> tuple[str, ...]:
        """Return the SKUs behind the catalog ids or line items the errors point at."""
        by_id = {object_id: sku for sku, object_id in catalog.items()}
        order = sent.get("order") if isinstance(sent.get("order"), dict) else {}
        assert isinstance(order, dict)
        found: list[str] = []
        for error in self.errors:
            field = str(error.get("field") or "")
            detail = str(error.get("detail") or "")
            sku = _sku_at(field, order, by_id) or next((s for i, s in by_id.items() if i and i in detail), None)
            if sku and sku not in found:
                found.append(sku)
        return tuple(found)

    def evidence(self) -> str:
        """Return one sentence on the answer: Square's errors, or a snippet of a body that is not Square JSON."""
        if self.errors:
            shown = [_describe_error(e) for e in self.errors[:3]]
            more = f" (+{len(self.errors) - 3} more)" if len(self.errors) > 3 else ""
            return f"Square answered {self.status}: {'; '.join(shown)}{more}"
        if isinstance(self.body, bytes | bytearray | str):
            text = self.body.decode("utf-8", errors="replace") if not isinstance(self.body, str) else self.body
            if not text.strip():
                return f"POS answered {self.status} with an empty body."
            if text.lstrip().startswith("<"):
                text = _TAG.sub(" ", text)
            return f"POS answered {self.status} with a non-JSON body: {_shorten(text, _SNIPPET_CHARS)}"
        return f"POS answered {self.status}: {_shorten(json.dumps(self.body, default=str), _SNIPPET_CHARS)}"


def _sku_at(field: str, order: Mapping[str, Any], by_id: Mapping[str, str]) -> str | None:
    """Return the SKU of the line, modifier or discount a Square ``field`` path names, if known."""
    lines = order.get("line_items") if isinstance(order.get("line_items"), list) else []
    assert isinstance(lines, list)
    match = _MODIFIER_PATH.search(field)
    if match:
        line_index, modifier_index = int(match[1]), int(match[2])
        if line_index < len(lines) and isinstance(lines[line_index], dict):
            modifiers = lines[line_index].get("modifiers") or []
            if modifier_index < len(modifiers) and isinstance(modifiers[modifier_index], dict):
                return by_id.get(str(modifiers[modifier_index].get("catalog_object_id")))
        return None
    match = _LINE_PATH.search(field)
    if match:
        index = int(match[1])
        if index < len(lines) and isinstance(lines[index], dict):
            line = lines[index]
            metadata = line.get("metadata") if isinstance(line.get("metadata"), dict) else {}
            assert isinstance(metadata, dict)
            sku = metadata.get("sku")
            return sku if isinstance(sku, str) else by_id.get(str(line.get("catalog_object_id")))
        return None
    match = _DISCOUNT_PATH.search(field)
    if match:
        discounts = order.get("discounts") if isinstance(order.get("discounts"), list) else []
        assert isinstance(discounts, list)
        index = int(match[1])
        if index < len(discounts) and isinstance(discounts[index], dict):
            object_id = discounts[index].get("catalog_object_id")
            return str(object_id) if object_id else None
    return None


def _describe_error(error: Mapping[str, Any]) -> str:
    code = str(error.get("code") or error.get("category") or "ERROR")
    detail = error.get("detail")
    field = error.get("field")
    text = code
    if detail:
        text += f": {_shorten(str(detail), _DETAIL_CHARS)}"
    if field:
        text += f" (field {field})"
    return text


def _fit_id(text: str, limit: int) -> str:
    """Return an identifier within ``limit``: itself, or a stable hash-shortened form (an id cannot be cut)."""
    if square_length(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return f"{_head(text, limit - len(digest) - 1)}-{digest}"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _shorten(text: str, limit: int) -> str:
    return _cut(_SPACE.sub(" ", text).strip(), limit)
