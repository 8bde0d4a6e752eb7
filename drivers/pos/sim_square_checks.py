"""What the simulator's Square dialect refuses in a CreateOrder body, in Square's words and error envelope.

Checks of one part of an order each (quantities, money, catalog or ad hoc identity, metadata, service charges,
fulfillments, read-only fields, every length limit of ``square_limits.LIMITS``); each raises the ``SquareError``
Square would answer. ``sim_square`` runs them in Square's order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from drivers.pos.square_limits import limit_breaches, reach

_QUANTITY = re.compile(r"^\d{1,7}(\.\d{1,5})?$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_FULFILLMENT_TYPES = frozenset({"PICKUP", "DELIVERY", "SHIPMENT"})
_SCHEDULE_TYPES = frozenset({"ASAP", "SCHEDULED"})
_PHASES = frozenset({"SUBTOTAL_PHASE", "TOTAL_PHASE", "APPORTIONED_PERCENTAGE_PHASE", "APPORTIONED_AMOUNT_PHASE"})
# OrderLineItemDiscount.type: "Discounts that do not reference a catalog object ID must have a type of
# FIXED_PERCENTAGE or FIXED_AMOUNT". The type may be left out (api.json's own CreateOrderRequest example does).
AD_HOC_DISCOUNT_TYPES = frozenset({"FIXED_PERCENTAGE", "FIXED_AMOUNT"})
# Fields Square computes, which a request cannot set: the properties marked readOnly in api.json (release
# 2025-08-20) of every object a CreateOrder body holds. Square may ignore them rather than refuse them
# (unverified); the simulator refuses them, so a mapping that relies on one (an order tip) is caught.
_READ_ONLY: dict[str, tuple[str, ...]] = {
    "order": (
        "id",
        "returns",
        "return_amounts",
        "net_amounts",
        "rounding_adjustment",
        "tenders",
        "refunds",
        "created_at",
        "updated_at",
        "closed_at",
        "total_money",
        "total_tax_money",
        "total_discount_money",
        "total_tip_money",
        "total_service_charge_money",
        "rewards",
        "net_amount_due_money",
    ),
    "order.line_items[]": (
        "variation_total_price_money",
        "gross_sales_money",
        "total_tax_money",
        "total_discount_money",
        "total_money",
        "total_service_charge_money",
    ),
    "order.line_items[].modifiers[]": ("total_price_money",),
    "order.fulfillments[]": ("line_item_application", "entries"),
    "order.fulfillments[].pickup_details": (
        "placed_at",
        "accepted_at",
        "rejected_at",
        "ready_at",
        "expired_at",
        "picked_up_at",
        "canceled_at",
    ),
    "order.fulfillments[].delivery_details": (
        "placed_at",
        "in_progress_at",
        "rejected_at",
        "ready_at",
        "delivered_at",
        "canceled_at",
    ),
    "order.service_charges[]": ("applied_money", "total_money", "total_tax_money", "type"),
    "order.discounts[]": ("reward_ids", "pricing_rule_id"),
}


class SquareError(Exception):
    """A request Square would refuse: the status and the errors of the envelope (one, or several)."""

    def __init__(self, status: int, category: str, code: str, detail: str, path: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        error: dict[str, str] = {"category": category, "code": code, "detail": detail}
        if path is not None:
            error["field"] = path
        self.errors: list[dict[str, str]] = [error]

    def also(self, more: SquareError) -> SquareError:
        """Return this error with ``more``'s errors after its own (the status stays the first one's)."""
        self.errors.extend(more.errors)
        return self


def invalid(code: str, detail: str, field: str) -> SquareError:
    return SquareError(400, "INVALID_REQUEST_ERROR", code, detail, field)


def json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise SquareError(400, "INVALID_REQUEST_ERROR", "INVALID_CONTENT_TYPE", "The body is not JSON") from None
    if not isinstance(body, dict):
        raise SquareError(400, "INVALID_REQUEST_ERROR", "INCORRECT_TYPE", "Expected a JSON object")
    return body


def object_list(order: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    value = order.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise invalid("INCORRECT_TYPE", "Expected a list of objects", f"order.{name}")
    return value


def check_quantity(value: object, where: str) -> None:
    if not isinstance(value, str):
        raise invalid("INCORRECT_TYPE", f"Expected a string value, got {type(value).__name__}", where)
    if not _QUANTITY.match(value):
        raise invalid("INVALID_VALUE", "Quantity must be a decimal number", where)


def check_money(value: object, where: str, currencies: set[str]) -> None:
    if not isinstance(value, dict):
        raise invalid("MISSING_REQUIRED_PARAMETER", "Field must be set", where)
    amount = value.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise invalid("INCORRECT_TYPE", f"Expected an integer amount, got {amount!r}", f"{where}.amount")
    if amount < 0:
        raise invalid("INVALID_VALUE", "Amount must not be negative", f"{where}.amount")
    currency = value.get("currency")
    if not isinstance(currency, str) or not _CURRENCY.match(currency):
        raise invalid("INVALID_ENUM_VALUE", f"Unknown currency {currency!r}", f"{where}.currency")
    currencies.add(currency)


def check_item_identity(
    entry: Mapping[str, Any], where: str, currencies: set[str], catalog_refs: list[tuple[str, str]]
) -> None:
    """Check an entry is either a catalog reference or ad hoc with a name and a price."""
    object_id = entry.get("catalog_object_id")
    if object_id is not None:
        if not isinstance(object_id, str) or not object_id:
            raise invalid("INCORRECT_TYPE", "Expected a string", f"{where}.catalog_object_id")
        catalog_refs.append((object_id, f"{where}.catalog_object_id"))
    elif not isinstance(entry.get("name"), str) or not entry["name"]:
        raise invalid("MISSING_REQUIRED_PARAMETER", "An ad hoc entry needs a name", f"{where}.name")
    elif "base_price_money" not in entry:
        raise invalid("MISSING_REQUIRED_PARAMETER", "An ad hoc entry needs a price", f"{where}.base_price_money")
    if "base_price_money" in entry:
        check_money(entry["base_price_money"], f"{where}.base_price_money", currencies)


def check_metadata(value: object, where: str) -> None:
    """Check a metadata map holds strings (its sizes are rows of LIMITS)."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise invalid("EXPECTED_MAP", "Expected a map of strings", where)
    for key, item in value.items():
        if not isinstance(item, str):
            raise invalid("EXPECTED_STRING", "Metadata values are strings", f"{where}.{key}")


def raise_breaches(body: Mapping[str, Any]) -> None:
    """Raise every length error Square would answer for ``body`` at once, in one envelope."""
    breaches = limit_breaches(body)
    if not breaches:
        return
    first, *rest = (invalid(b.code, b.detail, b.field) for b in breaches)
    for more in rest:
        first.also(more)
    raise first


def check_read_only(order: Mapping[str, Any]) -> None:
    for where, names in _READ_ONLY.items():
        for name in names:
            for path, _, _ in reach({"order": order}, f"{where}.{name}"):
                raise invalid("INVALID_VALUE", "This field is read-only: Square computes it", path)


def check_service_charge(
    charge: Mapping[str, Any], where: str, currencies: set[str], catalog_refs: list[tuple[str, str]]
) -> None:
    if charge.get("calculation_phase") not in _PHASES:
        raise invalid("INVALID_ENUM_VALUE", "Unknown calculation phase", f"{where}.calculation_phase")
    # OrderServiceCharge.taxable: "service charges calculated in the TOTAL_PHASE cannot be marked as taxable".
    if charge.get("calculation_phase") == "TOTAL_PHASE" and charge.get("taxable"):
        raise invalid("INVALID_VALUE", "TOTAL_PHASE service charges cannot be taxable", f"{where}.taxable")
    # OrderServiceCharge.amount_money: "Exactly one of percentage or amount_money should be set."
    if "percentage" in charge and "amount_money" in charge:
        raise invalid("CONFLICTING_PARAMETERS", "Set percentage or amount_money, not both", where)
    if isinstance(charge.get("catalog_object_id"), str):
        catalog_refs.append((charge["catalog_object_id"], f"{where}.catalog_object_id"))
    elif "percentage" not in charge and "amount_money" not in charge:
        raise invalid("MISSING_REQUIRED_PARAMETER", "Set percentage or amount_money", f"{where}.amount_money")
    if "amount_money" in charge:
        check_money(charge["amount_money"], f"{where}.amount_money", currencies)


def check_fulfillment(fulfillment: Mapping[str, Any], where: str) -> None:
    kind = fulfillment.get("type")
    if kind not in _FULFILLMENT_TYPES:
        raise invalid("INVALID_ENUM_VALUE", f"Unknown fulfillment type {kind!r}", f"{where}.type")
    if kind == "SHIPMENT":
        return
    details_name = "pickup_details" if kind == "PICKUP" else "delivery_details"
    details = fulfillment.get(details_name)
    if not isinstance(details, dict):
        raise invalid("MISSING_REQUIRED_PARAMETER", "Field must be set", f"{where}.{details_name}")
    dwhere = f"{where}.{details_name}"
    recipient = details.get("recipient")
    if not isinstance(recipient, dict) or not recipient.get("display_name"):
        raise invalid("MISSING_REQUIRED_PARAMETER", "A recipient needs a display name", f"{dwhere}.recipient")
    if kind == "DELIVERY" and not (isinstance(recipient.get("address"), dict) and recipient["address"]):
        raise invalid("MISSING_REQUIRED_PARAMETER", "A delivery needs an address", f"{dwhere}.recipient.address")
    schedule = details.get("schedule_type", "SCHEDULED")
    if schedule not in _SCHEDULE_TYPES:
        raise invalid("INVALID_ENUM_VALUE", f"Unknown schedule type {schedule!r}", f"{dwhere}.schedule_type")
    at_name = "pickup_at" if kind == "PICKUP" else "deliver_at"
    at = details.get(at_name)
    if schedule == "SCHEDULED" and not (isinstance(at, str) and _RFC3339.match(at)):
        raise invalid("INVALID_TIME", "A scheduled fulfillment needs an RFC 3339 time", f"{dwhere}.{at_name}")
    for text_field in ("note", "pickup_at" if kind == "PICKUP" else "deliver_at"):
        if text_field in details and not isinstance(details[text_field], str):
            raise invalid("EXPECTED_STRING", "Expected a string", f"{dwhere}.{text_field}")


def order_currency(order: Mapping[str, Any]) -> str | None:
    for line in order.get("line_items", []):
        money = line.get("base_price_money")
        if isinstance(money, dict):
            return str(money["currency"])
    return None


def order_total(order: Mapping[str, Any]) -> int:
    """Return the order's total as the simulator prices it (catalog prices are taken as sent)."""
    subtotal = 0
    for line in order.get("line_items", []):
        quantity = float(line["quantity"])
        unit = int(line.get("base_price_money", {}).get("amount", 0))
        for modifier in line.get("modifiers", []):
            price = int(modifier.get("base_price_money", {}).get("amount", 0))
            unit += round(price * float(modifier.get("quantity", "1")))
        subtotal += round(quantity * unit)
    discounts = sum(int(d.get("amount_money", {}).get("amount", 0)) for d in order.get("discounts", []))
    charges = sum(int(c["amount_money"]["amount"]) for c in order.get("service_charges", []))
    return max(0, subtotal - discounts) + charges
