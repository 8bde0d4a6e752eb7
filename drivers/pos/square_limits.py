"""Square's length limits (``LIMITS``, each row with its source) and how a value is made to fit one.

The driver fits every value before sending (``fit``, ``fit_id``); the simulator's Square dialect refuses what breaks
a row (``limit_breaches``), so both sides read the same table.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, NamedTuple


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
_ADDRESS = "not published (Address has no maxLength); 500 is the longest text an order may carry"

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
_PATH_TOKEN = re.compile(r"\[\]|\{key\}|\{\}|[A-Za-z0-9_]+")


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


def fit_id(text: str, limit: int) -> str:
    """Return an identifier within ``limit``: itself, or a stable hash-shortened form (an id cannot be cut)."""
    if square_length(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return f"{_head(text, limit - len(digest) - 1)}-{digest}"
