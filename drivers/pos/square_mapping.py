"""The Square Orders API's CreateOrder body (docs/square.md) as pure functions, built within Square's limits.

No I/O here: ``drivers.pos.square`` does the network. The limits are ``square_limits.LIMITS`` (which the simulator's
Square dialect checks bodies against too); what Square's answers mean is ``square_answers``.

Mapping choices Square's Orders API reference forces:

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
  (one tax only, docs/square.md), and ``auto_apply_discounts`` is off because the order's discounts are sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agent.domain.models import Discount, FulfillmentType, Item, Modifier, Order
from drivers.pos.base import (
    ALREADY_PRINTED_NOTE,
)
from drivers.pos.phone import to_e164
from drivers.pos.square_limits import LIMITS, fit, fit_id, fits

TICKET_PRINTED_PREFIX = "ALREADY PRINTED "
DELIVERY_FEE_NAME = "Delivery fee"
SERVICE_CHARGE_NAME = "Service charge"
TIP_NAME = "Tip"
NESTED_SEPARATOR = " > "


def square_idempotency_key(key: str) -> str:
    """Return the CreateOrder idempotency key for an inject key: the key itself, hash-shortened past 192 chars."""
    return fit_id(key, LIMITS["idempotency_key"].most)


def reference_id(order_id: str) -> str:
    """Return the order's Square ``reference_id``: its id, hash-shortened to 40 characters when longer."""
    return fit_id(order_id, LIMITS["order.reference_id"].most)


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
