"""The simulator's ``http`` contract (docs/http-pos.md) and its control API under ``/_sim/``.

Endpoints: ``POST /orders`` (also ``/`` and ``/v1/orders``), ``GET /orders/{key}`` (two-phase status),
``GET /ready``, and ``/_sim/orders``, ``/_sim/requests``, ``/_sim/faults``, ``/_sim/reset``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from http import HTTPStatus
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from drivers.pos.http_mapping import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, verify_signature
from drivers.pos.sim_state import FaultError, OrderRecord, SimulatorState

Handler = Callable[[Request], Awaitable[Response]]


class ContractHandlers:
    """The ``http`` contract's endpoints and the control API, over one ``SimulatorState``."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state

    def routes(self) -> list[Route]:
        """Return the order, readiness and control routes (mounted before every dialect's)."""
        contract = self.contract
        return [
            Route("/orders", contract(self.post_order), methods=["POST"]),
            Route("/v1/orders", contract(self.post_order), methods=["POST"]),
            Route("/", contract(self.post_order), methods=["POST"]),
            Route("/ready", contract(self.ready), methods=["GET"]),
            Route("/_sim/orders", self.sim_orders, methods=["GET"]),
            Route("/_sim/requests", self.sim_requests, methods=["GET"]),
            Route("/_sim/faults", self.sim_faults, methods=["GET", "POST"]),
            Route("/_sim/reset", self.sim_reset, methods=["POST"]),
        ]

    def status_routes(self) -> list[Route]:
        """Return the order status routes, ``/{key}`` among them (mounted after every dialect's)."""
        contract = self.contract
        return [
            Route("/orders/{key}", contract(self.order_status), methods=["GET"]),
            Route("/v1/orders/{key}", contract(self.order_status), methods=["GET"]),
            Route("/{key}", contract(self.order_status), methods=["GET"]),
        ]

    def contract(self, handler: Handler) -> Handler:
        """Wrap a contract endpoint: log it, then apply slow/down/auth faults before the handler."""

        async def endpoint(request: Request) -> Response:
            record = self.state.log_request(request)
            try:
                # The body arrives before any delay: a slow POS has the order even if the client gives up.
                await request.body()
            except ClientDisconnect:
                record.status = 499
                return Response(status_code=499)
            response = await self._faulted(request) or await handler(request)
            record.status = response.status_code
            return response

        return endpoint

    async def post_order(self, request: Request) -> Response:
        """Take an order once per idempotency key, unless a fault switch says otherwise."""
        state, faults = self.state, self.state.faults
        key = request.headers.get(IDEMPOTENCY_HEADER)
        body = await request.body()
        if state.hmac_secret is not None and not verify_signature(
            request.headers.get(SIGNATURE_HEADER), body, state.hmac_secret, int(state.wall().timestamp())
        ):
            return self._error(401, "bad_signature", f"missing or invalid {SIGNATURE_HEADER} header")
        if not key:
            return self._error(400, "missing_idempotency_key", f"the {IDEMPOTENCY_HEADER} header is required")
        if faults.rate_limit or faults.rate_limit_count > 0:
            faults.rate_limit_count = max(0, faults.rate_limit_count - 1)
            return self._error(429, "rate_limited", "too many requests", retry_after=True)
        if faults.error_rate > 0 and state.random.random() < faults.error_rate:
            return self._error(500, "internal_error", "simulated POS failure")
        try:
            order = await request.json()
        except ValueError:
            return self._error(400, "invalid_json", "the body is not JSON")
        if not isinstance(order, dict):
            return self._error(400, "invalid_json", "the body is not a JSON object")
        existing = state.orders.get(key)
        if existing is not None:
            body_json = {"error": "duplicate", "pos_reference": existing.pos_reference}
            return JSONResponse(body_json, status_code=409)
        skus = _skus(order.get("items"))
        failure: dict[str, Any] | None = None
        sold_out = [s for s in skus if s in faults.sold_out_skus]
        unknown = [s for s in skus if s in faults.unknown_skus]
        if sold_out:
            failure = {"error": "sold_out", "skus": sold_out, "detail": f"sold out: {', '.join(sold_out)}"}
        elif unknown:
            failure = {"error": "unknown_sku", "skus": unknown, "detail": f"unknown SKU: {', '.join(unknown)}"}
        if failure is not None and not faults.two_phase:
            return JSONResponse(failure, status_code=423 if sold_out else 422)
        now = state.monotonic()
        confirm_at = None if faults.never_confirm else now + faults.confirm_after_ms / 1000
        record = OrderRecord(
            key=key,
            pos_reference=state.next_reference(),
            order=order,
            received_at=state.wall(),
            received_monotonic=now,
            two_phase=faults.two_phase,
            confirm_at=confirm_at if faults.two_phase else now,
            failure=failure,
        )
        state.orders[key] = record
        if faults.two_phase:
            return JSONResponse({"status": "pending", "pos_reference": record.pos_reference}, status_code=202)
        return JSONResponse({"pos_reference": record.pos_reference}, status_code=201)

    async def order_status(self, request: Request) -> Response:
        """Say whether an order is pending, injected or failed; 404 for a key never accepted."""
        record = self.state.orders.get(request.path_params["key"])
        if record is None:
            return self._error(404, "not_found", "no order with that idempotency key")
        return JSONResponse(self.state.order_status(record))

    async def ready(self, request: Request) -> Response:
        """Report readiness and its conditions."""
        app_open = not self.state.faults.not_ready
        conditions = {"pos_online": True, "app_open": app_open, "logged_in": True, "menu_loaded": True}
        return JSONResponse({"ready": app_open, "conditions": conditions})

    async def sim_orders(self, request: Request) -> Response:
        """List the accepted orders with how many requests each key took."""
        state = self.state
        return JSONResponse(
            [
                {
                    "key": r.key,
                    "pos_reference": r.pos_reference,
                    "order": r.order,
                    "received_at": r.received_at.isoformat(),
                    "received_monotonic": r.received_monotonic,
                    "requests": state.attempts[r.key],
                    **state.order_status(r),
                }
                for r in state.orders.values()
            ]
        )

    async def sim_requests(self, request: Request) -> Response:
        """List every contract request with its time and the status it got."""
        return JSONResponse([{**asdict(r), "received_at": r.received_at.isoformat()} for r in self.state.requests])

    async def sim_faults(self, request: Request) -> Response:
        """Show the switches, or set some of them (POST a JSON object)."""
        if request.method == "POST":
            try:
                changes = await request.json()
            except ValueError:
                return self._error(400, "invalid_json", "POST a JSON object of switches")
            if not isinstance(changes, dict):
                return self._error(400, "invalid_json", "POST a JSON object of switches")
            try:
                await self.state.apply_faults(changes)
            except FaultError as exc:
                return self._error(400, "invalid_switch", str(exc))
        return JSONResponse(asdict(self.state.faults))

    async def sim_reset(self, request: Request) -> Response:
        """Forget everything and switch every fault off."""
        await self.state.reset()
        return JSONResponse({"reset": True})

    async def _faulted(self, request: Request) -> Response | None:
        faults = self.state.faults
        if faults.slow_ms > 0:
            await asyncio.sleep(faults.slow_ms / 1000)
        if faults.ready_status and request.url.path == "/ready" and not faults.hard_down:
            return self._error(faults.ready_status, "no_readiness", "this POS has no readiness endpoint")
        if faults.down or faults.hard_down:
            if request.url.path == "/ready" and not faults.html_errors:
                conditions = {"pos_online": False, "app_open": False, "logged_in": False, "menu_loaded": False}
                headers = {"Retry-After": str(faults.retry_after_seconds)}
                return JSONResponse({"ready": False, "conditions": conditions}, 503, headers=headers)
            return self._error(503, "down", "the POS is down", retry_after=True)
        if faults.auth_expired:
            return self._error(401, "auth_expired", "the access token has expired")
        return None

    def _error(self, status: int, error: str, detail: str, *, retry_after: bool = False) -> Response:
        headers = {"Retry-After": str(self.state.faults.retry_after_seconds)} if retry_after else None
        if status >= 500 and self.state.faults.html_errors:
            title = f"{status} {HTTPStatus(status).phrase}"
            page = (
                f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
                f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
            )
            return HTMLResponse(page, status_code=status, headers=headers)
        return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def _skus(items: object) -> list[str]:
    """Return every SKU of the order's items and their modifiers, in order."""
    found: list[str] = []
    if not isinstance(items, list):
        return found
    for item in items:
        if not isinstance(item, dict):
            continue
        sku = item.get("sku")
        if isinstance(sku, str):
            found.append(sku)
        found.extend(_skus(item.get("modifiers")))
    return found
