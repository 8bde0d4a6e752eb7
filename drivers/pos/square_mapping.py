"""The Square Orders API (SPEC §7.2) as pure functions: the CreateOrder body, and what Square's answers mean.

No I/O here: ``drivers.pos.square`` does the network, and the simulator's Square dialect checks bodies
against the same limits.

Mapping choices the Square reference forces (docs/reference pos-apis.md §2):

- Square fulfilments are PICKUP, DELIVERY or SHIPMENT only. A dine-in order gets no fulfilment: the table
  goes into ``ticket_name`` (Square's "short-term identifier, such as a table number") and the table,
  covers, instructions and order notes into the first line's note, the only free text Square shows for an
  order without a fulfilment (an Order has no order-level note).
- Square carries tips on the payment (``tip_money``), not on the order, and this agent creates no payment.
  The tip becomes a TOTAL_PHASE, non-taxable service charge named "Tip", so the order's total in Square
  equals what the customer paid.
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
from collections.abc import Mapping, Sequence
from typing import Any

from agent.models import Discount, FulfillmentType, Item, Modifier, Order
from agent.states import ErrorClass
from drivers.pos.base import (
    ALREADY_PRINTED_NOTE,
    Injected,
    InjectResult,
    Permanent,
    Readiness,
    ReadinessState,
    Transient,
)

IDEMPOTENCY_KEY_MAX = 192
REFERENCE_ID_MAX = 40
TICKET_NAME_MAX = 30
FULFILLMENT_NOTE_MAX = 550
LINE_NOTE_MAX = 2000
NAME_MAX = 255
METADATA_VALUE_MAX = 255
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


def square_idempotency_key(key: str) -> str:
    """Return the CreateOrder idempotency key for an inject key: the key itself, hash-shortened past 192 chars."""
    return _fit(key, IDEMPOTENCY_KEY_MAX)


def reference_id(order_id: str) -> str:
    """Return the order's Square ``reference_id``: its id, hash-shortened to 40 characters when longer."""
    return _fit(order_id, REFERENCE_ID_MAX)


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
) -> dict[str, Any]:
    """Return the ``POST /v2/orders`` body for ``order`` (see the module docstring for the mapping choices)."""
    currency = order.payment.currency
    dine_in = order.fulfillment.type is FulfillmentType.DINE_IN
    # An order without a fulfilment has no other free text Square shows: its own text leads the first line's note.
    order_text = f"ORDER: {_dine_in_text(order)}" if dine_in else None
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
    if not dine_in:
        body["fulfillments"] = [_fulfillment(order, already_printed=already_printed)]
    charges = _service_charges(order, currency)
    if charges:
        body["service_charges"] = charges
    discounts = [_discount(d, i, currency) for i, d in enumerate(order.discounts) if d.amount > 0]
    if discounts:
        body["discounts"] = discounts
    return {"idempotency_key": square_idempotency_key(idempotency_key), "order": body}


def _line_item(
    item: Item, index: int, catalog: Mapping[str, str], currency: str, *, lead: str | None, marked: bool
) -> dict[str, Any]:
    line: dict[str, Any] = {"uid": f"line-{index + 1}", "quantity": str(item.quantity)}
    catalog_id = catalog.get(item.sku) if item.sku else None
    if catalog_id:
        line["catalog_object_id"] = catalog_id
    else:
        line["name"] = _cut(item.name, 512)
    line["base_price_money"] = money(item.unit_price, currency)
    allergens = f"Allergens: {', '.join(item.allergens)}" if item.allergens else None
    note = _join_note(lead, item.notes, allergens, already_printed=marked)
    if note:
        line["note"] = _cut(note, LINE_NOTE_MAX)
    modifiers = _modifiers(item.modifiers, catalog, currency, prefix="", per_item=1)
    if modifiers:
        line["modifiers"] = modifiers
    if item.sku:
        line["metadata"] = {"sku": item.sku}
    return line


def _modifiers(
    modifiers: Sequence[Modifier], catalog: Mapping[str, str], currency: str, *, prefix: str, per_item: int
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
            entry["name"] = _cut(name, NAME_MAX)
        entry["base_price_money"] = money(modifier.unit_price, currency)
        flat.append(entry)
        flat.extend(
            _modifiers(modifier.modifiers, catalog, currency, prefix=f"{name}{NESTED_SEPARATOR}", per_item=quantity)
        )
    return flat


def _fulfillment(order: Order, *, already_printed: bool) -> dict[str, Any]:
    fulfillment = order.fulfillment
    delivery = fulfillment.type is FulfillmentType.DELIVERY
    recipient: dict[str, Any] = {}
    customer = order.customer
    if customer is not None:
        if customer.name:
            recipient["display_name"] = customer.name
        if customer.phone:
            recipient["phone_number"] = customer.phone
        if customer.email:
            recipient["email_address"] = customer.email
    if delivery and fulfillment.address is not None:
        address = fulfillment.address
        square_address = {
            "address_line_1": address.line1,
            "address_line_2": address.line2,
            "locality": address.city,
            "postal_code": address.postcode,
        }
        recipient["address"] = {k: v for k, v in square_address.items() if v}
    details: dict[str, Any] = {"recipient": recipient}
    if order.requested_at is None:
        details["schedule_type"] = "ASAP"
    else:
        details["schedule_type"] = "SCHEDULED"
        details["deliver_at" if delivery else "pickup_at"] = order.requested_at.isoformat()
    note = _join_note(fulfillment.instructions, order.notes, already_printed=already_printed)
    if note:
        details["note"] = _cut(note, FULFILLMENT_NOTE_MAX)
    if delivery:
        return {"uid": "fulfillment-1", "type": "DELIVERY", "delivery_details": details}
    return {"uid": "fulfillment-1", "type": "PICKUP", "pickup_details": details}


def _dine_in_text(order: Order) -> str:
    fulfillment = order.fulfillment
    table = f"Table {fulfillment.table}"
    if fulfillment.covers:
        table += f", {fulfillment.covers} covers"
    parts = [table, fulfillment.instructions, order.notes]
    return "; ".join(p for p in parts if p)


def _ticket_name(order: Order, *, already_printed: bool) -> str:
    if order.fulfillment.type is FulfillmentType.DINE_IN:
        name = f"Table {order.fulfillment.table}"
    else:
        who = order.customer.name if order.customer and order.customer.name else ""
        name = " ".join(p for p in (order.display_code, who) if p) or order.id
    if already_printed:
        name = f"{TICKET_PRINTED_PREFIX}{name}"
    return _cut(name, TICKET_NAME_MAX)


def _metadata(order: Order, *, already_printed: bool) -> dict[str, str]:
    data = {"venue_order_id": order.id, "source": order.source}
    if order.venue_id:
        data["venue_id"] = order.venue_id
    if order.display_code:
        data["display_code"] = order.display_code
    if already_printed:
        data["already_printed"] = "true"
    return {k: _cut(v, METADATA_VALUE_MAX) for k, v in data.items()}


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
                    "name": name,
                    "amount_money": money(amount, currency),
                    "calculation_phase": phase,
                    "taxable": False,
                }
            )
    return found


def _discount(discount: Discount, index: int, currency: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"uid": f"discount-{index + 1}"}
    if discount.pos_id:
        # The seller's own discount; a variable-amount catalog discount takes the amount given here.
        entry["catalog_object_id"] = discount.pos_id
    else:
        entry["name"] = _cut(discount_name(discount), NAME_MAX)
        entry["type"] = "FIXED_AMOUNT"
    entry["amount_money"] = money(discount.amount, currency)
    entry["scope"] = "ORDER"
    return entry


def discount_name(discount: Discount) -> str:
    """Return the name a discount shows in Square: its description and code, else its kind."""
    if discount.description and discount.code:
        return f"{discount.description} ({discount.code})"
    return discount.description or discount.code or discount.kind.value.replace("_", " ").capitalize()


def _join_note(*parts: str | None, already_printed: bool) -> str:
    text = "; ".join(p for p in parts if p)
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


def _fit(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return f"{text[: limit - len(digest) - 1]}-{digest}"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _shorten(text: str, limit: int) -> str:
    return _cut(_SPACE.sub(" ", text).strip(), limit)
