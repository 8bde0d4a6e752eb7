"""The simulator's Lightspeed K-Series dialect (docs/lightspeed-k.md): token, order, readiness endpoints and webhooks.

Endpoints: ``POST /oauth/token`` (refresh_token grant, single-use refresh tokens), ``POST /o/op/1/order/toGo``
and ``/o/op/1/order/local`` (Bearer, validated like the real API, 409 on a used ``thirdPartyReference``),
``GET /o/op/1/onlineOrderReadiness`` (a change of the dialect's ``not_ready`` is also pushed to ``webhook_url``
as an ONLINE_ORDER_READINESS notification, type ORDER_API, unless ``push_readiness`` is off); control under
``/_sim/lightspeed`` (GET shows, POST sets the dialect's settings; see ``LightspeedSim.update``) and
``GET /_sim/lightspeed/webhooks`` (deliveries made).

The shared fault switches apply: ``down``/``slow_ms``/``html_errors`` on every endpoint, ``rate_limit``/
``rate_limit_count``/``error_rate`` on orders, ``auth_expired`` (401 on orders and readiness whatever the token),
``sold_out_skus``/``unknown_skus`` (accepted, then a FAILURE webhook, as the real API reports them
asynchronously), ``never_confirm`` (accepted, no webhook), ``not_ready`` (readiness NOT_READY).
The token endpoint is as strict as RFC 6749 §2.3.1 / §5.2: the client authenticates with HTTP
Basic only (``401 {"error":"invalid_client"}`` with ``WWW-Authenticate: Basic`` when the header is missing or
wrong, or when ``client_id``/``client_secret`` come in the form as well or instead); then the grant is checked.
A refresh token never seen before is accepted once (any seed works in a demo) unless
``accept_unknown_refresh_tokens`` is off; an issued or used one works only while it is the unused latest, and
an issued one expires after ``refresh_token_idle_seconds`` unused (14 days, as Lightspeed's; the simulator's
``monotonic`` clock, injectable). ``last_token_request`` in ``GET /_sim/lightspeed`` shows how the last token
request authenticated and which form fields it carried (never their values).
``token_answer_delay_seconds`` makes ``POST /oauth/token`` rotate the refresh token at once but hold its answer
that long (lowering the setting releases requests already held); ``pending_token_requests`` in
``GET /_sim/lightspeed`` counts the requests held, so a test can crash its client between rotation and answer.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote_plus

import httpx
import structlog
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from drivers.pos.sim_lightspeed_settings import (
    ORDER_PATHS,
    READINESS_PATH,
    TOKEN_PATH,
    LightspeedSim,
    WebhookDelivery,
)
from drivers.pos.sim_lightspeed_validation import order_skus, validate_order, validation_error
from drivers.pos.sim_state import Dialect, OrderRecord, RequestRecord, SimulatorState

log = structlog.get_logger("venue_agent.pos.sim_lightspeed")


def routes(state: SimulatorState) -> list[Route]:
    """Return the K-Series routes over ``state``, each with its own ``LightspeedSim``."""
    handlers = _Handlers(LightspeedSim(state))
    wrap = handlers.contract
    return [
        Route(TOKEN_PATH, wrap(handlers.token), methods=["POST"]),
        *(Route(path, wrap(handlers.order), methods=["POST"]) for path in ORDER_PATHS),
        Route(READINESS_PATH, wrap(handlers.readiness), methods=["GET"]),
        Route("/_sim/lightspeed", handlers.control, methods=["GET", "POST"]),
        Route("/_sim/lightspeed/webhooks", handlers.webhooks, methods=["GET"]),
    ]


DIALECT = Dialect("lightspeed", routes)
"""Lightspeed K-Series' token, order and readiness endpoints with webhooks, for the simulator's registry."""


Handler = Callable[[Request], Awaitable[Response]]


class _Handlers:
    def __init__(self, sim: LightspeedSim) -> None:
        self.sim = sim
        self.state = sim.state

    def contract(self, handler: Handler) -> Handler:
        """Log the request, read its body, then apply the shared slow/down faults before the handler."""

        async def endpoint(request: Request) -> Response:
            record = self.state.log_request(request)
            # The handler finds its own record here: requests interleave at every await, so the last record
            # appended need not be this request's.
            request.state.sim_record = record
            try:
                await request.body()
            except ClientDisconnect:
                record.status = 499
                return Response(status_code=499)
            faults = self.state.faults
            if faults.slow_ms > 0:
                await asyncio.sleep(faults.slow_ms / 1000)
            if faults.down or faults.hard_down:
                response = self._error(503, "Service Unavailable", "the POS API is down", retry_after=True)
            else:
                response = await handler(request)
            record.status = response.status_code
            return response

        return endpoint

    async def token(self, request: Request) -> Response:
        """The refresh_token grant, the client authenticated by HTTP Basic only; each refresh token works once."""
        sim = self.sim
        pairs = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
        form = {k: v[0] for k, v in pairs.items()}
        basic = _basic_credentials(request.headers.get("Authorization", ""))
        in_body = sorted(k for k in ("client_id", "client_secret") if k in form)
        sim.last_token_request = {
            "client_authentication": "basic" if basic is not None else ("body" if in_body else "none"),
            "form_fields": sorted(form),
        }
        # RFC 6749 §2.3.1: one authentication method per request, Basic here; §5.2: 401 invalid_client.
        if basic is None or in_body:
            why = "client credentials in the request body" if in_body else "no HTTP Basic client authentication"
            return _oauth_error(401, "invalid_client", f"client authentication failed: {why}", basic=True)
        client_id, client_secret = basic
        wrong = sim.client_id is not None and (client_id != sim.client_id or client_secret != sim.client_secret)
        if not client_id or wrong:
            return _oauth_error(401, "invalid_client", "client authentication failed", basic=True)
        if form.get("grant_type") != "refresh_token":
            return _oauth_error(400, "unsupported_grant_type", "only refresh_token is supported here")
        old = form.get("refresh_token", "")
        issued = sim.live_refresh_tokens.get(old)
        known = issued is not None or old in sim.used_refresh_tokens
        idle = issued is not None and self.state.monotonic() - issued > sim.refresh_token_idle_seconds
        if not old or old in sim.used_refresh_tokens or idle or (not known and not sim.accept_unknown_refresh_tokens):
            return _oauth_error(400, "invalid_grant", "the refresh token is invalid, expired or already used")
        sim.live_refresh_tokens.pop(old, None)
        sim.used_refresh_tokens.add(old)
        access, refresh = f"sim-at-{secrets.token_urlsafe(18)}", f"sim-rt-{secrets.token_urlsafe(18)}"
        sim.access_tokens[access] = self.state.monotonic() + sim.access_token_ttl_seconds
        sim.live_refresh_tokens[refresh] = self.state.monotonic()
        answer = {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": sim.access_token_ttl_seconds,
            "refresh_token": refresh,
            "scope": "orders-api",
        }
        if sim.token_answer_delay_seconds > 0:
            await self._hold_token_answer()
        return JSONResponse(answer, headers={"Cache-Control": "no-store"})

    async def _hold_token_answer(self) -> None:
        """Wait ``token_answer_delay_seconds`` after rotating; the setting is re-read, so lowering it releases."""
        sim = self.sim
        loop = asyncio.get_running_loop()
        started = loop.time()
        sim.pending_token_requests += 1
        try:
            while (left := sim.token_answer_delay_seconds - (loop.time() - started)) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sim.token_delay_changed.wait(), left)
        finally:
            sim.pending_token_requests -= 1

    async def order(self, request: Request) -> Response:
        """Validate and accept an order for asynchronous delivery; the outcome comes by webhook."""
        state, faults, sim = self.state, self.state.faults, self.sim
        refused = self._unauthorised(request)
        if refused is not None:
            return refused
        if faults.rate_limit or faults.rate_limit_count > 0:
            faults.rate_limit_count = max(0, faults.rate_limit_count - 1)
            return self._error(429, "Too Many Requests", "Rate limiting enforced", retry_after=True)
        if faults.error_rate > 0 and state.random.random() < faults.error_rate:
            return self._error(500, "Internal Server Error", "simulated failure")
        object_name = ORDER_PATHS[request.url.path]
        try:
            body = await request.json()
        except ValueError:
            return self._error(400, "Bad Request", "JSON parse error: the body is not JSON")
        if not isinstance(body, dict):
            return self._error(400, "Bad Request", "JSON parse error: the body is not a JSON object")
        reference = body.get("thirdPartyReference")
        if isinstance(reference, str) and reference:
            self._count_attempt(request, reference)
        problems = validate_order(body, local=object_name == "localOrder", location=sim.business_location_id)
        if problems:
            return validation_error(request.url.path, object_name, problems)
        assert isinstance(reference, str)
        if reference in state.orders:
            return JSONResponse({"status": "fail", "msg": f"reference has already been used {reference}"}, 409)
        skus = order_skus(body.get("items"))
        sold_out = [s for s in skus if s in faults.sold_out_skus]
        unknown = [s for s in skus if s in faults.unknown_skus]
        reason = sim.failure_reason
        if sold_out:
            reason = f"Item not available (sales restriction): {', '.join(sold_out)}"
        elif unknown:
            reason = f"Unknown product (no item with sku {', '.join(unknown)})"
        now = state.monotonic()
        account = f"A{100000 + sim.next_account}.1"
        sim.next_account += 1
        confirm_at = None if faults.never_confirm else now + sim.confirm_delay_seconds
        state.orders[reference] = OrderRecord(
            key=reference,
            pos_reference=account,
            order=body,
            received_at=state.wall(),
            received_monotonic=now,
            two_phase=True,
            confirm_at=confirm_at,
            failure=None if reason is None else {"error": "failure", "reason": reason},
        )
        if not faults.never_confirm:
            self._schedule_webhook(reference, body["businessLocationId"], account, reason)
        return JSONResponse({"status": "ok"})

    def _schedule_webhook(self, reference: str, location: int, account: str, reason: str | None) -> None:
        sim = self.sim
        if not sim.webhook_url:
            log.info("pos_sim_webhook_skipped", third_party_reference=reference, reason="no webhook_url set")
            return
        notification: dict[str, Any] = {
            "type": "ORDER",
            "status": "SUCCESS" if reason is None else "FAILURE",
            "thirdPartyReference": reference,
            "businessLocationId": location,
        }
        if reason is None:
            notification["ikentooAccountIdentifier"] = account
            # As in the OAS example "successfulWithoutAccountInfo": the V2 id as a string of digits.
            notification["ikentooAccountId"] = account[1:].split(".")[0]
        else:
            notification["reason"] = reason
        task = asyncio.create_task(
            self._deliver(reference, notification, sim.confirm_delay_seconds),
            name=f"pos-sim.lightspeed.webhook.{reference}",
        )
        sim.tasks.add(task)
        task.add_done_callback(sim.tasks.discard)

    async def readiness(self, request: Request) -> Response:
        """Report READY or NOT_READY with the four conditions."""
        refused = self._unauthorised(request)
        if refused is not None:
            return refused
        location = request.query_params.get("businessLocationId", "")
        if not location.isdigit():
            return self._error(400, "Bad Request", "Required parameter 'businessLocationId' is not present")
        if self.sim.business_location_id is not None and int(location) != self.sim.business_location_id:
            return self._error(404, "Not Found", "Invalid input business location id")
        self.sim.seen_location_id = int(location)
        return JSONResponse(self._readiness_body())

    def _readiness_body(self) -> dict[str, Any]:
        """The readiness DTO (OAS apeOrderApiReadinessDto), the same in the answer and the notification."""
        not_ready = self.sim.not_ready or self.state.faults.not_ready
        return {
            "status": "NOT_READY" if not_ready else "READY",
            "lastUpdatedAt": self.state.wall().isoformat(),
            "onlineOrderingApiConfiguration": {"enabled": True, "orderProfileId": 1, "staffId": 1},
            "posStatus": {"salesPeriod": "OPENED", "acceptingOnlineOrders": True, "availableDevices": not not_ready},
        }

    async def control(self, request: Request) -> Response:
        """Show the dialect's settings, or change them (POST a JSON object)."""
        if request.method == "POST":
            try:
                changes = await request.json()
            except ValueError:
                changes = None
            if not isinstance(changes, dict):
                return JSONResponse({"error": "invalid_json", "detail": "POST a JSON object"}, 400)
            was_not_ready = self.sim.not_ready
            try:
                self.sim.update(changes)
            except ValueError as exc:
                return JSONResponse({"error": "invalid_setting", "detail": str(exc)}, 400)
            if self.sim.not_ready != was_not_ready and self.sim.webhook_url and self.sim.push_readiness:
                self._schedule_readiness()
        return JSONResponse(self.sim.public())

    def _schedule_readiness(self) -> None:
        """Push ONLINE_ORDER_READINESS (type ORDER_API), as Lightspeed does "whenever the state ... changes"."""
        notification = {
            "businessLocationId": self.sim.business_location_id or self.sim.seen_location_id or 0,
            "type": "ORDER_API",
            **self._readiness_body(),
        }
        task = asyncio.create_task(self._deliver("", notification, 0), name="pos-sim.lightspeed.readiness")
        self.sim.tasks.add(task)
        task.add_done_callback(self.sim.tasks.discard)

    async def webhooks(self, request: Request) -> Response:
        """List the notifications sent, with the status the receiver answered."""
        return JSONResponse(
            [
                {"thirdPartyReference": d.third_party_reference, "body": d.body, "status": d.status, "error": d.error}
                for d in self.sim.deliveries
            ]
        )

    async def _deliver(self, reference: str, notification: dict[str, Any], delay: float) -> None:
        await asyncio.sleep(delay)
        sim = self.sim
        if not sim.webhook_url:
            log.info("pos_sim_webhook_skipped", third_party_reference=reference, reason="webhook_url was cleared")
            return
        auth: httpx.Auth | None = None
        if sim.webhook_username is not None:
            auth = httpx.BasicAuth(sim.webhook_username, sim.webhook_password or "")
        delivery = WebhookDelivery(reference, notification, None)
        sim.deliveries.append(delivery)
        try:
            async with httpx.AsyncClient(timeout=5, trust_env=False, auth=auth) as client:
                response = await client.post(sim.webhook_url, json=notification)
            delivery.status = response.status_code
        except httpx.HTTPError as exc:
            delivery.error = type(exc).__name__
            log.warning("pos_sim_webhook_failed", third_party_reference=reference, reason=type(exc).__name__)
            return
        log.info(
            "pos_sim_webhook_sent",
            third_party_reference=reference,
            status=response.status_code,
            outcome=notification.get("status"),
        )

    def _unauthorised(self, request: Request) -> Response | None:
        if self.state.faults.auth_expired:
            return self._error(401, "Unauthorized", "Authentication failed.")
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        expiry = self.sim.access_tokens.get(token)
        if expiry is None or self.state.monotonic() >= expiry:
            return self._error(401, "Unauthorized", "Authentication failed.")
        return None

    def _count_attempt(self, request: Request, reference: str) -> None:
        record: RequestRecord | None = getattr(request.state, "sim_record", None)
        if record is not None and record.idempotency_key is None:
            record.idempotency_key = reference
            self.state.attempts[reference] += 1

    def _error(self, status: int, error: str, message: str, *, retry_after: bool = False) -> Response:
        headers = {"Retry-After": str(self.state.faults.retry_after_seconds)} if retry_after else None
        if status >= 500 and self.state.faults.html_errors:
            title = f"{status} {HTTPStatus(status).phrase}"
            page = f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"
            return HTMLResponse(page, status_code=status, headers=headers)
        body = {"timestamp": datetime.now(UTC).isoformat(), "status": status, "error": error, "message": message}
        return JSONResponse(body, status_code=status, headers=headers)


def _oauth_error(status: int, error: str, description: str, *, basic: bool = False) -> Response:
    headers = {"WWW-Authenticate": 'Basic realm="oauth"'} if basic else None
    return JSONResponse({"error": error, "error_description": description}, status_code=status, headers=headers)


def _basic_credentials(header: str) -> tuple[str, str] | None:
    """Return (client_id, client_secret) from ``Basic base64(urlencoded id:urlencoded secret)``, else None."""
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return (unquote_plus(user), unquote_plus(password)) if colon else None
