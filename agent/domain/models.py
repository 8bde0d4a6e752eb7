"""The order as the ordering platform sends it (schema_version 1, docs/intake-api.md), and how it is checked."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError

from agent.domain.errors import FieldError, OrderInvalid

MAX_TEXT = 500
MAX_MODIFIER_DEPTH = 3
ORDER_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")
# RFC 3339 §5.6 date-time: full-date "T" full-time with a numeric offset or Z ("T" and "Z" in either case).
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII)
# Display codes avoid characters a cook could misread (0/O, 1/I/L).
_CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"


def _rule(field: str, message: str) -> PydanticCustomError:
    """Return a cross-field error that names ``field`` (a dotted path below the model) in its location."""
    return PydanticCustomError("order_rule", message, {"field": field})


def _clean_text(value: str) -> str:
    if _CONTROL.search(value):
        msg = "control characters are not allowed (only newline)"
        raise ValueError(msg)
    return value


def _rfc3339(value: object) -> object:
    """Let through only an RFC 3339 string with an offset (or an aware datetime built in Python).

    Without this pydantic would also take epoch numbers, numeric strings, ``+0000`` and times without seconds.
    """
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value
    if isinstance(value, str) and _RFC3339.fullmatch(value):
        return value
    msg = "must be an RFC 3339 date-time with a timezone offset, like 2026-11-23T12:00:05+00:00"
    raise ValueError(msg)


Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]
# The control-character rule of _clean_text, stated in the JSON Schema so generated orders can keep it.
_TEXT_SCHEMA: JsonDict = {"pattern": r"^[^\u0000-\u0009\u000b-\u001f\u007f-\u009f]*$"}
_NO_CONTROL = Field(json_schema_extra=_TEXT_SCHEMA)
Text = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(_clean_text), _NO_CONTROL]
ShortText = Annotated[str, Field(min_length=1, max_length=MAX_TEXT), AfterValidator(_clean_text), _NO_CONTROL]
Allergen = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_clean_text), _NO_CONTROL]
Money = Annotated[int, Field(ge=0, le=100_000_000, strict=True)]
Quantity = Annotated[int, Field(ge=1, le=999, strict=True)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


class FulfillmentType(StrEnum):
    """How the customer gets the food."""

    PICKUP = "pickup"
    DELIVERY = "delivery"
    DINE_IN = "dine_in"


class Address(_Strict):
    """A delivery address."""

    line1: ShortText
    line2: Text | None = None
    city: Text | None = None
    postcode: Text | None = None


class Fulfillment(_Strict):
    """Pickup, delivery (with an address) or dine-in (with a table)."""

    type: FulfillmentType
    table: Annotated[str, Field(min_length=1, max_length=32), AfterValidator(_clean_text), _NO_CONTROL] | None = None
    covers: Annotated[int, Field(ge=1, le=999, strict=True)] | None = None
    address: Address | None = None
    instructions: Text | None = None

    @model_validator(mode="after")
    def _required_per_type(self) -> Fulfillment:
        if self.type is FulfillmentType.DINE_IN and not self.table:
            raise _rule("table", "table is required for dine_in")
        if self.type is FulfillmentType.DELIVERY and self.address is None:
            raise _rule("address", "address is required for delivery")
        return self


class Customer(_Strict):
    """Who ordered; the name is required unless the order is eaten in."""

    name: Text | None = None
    phone: Annotated[str, Field(max_length=32), AfterValidator(_clean_text), _NO_CONTROL] | None = None
    email: Annotated[str, Field(max_length=254), AfterValidator(_clean_text), _NO_CONTROL] | None = None


class Modifier(_Strict):
    """A choice on an item (extra basil), possibly with its own choices, at most three levels deep."""

    name: ShortText
    sku: Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_clean_text), _NO_CONTROL] | None = None
    quantity: Quantity = 1
    unit_price: Money = 0
    modifiers: list[Modifier] = Field(default_factory=list, max_length=50)

    def depth(self) -> int:
        """Return how many modifier levels this modifier spans (itself included)."""
        return 1 + max((m.depth() for m in self.modifiers), default=0)

    def price(self) -> int:
        """Return the price of one of this modifier including its sub-modifiers, in minor units."""
        return self.quantity * (self.unit_price + sum(m.price() for m in self.modifiers))


class Item(_Strict):
    """One order line: ``quantity`` x ``name`` at ``unit_price`` minor units, with modifiers."""

    name: ShortText
    sku: Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_clean_text), _NO_CONTROL] | None = None
    quantity: Quantity
    unit_price: Money
    category: Text | None = None
    course: Annotated[int, Field(ge=0, le=20, strict=True)] | None = None
    notes: Text | None = None
    allergens: list[Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_clean_text), _NO_CONTROL]] = (
        Field(default_factory=list, max_length=30)
    )
    modifiers: list[Modifier] = Field(default_factory=list, max_length=50)

    @field_validator("modifiers")
    @classmethod
    def _modifier_depth(cls, value: list[Modifier]) -> list[Modifier]:
        if any(m.depth() > MAX_MODIFIER_DEPTH for m in value):
            msg = f"modifiers nest at most {MAX_MODIFIER_DEPTH} levels deep"
            raise ValueError(msg)
        return value

    def modifiers_price(self) -> int:
        """Return the price of this line's modifiers for one unit, in minor units."""
        return sum(m.price() for m in self.modifiers)

    def line_total(self) -> int:
        """Return quantity x (unit price + modifiers), in minor units."""
        return self.quantity * (self.unit_price + self.modifiers_price())


class Charges(_Strict):
    """Charges on top of the items, in minor units."""

    delivery_fee: Money = 0
    service_charge: Money = 0
    tip: Money = 0


class DiscountKind(StrEnum):
    """What kind of reduction a discount line is."""

    DISCOUNT = "discount"
    LOYALTY = "loyalty"
    GIFT_CARD = "gift_card"
    STAMP_CARD = "stamp_card"


class Discount(_Strict):
    """A reduction of ``amount`` minor units."""

    kind: DiscountKind
    code: Text | None = None
    pos_id: Annotated[str, Field(max_length=64), AfterValidator(_clean_text), _NO_CONTROL] | None = None
    description: Text | None = None
    amount: Money


class PaymentStatus(StrEnum):
    """Whether the customer has paid."""

    PAID = "paid"
    PENDING = "pending"


class Payment(_Strict):
    """How much was (or will be) paid, in minor units of ``currency``."""

    status: PaymentStatus
    method: Text | None = None
    amount: Money
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


class Order(_Strict):
    """An online order, schema_version 1."""

    schema_version: Literal[1]
    id: Annotated[str, Field(pattern=ORDER_ID_PATTERN)]
    venue_id: Annotated[str, Field(max_length=64)] | None = None
    source: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")]
    display_code: Annotated[str, Field(min_length=1, max_length=8, pattern=r"^[A-Za-z0-9-]+$")] | None = None
    created_at: Timestamp
    requested_at: Timestamp | None = None
    fulfillment: Fulfillment
    customer: Customer | None = None
    items: list[Item] = Field(min_length=1, max_length=200)
    charges: Charges = Field(default_factory=Charges)
    discounts: list[Discount] = Field(default_factory=list, max_length=20)
    payment: Payment
    total: Money
    notes: Text | None = None

    @model_validator(mode="after")
    def _cross_field_rules(self) -> Order:
        if self.fulfillment.type is not FulfillmentType.DINE_IN and not (self.customer and self.customer.name):
            raise _rule("customer.name", "customer.name is required unless fulfillment.type is dine_in")
        expected = self.expected_totals()
        if self.total not in expected:
            shown = " or ".join(str(t) for t in sorted(expected))
            msg = f"total {self.total} does not add up: items incl. modifiers + charges - discounts = {shown}"
            raise _rule("total", msg)
        return self

    def items_total(self) -> int:
        """Return the sum of every line (modifiers priced per unit of their item)."""
        return sum(item.line_total() for item in self.items)

    def expected_totals(self) -> set[int]:
        """Return the totals this order may carry.

        Both readings of a modifier's price are accepted: per unit of its item, ``quantity`` x (``unit_price`` +
        modifiers) as docs/intake-api.md states it, and once per line (2 x 950 + 50), as an earlier sample order had it.
        """
        extras = self.charges.delivery_fee + self.charges.service_charge + self.charges.tip
        minus = sum(d.amount for d in self.discounts)
        per_unit = self.items_total() + extras - minus
        per_line = sum(i.quantity * i.unit_price + i.modifiers_price() for i in self.items) + extras - minus
        return {per_unit, per_line}

    @property
    def is_preorder(self) -> bool:
        """Return whether the customer asked for a time rather than ASAP."""
        return self.requested_at is not None

    def content_hash(self) -> str:
        """Return a hash of the order's content, stable across key order and whitespace."""
        return content_hash(self)

    def with_display_code(self) -> Order:
        """Return this order with a display code, derived from the id when the sender gave none."""
        if self.display_code:
            return self
        return self.model_copy(update={"display_code": derive_display_code(self.id)})


def content_hash(order: Order) -> str:
    """Return the sha256 of the order's canonical JSON."""
    canonical = json.dumps(order.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def derive_display_code(order_id: str) -> str:
    """Return an 8-character collection code derived from the order id (stable across resends)."""
    digest = int.from_bytes(hashlib.sha256(order_id.encode()).digest()[:8], "big")
    chars = []
    for _ in range(8):
        digest, index = divmod(digest, len(_CODE_ALPHABET))
        chars.append(_CODE_ALPHABET[index])
    return "".join(chars)


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"unknown field {error['loc'][-1]!r}"
    if kind == "missing":
        return "field required"
    msg = str(error["msg"])
    # pydantic prefixes messages raised from validators with "Value error, ".
    return msg.removeprefix("Value error, ")


def field_errors(exc: ValidationError) -> list[FieldError]:
    """Translate a pydantic error into field errors that name the field path."""
    errors: list[FieldError] = []
    for error in exc.errors(include_url=False):
        loc = tuple(part for part in error["loc"] if not (isinstance(part, str) and part.startswith("function-")))
        field = (error.get("ctx") or {}).get("field")
        if error["type"] == "order_rule" and field:
            loc += tuple(str(field).split("."))
        loc = loc or ("body",)  # the payload as a whole (not an object, say)
        errors.append(FieldError(loc=loc, msg=_message(error)))
    return errors


def parse_order(data: object, *, venue_id: str, currency: str | None = None) -> Order:
    """Validate a decoded JSON payload as an order for this venue, or raise ``OrderInvalid`` naming every field."""
    try:
        order = Order.model_validate(data)
    except ValidationError as exc:
        raise OrderInvalid(field_errors(exc)) from None
    errors: list[FieldError] = []
    if order.venue_id is not None and order.venue_id != venue_id:
        errors.append(FieldError(("venue_id",), f"this agent serves venue {venue_id!r}, not {order.venue_id!r}"))
    if currency is not None and order.payment.currency != currency:
        errors.append(FieldError(("payment", "currency"), f"this venue takes {currency}, not {order.payment.currency}"))
    if errors:
        raise OrderInvalid(errors)
    return order.with_display_code()


def requested_or_created(order: Order) -> datetime:
    """Return the time the food is wanted: the requested time, or the order's creation for ASAP."""
    return order.requested_at or order.created_at
