"""The simulator's Square dialect: ``POST /v2/orders`` and ``GET /v2/locations/{id}`` as Square answers them.

Bodies are checked the way Square would (location, string quantities, integer money, known catalog ids,
every length limit of ``square_limits.LIMITS``, no read-only field) and errors come in Square's
``{"errors": [{category, code, detail, field}]}`` envelope, every length error of a request at once. Idempotency is
Square's: the same key and body replay the original answer; the same key with another body is an error.
The simulator's fault switches apply (down, slow, 5xx rate, 429, auth expiry, sold-out and unknown SKUs,
HTML errors; ``not_ready`` makes the location INACTIVE). The dialect's own settings (location, known
catalog ids, a tax-setup error) live under ``GET/POST /_sim/square``.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from drivers.pos.sim_square_checks import (
    AD_HOC_DISCOUNT_TYPES,
    SquareError,
    check_fulfillment,
    check_item_identity,
    check_metadata,
    check_money,
    check_quantity,
    check_read_only,
    check_service_charge,
    invalid,
    json_object,
    object_list,
    order_currency,
    order_total,
    raise_breaches,
)
from drivers.pos.sim_state import Dialect, Faults, OrderRecord, RequestRecord, SimulatorState

DEFAULT_CATALOG_IDS: frozenset[str] = frozenset({"SQ-VAR-MARG", "SQ-VAR-DIAV", "SQ-MOD-BASIL", "SQ-DISC-STAFF"})
"""Catalog object ids a fresh simulator knows (item variations, a modifier, a discount)."""


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


DIALECT = Dialect("square", routes)
"""Square's CreateOrder and RetrieveLocation, for the simulator's registry."""


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
        body = json_object(raw)
        key = body.get("idempotency_key")
        if not isinstance(key, str) or not key:
            raise invalid("MISSING_REQUIRED_PARAMETER", "Field must be set", "idempotency_key")
        raise_breaches({"idempotency_key": key})
        record.idempotency_key = key
        state.attempts[key] += 1
        order = body.get("order")
        if not isinstance(order, dict):
            raise invalid("MISSING_REQUIRED_PARAMETER", "Field must be set", "order")
        existing = state.orders.get(key)
        if existing is not None:
            if existing.order != order:
                raise invalid(
                    "IDEMPOTENCY_KEY_REUSED",
                    "The idempotency key was used before with a different request",
                    "idempotency_key",
                )
            return JSONResponse({"order": self._created(existing)})
        self._validate(order)
        now = state.monotonic()
        created = OrderRecord(
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
            raise invalid("MISSING_REQUIRED_PARAMETER", "Field must be set", "order.location_id")
        check_read_only(order)
        raise_breaches({"order": order})
        self._check_location(location_id, "order.location_id")
        for text_field in ("reference_id", "ticket_name"):
            if text_field in order and not isinstance(order[text_field], str):
                raise invalid("EXPECTED_STRING", "Expected a string", f"order.{text_field}")
        check_metadata(order.get("metadata"), "order.metadata")
        currencies: set[str] = set()
        lines = order.get("line_items")
        if not isinstance(lines, list) or not lines:
            raise invalid("MISSING_REQUIRED_PARAMETER", "An order needs line items", "order.line_items")
        catalog_refs: list[tuple[str, str]] = []
        for i, line in enumerate(lines):
            where = f"order.line_items[{i}]"
            if not isinstance(line, dict):
                raise invalid("INCORRECT_TYPE", "Expected an object", where)
            check_quantity(line.get("quantity"), f"{where}.quantity")
            check_item_identity(line, where, currencies, catalog_refs)
            if "note" in line and not isinstance(line["note"], str):
                raise invalid("EXPECTED_STRING", "Expected a string", f"{where}.note")
            check_metadata(line.get("metadata"), f"{where}.metadata")
            modifiers = line.get("modifiers", [])
            if not isinstance(modifiers, list):
                raise invalid("INCORRECT_TYPE", "Expected a list", f"{where}.modifiers")
            for j, modifier in enumerate(modifiers):
                mwhere = f"{where}.modifiers[{j}]"
                if not isinstance(modifier, dict):
                    raise invalid("INCORRECT_TYPE", "Expected an object", mwhere)
                if "quantity" in modifier:
                    check_quantity(modifier["quantity"], f"{mwhere}.quantity")
                check_item_identity(modifier, mwhere, currencies, catalog_refs)
        for i, charge in enumerate(object_list(order, "service_charges")):
            check_service_charge(charge, f"order.service_charges[{i}]", currencies, catalog_refs)
        for i, discount in enumerate(object_list(order, "discounts")):
            where = f"order.discounts[{i}]"
            if isinstance(discount.get("catalog_object_id"), str):
                catalog_refs.append((discount["catalog_object_id"], f"{where}.catalog_object_id"))
            elif not discount.get("name"):
                raise invalid("MISSING_REQUIRED_PARAMETER", "An ad hoc discount needs a name", f"{where}.name")
            elif "type" in discount and discount["type"] not in AD_HOC_DISCOUNT_TYPES:
                raise invalid(
                    "INVALID_VALUE", "An ad hoc discount is FIXED_PERCENTAGE or FIXED_AMOUNT", f"{where}.type"
                )
            elif "percentage" not in discount and "amount_money" not in discount:
                raise invalid("MISSING_REQUIRED_PARAMETER", "An ad hoc discount needs an amount or percentage", where)
            if "amount_money" in discount:
                check_money(discount["amount_money"], f"{where}.amount_money", currencies)
        fulfillments = object_list(order, "fulfillments")
        if len(fulfillments) > 1:
            raise invalid("INVALID_VALUE", "Orders can be created with at most one fulfillment", "order.fulfillments")
        for i, fulfillment in enumerate(fulfillments):
            check_fulfillment(fulfillment, f"order.fulfillments[{i}]")
        if len(currencies) > 1:
            raise invalid("INVALID_VALUE", f"All money must be in one currency, not {sorted(currencies)}", "order")
        for object_id, where in catalog_refs:
            if object_id not in settings.catalog_ids:
                raise SquareError(404, "INVALID_REQUEST_ERROR", "NOT_FOUND", f"Object `{object_id}` not found.", where)
        self._check_sku_faults(lines)
        if settings.tax_error:
            raise invalid("VALUE_EMPTY", "Field must not be blank", "order.line_items[0].applied_taxes[0].tax_uid")

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
                raise invalid(
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
        total = order_total(order)
        currency = order_currency(order)
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
