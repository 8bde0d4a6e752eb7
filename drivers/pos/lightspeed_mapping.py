"""The Lightspeed K-Series Order and Pay contract (docs/lightspeed-k.md) as pure functions.

Builds the ``/o/op/1/order/toGo`` and ``/o/op/1/order/local`` bodies from an order, within the limits of
``lightspeed_limits``; the create call's answer is read in ``lightspeed_answers``, notifications and readiness in
``lightspeed_notifications``. No I/O and no clock: times are passed in.
Field names and rules follow Lightspeed's Order and Pay OpenAPI description ("OAS" in the comments,
https://api-portal.lsk.lightspeed.app).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from agent.domain.config import LightspeedKSettings
from agent.domain.models import Address, Discount, FulfillmentType, Item, Modifier, Order, PaymentStatus
from agent.domain.money import currency_exponent
from agent.domain.states import ErrorClass
from drivers.pos.base import ALREADY_PRINTED_NOTE
from drivers.pos.errors import PosDriverError
from drivers.pos.lightspeed_limits import (
    COLLECTION_CODE_MAX,
    ELLIPSIS,
    FIELD_LIMITS,
    ORDER_NOTE_MAX,
    REFERENCE_MAX,
    SKU_MAX,
    fit,
    utf16_len,
)
from drivers.pos.phone import to_e164

TO_GO_PATH = "/o/op/1/order/toGo"
LOCAL_PATH = "/o/op/1/order/local"
READINESS_PATH = "/o/op/1/onlineOrderReadiness"

MIN_ATTEMPT_MS = 60_000  # maxTimeToAttemptOrderDeliverToPos: "The minimum value is 60000ms (1 minute)" (OAS)
# Long enough to ride out the usual cause of a missed order (the iPad asleep or the POS app in the
# background, as Lightspeed's own help lists them) once staff notice; short enough that a kitchen does not get an ASAP
# order a quarter of an hour late. The driver may pass its own (e.g. near confirm_timeout_seconds).
DEFAULT_MAX_ATTEMPT_MS = 600_000
_INT32_MAX = 2**31 - 1
# The API rejects collection times in the past; a time a few seconds ahead may be past on arrival.
COLLECTION_TIME_MARGIN = timedelta(minutes=1)

_HASH_CHARS = 16
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_FULFILMENT_LABEL = {
    FulfillmentType.PICKUP: "Pickup",
    FulfillmentType.DELIVERY: "Delivery",
    FulfillmentType.DINE_IN: "Dine in",
}
_SPACE = re.compile(r"\s+")


class MappingError(PosDriverError, ValueError):
    """The order cannot be expressed as a K-Series request; ``error_class`` says what kind of failure it is."""

    def __init__(self, message: str, error_class: ErrorClass = ErrorClass.REJECTED, skus: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.skus = skus


# --- thirdPartyReference -------------------------------------------------------------------------


def third_party_reference(idempotency_key: str) -> str:
    """Return the stable 1-48 char reference for a key: the key itself when it fits, else a prefix + hash."""
    if not idempotency_key:
        msg = "the idempotency key is empty"
        raise ValueError(msg)
    if len(idempotency_key) <= REFERENCE_MAX and all("!" <= ch <= "~" for ch in idempotency_key):
        return idempotency_key
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:_HASH_CHARS]
    room = REFERENCE_MAX - _HASH_CHARS - 1
    prefix = "".join(ch if "!" <= ch <= "~" else "_" for ch in idempotency_key[:room])
    return f"{prefix}-{digest}"


# --- amounts ---------------------------------------------------------------------------------------


def major_units(minor: int, currency: str) -> Decimal:
    """Return ``minor`` units of ``currency`` as an exact Decimal in major units (1860 GBP -> 18.60)."""
    return Decimal(minor).scaleb(-currency_exponent(currency))


def json_amount(amount: Decimal) -> int | float:
    """Return ``amount`` as a JSON-native number that ``json.dumps`` writes with exactly its decimal value."""
    if amount == amount.to_integral_value():
        return int(amount)
    value = float(amount)
    # The shortest repr of a float round-trips to the Decimal for every amount with < 16 significant digits.
    if Decimal(repr(value)) != amount:
        msg = f"amount {amount} has no exact JSON representation as a double"
        raise MappingError(msg)
    return value


def _amount(minor: int, currency: str) -> int | float:
    return json_amount(major_units(minor, currency))


def _money_text(minor: int, currency: str) -> str:
    exponent = currency_exponent(currency)
    return f"{major_units(minor, currency):.{exponent}f} {currency}"


# --- the create-order request ---------------------------------------------------------------------


def build_order_request(
    order: Order,
    *,
    settings: LightspeedKSettings,
    idempotency_key: str,
    already_printed: bool,
    tz: ZoneInfo,
    now: datetime,
    max_attempt_ms: int = DEFAULT_MAX_ATTEMPT_MS,
    phone_region: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """Return the path and JSON body that create ``order`` in K-Series, or raise ``MappingError``.

    ``phone_region`` (ISO 3166-1 alpha-2, ``venue.country``) places a phone typed without its country code.
    """
    if settings.business_location_id is None or not settings.endpoint_id:
        msg = "pos.lightspeed_k needs business_location_id and endpoint_id to send orders"
        raise MappingError(msg)
    kind = order.fulfillment.type
    currency = order.payment.currency
    body: dict[str, Any] = {
        "businessLocationId": settings.business_location_id,
        "thirdPartyReference": third_party_reference(idempotency_key),
        "endpointId": settings.endpoint_id,
        "accountProfileCode": getattr(settings.account_profiles, kind.value),
    }
    overflow: list[str] = []  # the full text of whatever did not fit its field, for the note
    if order.display_code:
        if utf16_len(order.display_code) <= COLLECTION_CODE_MAX:
            body["collectionCode"] = order.display_code
        else:
            overflow.append(f"Code: {order.display_code}")
    customer, phone_for_note = _customer_info(order, overflow, phone_region)
    body["customerInfo"] = customer
    if kind is FulfillmentType.DELIVERY and order.fulfillment.address is not None:
        body["deliveryAddress"] = _delivery_address(order.fulfillment.address, overflow)
    note = order_note(order, already_printed=already_printed, tz=tz, phone=phone_for_note, overflow=overflow)
    if note:
        body["orderNote"] = note
    body["maxTimeToAttemptOrderDeliverToPos"] = min(max(max_attempt_ms, MIN_ATTEMPT_MS), _INT32_MAX)
    if order.requested_at is not None and order.requested_at > now + COLLECTION_TIME_MARGIN:
        body["orderCollectionTimeAsIso8601"] = order.requested_at.astimezone(tz).isoformat(timespec="seconds")
    if kind is FulfillmentType.DINE_IN:
        body["tableNumber"] = _table_number(order.fulfillment.table)
        body["clientCount"] = order.fulfillment.covers or 1
    if order.payment.status is PaymentStatus.PAID:
        payment: dict[str, Any] = {
            "paymentMethod": settings.payment_method,
            "paymentAmount": _amount(order.payment.amount, currency),
        }
        if order.charges.tip:
            payment["tipAmount"] = _amount(order.charges.tip, currency)
        body["payment"] = payment
    body["items"] = _item_lines(order, settings, local=kind is FulfillmentType.DINE_IN)
    return (LOCAL_PATH if kind is FulfillmentType.DINE_IN else TO_GO_PATH), body


def _customer_info(order: Order, overflow: list[str], phone_region: str | None) -> tuple[dict[str, Any], str | None]:
    """Return ``customerInfo`` and the phone number to put in the note when it is not E.164.

    A name part over its limit is cut visibly and the whole name added to ``overflow``; an email over its
    limit is left out (a cut address is a wrong one) and added to ``overflow``.
    """
    customer = order.customer
    name = _SPACE.sub(" ", customer.name or "").strip() if customer else ""
    first, _, last = name.partition(" ")
    info: dict[str, Any] = {"firstName": fit(first or "Guest", FIELD_LIMITS["customerInfo.firstName"])}
    if last:
        info["lastName"] = fit(last, FIELD_LIMITS["customerInfo.lastName"])
    if info["firstName"] != (first or "Guest") or info.get("lastName", last) != last:
        overflow.append(f"Customer: {name}")
    # No customerInfo.thirdPartyReference: a reference that changes for a known email makes the order
    # fail with "A consumer already exists for this email address with a different external reference".
    if customer and customer.email:
        if utf16_len(customer.email) <= FIELD_LIMITS["customerInfo.email"]:
            info["email"] = customer.email
        else:
            overflow.append(f"Email: {customer.email}")
    phone_for_note: str | None = None
    if customer and customer.phone:
        e164 = e164_phone(customer.phone, phone_region)
        if e164:
            info["contactNumberAsE164"] = e164
        else:
            phone_for_note = customer.phone
    return info, phone_for_note


def _delivery_address(address: Address, overflow: list[str]) -> dict[str, str]:
    """Return ``deliveryAddress``, each part cut visibly to its limit; a cut adds the whole address to ``overflow``."""
    parts = {"addressLine1": address.line1, "addressLine2": address.line2, "zip": address.postcode}
    fields = {k: v for k, v in {**parts, "city": address.city}.items() if v}
    sent = {k: fit(v, FIELD_LIMITS[f"deliveryAddress.{k}"]) for k, v in fields.items()}
    if sent != fields:
        overflow.append("Address: " + ", ".join(fields.values()))
    return sent


def e164_phone(phone: str, region: str | None = None) -> str | None:
    """Return ``phone`` as E.164 (a number without its country code placed in ``region``), else None."""
    return to_e164(phone, region)


def _table_number(table: str | None) -> str:
    text = (table or "").strip()
    if not text.isascii() or not text.isdigit() or int(text) > _INT32_MAX:
        msg = (
            f"table {table!r} is not a table number: K-Series local orders need the numeric table number "
            "of the POS floor plan"
        )
        raise MappingError(msg)
    # The API types tableNumber as a string; the floor plan's table numbers are integers, so "07" is 7.
    return str(int(text))


def _item_lines(order: Order, settings: LightspeedKSettings, *, local: bool) -> list[dict[str, Any]]:
    currency = order.payment.currency
    native, fallback = _split_discounts(order, settings)
    carriers = _discount_carriers(order, native, settings)
    lines: list[dict[str, Any]] = []
    for index, item in enumerate(order.items, start=1):
        line = _item_line(item, index)
        if native is not None and index - 1 in carriers:
            line["discountCode"] = native.pos_id
        if local and item.course is not None:
            line["course"] = item.course
        lines.append(line)
    extras = (
        (settings.delivery_fee_sku, order.charges.delivery_fee, "delivery fee"),
        (settings.service_charge_sku, order.charges.service_charge, "service charge"),
        *((settings.discount_sku, d.amount, "discount") for d in fallback),
    )
    for sku, minor, what in extras:
        if minor <= 0:
            continue
        _check_sku(sku, f"the {what} SKU in [pos.lightspeed_k]")
        # The discount SKU must be an open-price item with pricing strategy
        # CUSTOMIZED_ITEM_PRICE_WILL_BE_NEGATIVE: the POS turns the positive amount into a reduction.
        lines.append({"sku": sku, "quantity": 1, "customItemPrice": _amount(minor, currency)})
    return lines


def _discount_carriers(order: Order, native: Discount | None, settings: LightspeedKSettings) -> set[int]:
    """Return the indexes of the item lines that carry the native ``discountCode``.

    The POS applies an item line's ``discountCode`` to that line (OAS apeToGoOrderItemLine.discountCode, "The
    discount code being applied to this item"). A percentage discount is the same on every line, so it rides on
    each; an amount discount on every line would be taken once per line, so it rides on one: the line with the
    largest total (first among equals), the one least likely to be smaller than the discount.
    """
    if native is None:
        return set()
    if native.pos_id in settings.percentage_discount_codes:
        return set(range(len(order.items)))
    totals = [item.line_total() for item in order.items]
    return {totals.index(max(totals))}


def _split_discounts(order: Order, settings: LightspeedKSettings) -> tuple[Discount | None, list[Discount]]:
    """Return the discount sent as item ``discountCode`` (native) and those sent as discount-SKU lines."""
    discounts = order.discounts
    if not settings.native_discounts:
        return None, [d for d in discounts if d.amount > 0]
    largest_line = max(item.line_total() for item in order.items)
    native: Discount | None = None
    fallback: list[Discount] = []
    for discount in discounts:
        # An item line carries one discountCode, so only the first native discount can be applied natively. An
        # amount discount larger than every line cannot sit on one line (a line is not discounted below zero):
        # it goes on the discount SKU line, exact.
        percentage = discount.pos_id in settings.percentage_discount_codes
        fits = percentage or discount.amount <= largest_line
        if native is None and discount.pos_id and fits:
            native = discount
        elif discount.amount > 0:
            fallback.append(discount)
    return native, fallback


def _item_line(item: Item, index: int) -> dict[str, Any]:
    where = f"item {index} ({item.name!r})"
    sku = _check_sku(item.sku, where)
    line: dict[str, Any] = {"sku": sku, "quantity": item.quantity}
    sub_items = [_sub_item(m, where) for m in item.modifiers]
    if sub_items:
        line["subItems"] = sub_items
    return line


def _sub_item(modifier: Modifier, parent: str) -> dict[str, Any]:
    where = f"modifier {modifier.name!r} of {parent}"
    line: dict[str, Any] = {"sku": _check_sku(modifier.sku, where), "quantity": modifier.quantity}
    nested = [_sub_item(m, where) for m in modifier.modifiers]
    if nested:
        line["subItems"] = nested
    return line


def _check_sku(sku: str | None, where: str) -> str:
    if not sku:
        msg = f"{where} has no SKU: Lightspeed K-Series takes items by SKU only"
        raise MappingError(msg, ErrorClass.MENU)
    if utf16_len(sku) > SKU_MAX:
        # A cut SKU would be another item (or none): the order fails as a menu problem, naming the item.
        msg = f"{where} has SKU {sku!r}, longer than the {SKU_MAX} characters Lightspeed K-Series accepts"
        raise MappingError(msg, ErrorClass.MENU, (sku,))
    return sku


# --- the order note --------------------------------------------------------------------------------


def order_note(
    order: Order, *, already_printed: bool, tz: ZoneInfo, phone: str | None = None, overflow: Sequence[str] = ()
) -> str:
    """Return the docket note: marker, time, payment, allergens and item notes, instructions, notes, the full
    text of fields cut to their limits (``overflow``), phone; at most ORDER_NOTE_MAX UTF-16 units."""
    currency = order.payment.currency
    label = _FULFILMENT_LABEL[order.fulfillment.type]
    when = local_time_text(order.requested_at, tz) if order.requested_at else "ASAP"
    parts = [f"{label}: {when}"]
    if order.payment.status is not PaymentStatus.PAID:
        parts.append(f"NOT PAID: collect {_money_text(order.total, currency)}")
    for item in order.items:
        details = []
        if item.allergens:
            details.append(f"ALLERGENS {', '.join(item.allergens)}")
        if item.notes:
            details.append(item.notes)
        if details:
            parts.append(f"{item.quantity}x {item.name}: {'; '.join(details)}")
    if order.fulfillment.instructions:
        parts.append(f"Instructions: {order.fulfillment.instructions}")
    if order.notes:
        parts.append(f"Note: {order.notes}")
    parts.extend(overflow)
    if phone:
        parts.append(f"Phone: {phone}")
    return _bounded([ALREADY_PRINTED_NOTE, *parts] if already_printed else parts, ORDER_NOTE_MAX)


def local_time_text(moment: datetime, tz: ZoneInfo) -> str:
    """Return ``moment`` in the venue's zone as e.g. ``Sun 29 Mar 14:30 BST`` (locale-independent)."""
    local = moment.astimezone(tz)
    return (
        f"{_DAYS[local.weekday()]} {local.day} {_MONTHS[local.month - 1]} "
        f"{local.hour:02d}:{local.minute:02d} {local.tzname() or ''}"
    ).rstrip()


def _bounded(parts: list[str], limit: int) -> str:
    """Join ``parts`` with `` | `` in priority order, cutting the first part that overflows ``limit`` (UTF-16)."""
    text = ""
    for part in parts:
        flat = _SPACE.sub(" ", part).strip()
        if not flat:
            continue
        candidate = f"{text} | {flat}" if text else flat
        if utf16_len(candidate) <= limit:
            text = candidate
            continue
        room = limit - utf16_len(text) - (3 if text else 0)
        if room > len(ELLIPSIS):
            cut = fit(flat, room)
            text = f"{text} | {cut}" if text else cut
        break
    return text
