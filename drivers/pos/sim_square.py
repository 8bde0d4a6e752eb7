"""The simulator's Square dialect: ``POST /v2/orders`` and ``GET /v2/locations/{id}`` as Square answers them.

Bodies are checked the way Square would (location, string quantities, integer money, known catalog ids,
every length limit of ``square_mapping.LIMITS``, no read-only field) and errors come in Square's
``{"errors": [{category, code, detail, field}]}`` envelope, every length error of a request at once. Idempotency is
Square's: the same key and body replay the original answer; the same key with another body is an error.
The simulator's fault switches apply (down, slow, 5xx rate, 429, auth expiry, sold-out and unknown SKUs,
HTML errors; ``not_ready`` makes the location INACTIVE). The dialect's own settings (location, known
catalog ids, a tax-setup error) live under ``GET/POST /_sim/square``.
"""

from __future__ import annotations

import asyncio
import json
import re
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

# The simulator mounts these routes, so its module is only looked up at call time (no import cycle).
from drivers.pos import simulator as _simulator
from drivers.pos.square_mapping import limit_breaches, reach

DEFAULT_CATALOG_IDS: frozenset[str] = frozenset({"SQ-VAR-MARG", "SQ-VAR-DIAV", "SQ-MOD-BASIL", "SQ-DISC-STAFF"})
"""Catalog object ids a fresh simulator knows (item variations, a modifier, a discount)."""

if TYPE_CHECKING:
    from drivers.pos.simulator import Faults, OrderRecord, RequestRecord, SimulatorState

_QUANTITY = re.compile(r"^\d{1,7}(\.\d{1,5})?$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_FULFILLMENT_TYPES = frozenset({"PICKUP", "DELIVERY", "SHIPMENT"})
_SCHEDULE_TYPES = frozenset({"ASAP", "SCHEDULED"})
_PHASES = frozenset({"SUBTOTAL_PHASE", "TOTAL_PHASE", "APPORTIONED_PERCENTAGE_PHASE", "APPORTIONED_AMOUNT_PHASE"})
# OrderLineItemDiscount.type: "Discounts that do not reference a catalog object ID must have a type of
# FIXED_PERCENTAGE or FIXED_AMOUNT". The type may be left out (api.json's own CreateOrderRequest example does).
_AD_HOC_DISCOUNT_TYPES = frozenset({"FIXED_PERCENTAGE", "FIXED_AMOUNT"})
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


@dataclass
class SquareDialect:
    """The dialect's settings for one simulator."""

    location_id: str | None = None  # None: the first location an order or probe names becomes the location
    catalog_ids: set[str] = field(default_factory=lambda: set(DEFAULT_CATALOG_IDS))
    tax_error: bool = False  # answer every order with Square's LINE_ITEM tax error (a tax setup problem)
    faults: Faults | None = None  # the Faults object this belongs to; a simulator reset installs new ones


_DIALECTS: weakref.WeakKeyDictionary[SimulatorState, SquareDialect] = weakref.WeakKeyDictionary()


def dialect(state: SimulatorState) -> SquareDialect:
    """Return the Square settings of ``state`` (fresh after a simulator reset)."""
    current = _DIALECTS.get(state)
    # SimulatorState.reset() replaces its Faults; the dialect's settings are reset along with them.
    if current is None or current.faults is not state.faults:
        current = SquareDialect(faults=state.faults)
        _DIALECTS[state] = current
    return current


def configure(state: SimulatorState, changes: Mapping[str, object]) -> SquareDialect:
    """Set some dialect settings (``location_id``, ``catalog_ids``, ``tax_error``); ValueError names a bad one."""
    settings = dialect(state)
    checked: dict[str, object] = {}
    for name, value in changes.items():
        if name == "location_id" and (value is None or (isinstance(value, str) and value)):
            checked[name] = value
        elif name == "catalog_ids" and isinstance(value, list) and all(isinstance(v, str) for v in value):
            checked[name] = set(value)
        elif name == "tax_error" and isinstance(value, bool):
            checked[name] = value
        else:
            msg = f"square setting {name!r} cannot be {value!r}; known: location_id, catalog_ids, tax_error"
            raise ValueError(msg)
    for name, value in checked.items():
        setattr(settings, name, value)
    return settings


def routes(state: SimulatorState) -> list[Route]:
    """Return the Square dialect's routes over ``state``."""
    handlers = _SquareHandlers(state)
    return [
        Route("/v2/orders", handlers.create_order, methods=["POST"]),
        Route("/v2/locations/{location_id}", handlers.retrieve_location, methods=["GET"]),
        Route("/_sim/square", handlers.sim_square, methods=["GET", "POST"]),
    ]


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


def _invalid(code: str, detail: str, field: str) -> SquareError:
    return SquareError(400, "INVALID_REQUEST_ERROR", code, detail, field)


class _SquareHandlers:
    """The Square endpoints over one ``SimulatorState``."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state

    async def create_order(self, request: Request) -> Response:
        """CreateOrder: check, dedupe by idempotency key, record."""
        record = self.state.log_request(request)
        try:
            raw = await request.body()
        except ClientDisconnect:
            record.status = 499
            return Response(status_code=499)
        try:
            response = await self._create_order(request, raw, record)
        except SquareError as exc:
            response = self._error(exc)
        record.status = response.status_code
        return response

    async def retrieve_location(self, request: Request) -> Response:
        """RetrieveLocation: the readiness probe."""
        record = self.state.log_request(request)
        try:
            await self._faulted(request)
            self._rate_limited()
            location_id = request.path_params["location_id"]
            self._check_location(location_id, "location_id")
            status = "INACTIVE" if self.state.faults.not_ready else "ACTIVE"
            location = {"id": location_id, "name": "Simulated venue", "status": status, "currency": "GBP"}
            response: Response = JSONResponse({"location": location})
        except SquareError as exc:
            response = self._error(exc)
        record.status = response.status_code
        return response

    async def sim_square(self, request: Request) -> Response:
        """Show the dialect's settings, or set some of them (POST a JSON object)."""
        if request.method == "POST":
            try:
                changes = await request.json()
            except ValueError:
                changes = None
            if not isinstance(changes, dict):
                return JSONResponse({"error": "invalid_json", "detail": "POST a JSON object of settings"}, 400)
            try:
                configure(self.state, changes)
            except ValueError as exc:
                return JSONResponse({"error": "invalid_setting", "detail": str(exc)}, 400)
        settings = dialect(self.state)
        return JSONResponse(
            {
                "location_id": settings.location_id,
                "catalog_ids": sorted(settings.catalog_ids),
                "tax_error": settings.tax_error,
            }
        )

    async def _create_order(self, request: Request, raw: bytes, record: RequestRecord) -> Response:
        state, faults = self.state, self.state.faults
        await self._faulted(request)
        self._rate_limited()
        if faults.error_rate > 0 and state.random.random() < faults.error_rate:
            raise SquareError(500, "API_ERROR", "INTERNAL_SERVER_ERROR", "simulated Square failure")
        body = _json_object(raw)
        key = body.get("idempotency_key")
        if not isinstance(key, str) or not key:
            raise _invalid("MISSING_REQUIRED_PARAMETER", "Field must be set", "idempotency_key")
        _raise_breaches({"idempotency_key": key})
        record.idempotency_key = key
        state.attempts[key] += 1
        order = body.get("order")
        if not isinstance(order, dict):
            raise _invalid("MISSING_REQUIRED_PARAMETER", "Field must be set", "order")
        existing = state.orders.get(key)
        if existing is not None:
            if existing.order != order:
                raise _invalid(
                    "IDEMPOTENCY_KEY_REUSED",
                    "The idempotency key was used before with a different request",
                    "idempotency_key",
                )
            return JSONResponse({"order": self._created(existing)})
        self._validate(order)
        now = state.monotonic()
        created = _simulator.OrderRecord(
            key=key,
            pos_reference=state.next_reference(),
            order=order,
            received_at=state.wall(),
            received_monotonic=now,
            confirm_at=now,
        )
        state.orders[key] = created
        return JSONResponse({"order": self._created(created)})

    def _validate(self, order: dict[str, Any]) -> None:
        """Raise the SquareError Square would answer for ``order``, if any."""
        settings = dialect(self.state)
        location_id = order.get("location_id")
        if not isinstance(location_id, str) or not location_id:
            raise _invalid("MISSING_REQUIRED_PARAMETER", "Field must be set", "order.location_id")
        _check_read_only(order)
        _raise_breaches({"order": order})
        self._check_location(location_id, "order.location_id")
        for text_field in ("reference_id", "ticket_name"):
            if text_field in order and not isinstance(order[text_field], str):
                raise _invalid("EXPECTED_STRING", "Expected a string", f"order.{text_field}")
        _check_metadata(order.get("metadata"), "order.metadata")
        currencies: set[str] = set()
        lines = order.get("line_items")
        if not isinstance(lines, list) or not lines:
            raise _invalid("MISSING_REQUIRED_PARAMETER", "An order needs line items", "order.line_items")
        catalog_refs: list[tuple[str, str]] = []
        for i, line in enumerate(lines):
            where = f"order.line_items[{i}]"
            if not isinstance(line, dict):
                raise _invalid("INCORRECT_TYPE", "Expected an object", where)
            _check_quantity(line.get("quantity"), f"{where}.quantity")
            _check_item_identity(line, where, currencies, catalog_refs)
            if "note" in line and not isinstance(line["note"], str):
                raise _invalid("EXPECTED_STRING", "Expected a string", f"{where}.note")
            _check_metadata(line.get("metadata"), f"{where}.metadata")
            modifiers = line.get("modifiers", [])
            if not isinstance(modifiers, list):
                raise _invalid("INCORRECT_TYPE", "Expected a list", f"{where}.modifiers")
            for j, modifier in enumerate(modifiers):
                mwhere = f"{where}.modifiers[{j}]"
                if not isinstance(modifier, dict):
                    raise _invalid("INCORRECT_TYPE", "Expected an object", mwhere)
                if "quantity" in modifier:
                    _check_quantity(modifier["quantity"], f"{mwhere}.quantity")
                _check_item_identity(modifier, mwhere, currencies, catalog_refs)
        for i, charge in enumerate(_list(order, "service_charges")):
            _check_service_charge(charge, f"order.service_charges[{i}]", currencies, catalog_refs)
        for i, discount in enumerate(_list(order, "discounts")):
            where = f"order.discounts[{i}]"
            if isinstance(discount.get("catalog_object_id"), str):
                catalog_refs.append((discount["catalog_object_id"], f"{where}.catalog_object_id"))
            elif not discount.get("name"):
                raise _invalid("MISSING_REQUIRED_PARAMETER", "An ad hoc discount needs a name", f"{where}.name")
            elif "type" in discount and discount["type"] not in _AD_HOC_DISCOUNT_TYPES:
                raise _invalid(
                    "INVALID_VALUE", "An ad hoc discount is FIXED_PERCENTAGE or FIXED_AMOUNT", f"{where}.type"
                )
            elif "percentage" not in discount and "amount_money" not in discount:
                raise _invalid("MISSING_REQUIRED_PARAMETER", "An ad hoc discount needs an amount or percentage", where)
            if "amount_money" in discount:
                _check_money(discount["amount_money"], f"{where}.amount_money", currencies)
        fulfillments = _list(order, "fulfillments")
        if len(fulfillments) > 1:
            raise _invalid("INVALID_VALUE", "Orders can be created with at most one fulfillment", "order.fulfillments")
        for i, fulfillment in enumerate(fulfillments):
            _check_fulfillment(fulfillment, f"order.fulfillments[{i}]")
        if len(currencies) > 1:
            raise _invalid("INVALID_VALUE", f"All money must be in one currency, not {sorted(currencies)}", "order")
        for object_id, where in catalog_refs:
            if object_id not in settings.catalog_ids:
                raise SquareError(404, "INVALID_REQUEST_ERROR", "NOT_FOUND", f"Object `{object_id}` not found.", where)
        self._check_sku_faults(lines)
        if settings.tax_error:
            raise _invalid("VALUE_EMPTY", "Field must not be blank", "order.line_items[0].applied_taxes[0].tax_uid")

    def _check_sku_faults(self, lines: list[Any]) -> None:
        faults = self.state.faults
        for i, line in enumerate(lines):
            metadata = line.get("metadata") if isinstance(line.get("metadata"), dict) else {}
            names = {str(v) for v in (metadata.get("sku"), line.get("catalog_object_id")) if v}
            if names & set(faults.unknown_skus):
                shown = sorted(names & set(faults.unknown_skus))[0]
                raise SquareError(
                    404,
                    "INVALID_REQUEST_ERROR",
                    "NOT_FOUND",
                    f"Object `{shown}` not found.",
                    f"order.line_items[{i}].catalog_object_id",
                )
            if names & set(faults.sold_out_skus):
                shown = sorted(names & set(faults.sold_out_skus))[0]
                raise _invalid(
                    "INVALID_VALUE",
                    f"Item `{shown}` is sold out at this location.",
                    f"order.line_items[{i}].catalog_object_id",
                )

    def _check_location(self, location_id: str, where: str) -> None:
        settings = dialect(self.state)
        if settings.location_id is None:
            settings.location_id = location_id
        elif location_id != settings.location_id:
            raise SquareError(404, "INVALID_REQUEST_ERROR", "NOT_FOUND", f"Location `{location_id}` not found.", where)

    def _created(self, record: OrderRecord) -> dict[str, Any]:
        """Return the order Square answers with: the request's order plus id, state, version and totals."""
        created_at = record.received_at.isoformat().replace("+00:00", "Z")
        order = dict(record.order)
        total = _total(order)
        currency = _currency(order)
        order.update(
            {
                "id": record.pos_reference,
                "state": "OPEN",
                "version": 1,
                "created_at": created_at,
                "updated_at": created_at,
            }
        )
        if currency is not None:
            order["total_money"] = {"amount": total, "currency": currency}
        return order

    async def _faulted(self, request: Request) -> None:
        faults = self.state.faults
        if faults.slow_ms > 0:
            await asyncio.sleep(faults.slow_ms / 1000)
        if faults.down or faults.hard_down:
            raise SquareError(503, "API_ERROR", "SERVICE_UNAVAILABLE", "Square is temporarily unavailable")
        if faults.auth_expired:
            raise SquareError(401, "AUTHENTICATION_ERROR", "ACCESS_TOKEN_EXPIRED", "The access token has expired")
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer" or not token.strip():
            raise SquareError(
                401,
                "AUTHENTICATION_ERROR",
                "UNAUTHORIZED",
                "This request could not be authorized: give an access token as 'Authorization: Bearer <token>'",
            )

    def _rate_limited(self) -> None:
        faults = self.state.faults
        if faults.rate_limit or faults.rate_limit_count > 0:
            faults.rate_limit_count = max(0, faults.rate_limit_count - 1)
            raise SquareError(429, "RATE_LIMIT_ERROR", "RATE_LIMITED", "Too many requests")

    def _error(self, exc: SquareError) -> Response:
        faults = self.state.faults
        retry = exc.status in (429, 503)
        headers = {"Retry-After": str(faults.retry_after_seconds)} if retry else None
        if exc.status >= 500 and faults.html_errors:
            title = f"{exc.status} {HTTPStatus(exc.status).phrase}"
            page = f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"
            return HTMLResponse(page, status_code=exc.status, headers=headers)
        return JSONResponse({"errors": exc.errors}, status_code=exc.status, headers=headers)


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise SquareError(400, "INVALID_REQUEST_ERROR", "INVALID_CONTENT_TYPE", "The body is not JSON") from None
    if not isinstance(body, dict):
        raise SquareError(400, "INVALID_REQUEST_ERROR", "INCORRECT_TYPE", "Expected a JSON object")
    return body


def _list(order: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    value = order.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise _invalid("INCORRECT_TYPE", "Expected a list of objects", f"order.{name}")
    return value


def _check_quantity(value: object, where: str) -> None:
    if not isinstance(value, str):
        raise _invalid("INCORRECT_TYPE", f"Expected a string value, got {type(value).__name__}", where)
    if not _QUANTITY.match(value):
        raise _invalid("INVALID_VALUE", "Quantity must be a decimal number", where)


def _check_money(value: object, where: str, currencies: set[str]) -> None:
    if not isinstance(value, dict):
        raise _invalid("MISSING_REQUIRED_PARAMETER", "Field must be set", where)
    amount = value.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise _invalid("INCORRECT_TYPE", f"Expected an integer amount, got {amount!r}", f"{where}.amount")
    if amount < 0:
        raise _invalid("INVALID_VALUE", "Amount must not be negative", f"{where}.amount")
    currency = value.get("currency")
    if not isinstance(currency, str) or not _CURRENCY.match(currency):
        raise _invalid("INVALID_ENUM_VALUE", f"Unknown currency {currency!r}", f"{where}.currency")
    currencies.add(currency)


def _check_item_identity(
    entry: Mapping[str, Any], where: str, currencies: set[str], catalog_refs: list[tuple[str, str]]
) -> None:
    """Check an entry is either a catalog reference or ad hoc with a name and a price."""
    object_id = entry.get("catalog_object_id")
    if object_id is not None:
        if not isinstance(object_id, str) or not object_id:
            raise _invalid("INCORRECT_TYPE", "Expected a string", f"{where}.catalog_object_id")
        catalog_refs.append((object_id, f"{where}.catalog_object_id"))
    elif not isinstance(entry.get("name"), str) or not entry["name"]:
        raise _invalid("MISSING_REQUIRED_PARAMETER", "An ad hoc entry needs a name", f"{where}.name")
    elif "base_price_money" not in entry:
        raise _invalid("MISSING_REQUIRED_PARAMETER", "An ad hoc entry needs a price", f"{where}.base_price_money")
    if "base_price_money" in entry:
        _check_money(entry["base_price_money"], f"{where}.base_price_money", currencies)


def _check_metadata(value: object, where: str) -> None:
    """Check a metadata map holds strings (its sizes are rows of LIMITS)."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise _invalid("EXPECTED_MAP", "Expected a map of strings", where)
    for key, item in value.items():
        if not isinstance(item, str):
            raise _invalid("EXPECTED_STRING", "Metadata values are strings", f"{where}.{key}")


def _raise_breaches(body: Mapping[str, Any]) -> None:
    """Raise every length error Square would answer for ``body`` at once, in one envelope."""
    breaches = limit_breaches(body)
    if not breaches:
        return
    first, *rest = (_invalid(b.code, b.detail, b.field) for b in breaches)
    for more in rest:
        first.also(more)
    raise first


def _check_read_only(order: Mapping[str, Any]) -> None:
    for where, names in _READ_ONLY.items():
        for name in names:
            for path, _, _ in reach({"order": order}, f"{where}.{name}"):
                raise _invalid("INVALID_VALUE", "This field is read-only: Square computes it", path)


def _check_service_charge(
    charge: Mapping[str, Any], where: str, currencies: set[str], catalog_refs: list[tuple[str, str]]
) -> None:
    if charge.get("calculation_phase") not in _PHASES:
        raise _invalid("INVALID_ENUM_VALUE", "Unknown calculation phase", f"{where}.calculation_phase")
    # OrderServiceCharge.taxable: "service charges calculated in the TOTAL_PHASE cannot be marked as taxable".
    if charge.get("calculation_phase") == "TOTAL_PHASE" and charge.get("taxable"):
        raise _invalid("INVALID_VALUE", "TOTAL_PHASE service charges cannot be taxable", f"{where}.taxable")
    # OrderServiceCharge.amount_money: "Exactly one of percentage or amount_money should be set."
    if "percentage" in charge and "amount_money" in charge:
        raise _invalid("CONFLICTING_PARAMETERS", "Set percentage or amount_money, not both", where)
    if isinstance(charge.get("catalog_object_id"), str):
        catalog_refs.append((charge["catalog_object_id"], f"{where}.catalog_object_id"))
    elif "percentage" not in charge and "amount_money" not in charge:
        raise _invalid("MISSING_REQUIRED_PARAMETER", "Set percentage or amount_money", f"{where}.amount_money")
    if "amount_money" in charge:
        _check_money(charge["amount_money"], f"{where}.amount_money", currencies)


def _check_fulfillment(fulfillment: Mapping[str, Any], where: str) -> None:
    kind = fulfillment.get("type")
    if kind not in _FULFILLMENT_TYPES:
        raise _invalid("INVALID_ENUM_VALUE", f"Unknown fulfillment type {kind!r}", f"{where}.type")
    if kind == "SHIPMENT":
        return
    details_name = "pickup_details" if kind == "PICKUP" else "delivery_details"
    details = fulfillment.get(details_name)
    if not isinstance(details, dict):
        raise _invalid("MISSING_REQUIRED_PARAMETER", "Field must be set", f"{where}.{details_name}")
    dwhere = f"{where}.{details_name}"
    recipient = details.get("recipient")
    if not isinstance(recipient, dict) or not recipient.get("display_name"):
        raise _invalid("MISSING_REQUIRED_PARAMETER", "A recipient needs a display name", f"{dwhere}.recipient")
    if kind == "DELIVERY" and not (isinstance(recipient.get("address"), dict) and recipient["address"]):
        raise _invalid("MISSING_REQUIRED_PARAMETER", "A delivery needs an address", f"{dwhere}.recipient.address")
    schedule = details.get("schedule_type", "SCHEDULED")
    if schedule not in _SCHEDULE_TYPES:
        raise _invalid("INVALID_ENUM_VALUE", f"Unknown schedule type {schedule!r}", f"{dwhere}.schedule_type")
    at_name = "pickup_at" if kind == "PICKUP" else "deliver_at"
    at = details.get(at_name)
    if schedule == "SCHEDULED" and not (isinstance(at, str) and _RFC3339.match(at)):
        raise _invalid("INVALID_TIME", "A scheduled fulfillment needs an RFC 3339 time", f"{dwhere}.{at_name}")
    for text_field in ("note", "pickup_at" if kind == "PICKUP" else "deliver_at"):
        if text_field in details and not isinstance(details[text_field], str):
            raise _invalid("EXPECTED_STRING", "Expected a string", f"{dwhere}.{text_field}")


def _currency(order: Mapping[str, Any]) -> str | None:
    for line in order.get("line_items", []):
        money = line.get("base_price_money")
        if isinstance(money, dict):
            return str(money["currency"])
    return None


def _total(order: Mapping[str, Any]) -> int:
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
