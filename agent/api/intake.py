"""The intake HTTP API (docs/intake-api.md): a Starlette app served inside the agent's own event loop."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route

from agent.api.jsonbody import decode_json
from agent.api.openapi import openapi_document
from agent.api.operations import Orders
from agent.api.problems import problem
from agent.api.webhooks import LightspeedWebhooks, WebhookInvalid
from agent.domain.errors import BodyInvalid, FieldError, OrderConflict, OrderInvalid, OrderNotFound, StorageError
from agent.domain.states import State

log = structlog.get_logger("venue_agent.intake")

Handler = Callable[[Request], Awaitable[Response]]
HealthFn = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]
AuthorizeFn = Callable[[str], Awaitable[int]]
AvailabilityFn = Callable[[], dict[str, Any] | None]


class BodyTooLarge(Exception):
    """The request body is over ``intake.max_body_kb``."""


def credentials_match(header: str, scheme: str, expected: str) -> bool:
    """Return whether an ``Authorization`` value carries ``expected`` under ``scheme``.

    The scheme is matched case-insensitively (RFC 9110 §11.1), the credentials exactly and in constant time:
    both sides are hashed first so the comparison does not even reveal the expected length.
    """
    given_scheme, _, given = header.partition(" ")
    if given_scheme.lower() != scheme.lower():
        return False
    digest = hashlib.sha256(given.lstrip(" ").encode()).digest()
    return hmac.compare_digest(digest, hashlib.sha256(expected.encode()).digest())


def create_app(
    *,
    orders: Orders,
    health: HealthFn,
    token: str | None,
    max_body_bytes: int,
    webhooks: LightspeedWebhooks | None = None,
    webhook_credentials: tuple[str, str] | None = None,
    authorize: AuthorizeFn | None = None,
    availability: AvailabilityFn | None = None,
) -> Starlette:
    """Build the intake app; ``token`` set means every ``/v1`` call needs ``Authorization: Bearer <token>``.

    The Lightspeed webhook is the exception: it is served only with ``webhooks`` and checks HTTP Basic
    against ``webhook_credentials`` (the POS cannot send the Bearer token).
    """
    expected_basic = (
        base64.b64encode(f"{webhook_credentials[0]}:{webhook_credentials[1]}".encode()).decode()
        if webhook_credentials
        else None
    )

    def guarded(handler: Handler, *, basic: bool = False) -> Handler:
        async def endpoint(request: Request) -> Response:
            if basic:
                if expected_basic is None:
                    return problem(
                        403,
                        "the Lightspeed webhook refuses unauthenticated notifications: set"
                        " pos.lightspeed_k.webhook_username and webhook_password",
                    )
                if not credentials_match(request.headers.get("authorization", ""), "Basic", expected_basic):
                    log.warning("webhook_auth_refused", path=request.url.path)
                    return problem(
                        401,
                        "a valid 'Authorization: Basic' header is required (pos.lightspeed_k.webhook_username)",
                        headers={"WWW-Authenticate": 'Basic realm="venue-agent webhooks"'},
                    )
            elif token and not credentials_match(request.headers.get("authorization", ""), "Bearer", token):
                return problem(
                    401,
                    "a valid 'Authorization: Bearer <token>' header is required",
                    headers={"WWW-Authenticate": 'Bearer realm="venue-agent"'},
                )
            try:
                return await handler(request)
            except ClientDisconnect:  # gone, or closed by the intake's request timeout: nobody reads an answer
                log.info("intake_client_gone", path=request.url.path)
                return Response(status_code=400)
            except BodyTooLarge:
                return problem(413, f"the body is over the limit of {max_body_bytes // 1024} KB")
            except BodyInvalid as exc:
                return problem(422, "the body is not acceptable JSON: see errors", errors=exc.errors)
            except OrderInvalid as exc:
                return problem(422, "the order is invalid: see errors", errors=exc.errors)
            except WebhookInvalid as exc:
                detail = f"not a Lightspeed K-Series notification: {exc}"
                return problem(422, detail, errors=[FieldError(("body",), str(exc))])
            except OrderNotFound as exc:
                return problem(404, str(exc))
            except OrderConflict as exc:
                return problem(409, exc.detail, state=exc.state)
            except StorageError as exc:
                log.error("intake_storage_unavailable", error=str(exc))
                return problem(
                    503,
                    f"the order was not stored: {exc}",
                    headers={"Retry-After": str(StorageError.retry_after_seconds)},
                )

        return endpoint

    async def read_json(request: Request) -> object:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_body_bytes:
            raise BodyTooLarge
        content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if content_type and content_type != "application/json" and not content_type.endswith("+json"):
            raise OrderInvalid([FieldError(("body",), f"the body must be application/json, not {content_type}")])
        chunks = bytearray()
        async for chunk in request.stream():
            chunks += chunk
            if len(chunks) > max_body_bytes:
                raise BodyTooLarge
        return decode_json(bytes(chunks))

    async def post_order(request: Request) -> Response:
        result = await orders.submit(await read_json(request))
        body = {"order_id": result.order_id, "state": result.state.value, "duplicate": result.duplicate}
        return JSONResponse(body, status_code=200 if result.duplicate else 202)

    async def put_order(request: Request) -> Response:
        record = await orders.replace(request.path_params["order_id"], await read_json(request))
        return JSONResponse({"order_id": record.id, "state": record.state.value, "revision": record.revision})

    async def pay(request: Request) -> Response:
        record = await orders.pay(request.path_params["order_id"], await read_json(request))
        return JSONResponse({"order_id": record.id, "state": record.state.value})

    async def cancel(request: Request) -> Response:
        record = await orders.cancel(request.path_params["order_id"])
        return JSONResponse({"order_id": record.id, "state": record.state.value})

    async def resubmit(request: Request) -> Response:
        record = await orders.resubmit(request.path_params["order_id"])
        return JSONResponse({"order_id": record.id, "state": record.state.value}, status_code=202)

    async def reprint(request: Request) -> Response:
        order_id = request.path_params["order_id"]
        if not orders.settings.printers_for("reprint"):
            if await orders.outbox.get(order_id) is None:
                raise OrderNotFound(order_id)
            raise OrderConflict("no printer is configured for tickets: add a [[printers]] entry")
        number = await orders.reprint(order_id)
        return JSONResponse({"order_id": order_id, "reprint_no": number}, status_code=202)

    async def get_order(request: Request) -> Response:
        return JSONResponse(await orders.detail(request.path_params["order_id"]))

    async def list_orders(request: Request) -> Response:
        errors: list[FieldError] = []
        state_text = request.query_params.get("state")
        state = None
        if state_text is not None:
            try:
                state = State(state_text)
            except ValueError:
                errors.append(FieldError(("query", "state"), f"unknown state; one of {', '.join(State)}"))
        limit_text = request.query_params.get("limit", "50")
        limit = int(limit_text) if limit_text.isdigit() else 0
        if not 1 <= limit <= 1000:
            errors.append(FieldError(("query", "limit"), "must be a whole number from 1 to 1000"))
        if errors:
            raise OrderInvalid(errors)
        return JSONResponse({"orders": await orders.list(state=state, limit=limit)})

    async def get_health(request: Request) -> Response:
        ready, snapshot = await health()
        return JSONResponse(snapshot, status_code=200 if ready else 503)

    async def get_availability(request: Request) -> Response:
        value = availability() if availability is not None else None
        if value is None:
            return problem(503, "availability is not decided yet: the agent is starting", headers={"Retry-After": "1"})
        return JSONResponse(value)

    async def lightspeed_webhook(request: Request) -> Response:
        if webhooks is None:
            return problem(404, "the Lightspeed webhook is served only when pos.driver = 'lightspeed_k'")
        result = await webhooks.handle(await read_json(request))
        return JSONResponse(result.as_json())

    async def pos_authorize(request: Request) -> Response:
        if authorize is None:
            return problem(404, "this POS driver takes no refresh token; only pos.driver = 'lightspeed_k' does")
        body = await read_json(request)
        refresh = body.get("refresh_token") if isinstance(body, dict) else None
        if not isinstance(refresh, str) or not refresh.strip():
            raise OrderInvalid([FieldError(("body", "refresh_token"), "a non-empty string is required")])
        requeued = await authorize(refresh.strip())
        return JSONResponse({"authorized": True, "requeued": requeued})

    async def clear_snoozes(request: Request) -> Response:
        # Operator endpoint (``venue-agent snoozes clear``), like /v1/pos/authorize: not for the ordering platform.
        body = await read_json(request)
        if not isinstance(body, dict):
            raise OrderInvalid([FieldError(("body",), "an object with skus or all is required")])
        skus, every = body.get("skus"), body.get("all", False)
        if skus is not None and not (isinstance(skus, list) and skus and all(isinstance(s, str) and s for s in skus)):
            raise OrderInvalid([FieldError(("body", "skus"), "must be a non-empty list of SKU strings")])
        if not isinstance(every, bool) or every == (skus is not None):
            raise OrderInvalid([FieldError(("body",), "give either skus (a list) or all: true, not both")])
        wanted: list[str] | None = None if every else [str(s) for s in skus or []]
        cleared = await orders.clear_snoozes(wanted)
        not_snoozed = sorted(set(wanted or []) - set(cleared))
        return JSONResponse({"released": list(cleared), "not_snoozed": not_snoozed})

    async def get_openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names only the first partially matching route's methods; RFC 9110 wants all of them.
            headers["Allow"] = allowed_methods(request.url.path)
        return problem(exc.status_code, str(exc.detail), headers=headers or None)

    def allowed_methods(path: str) -> str:
        methods: set[str] = set()
        for route in routes:
            match, _ = route.matches({"type": "http", "path": path, "method": "OPTIONS"})
            if match is not Match.NONE:
                methods |= route.methods or set()
        return ", ".join(sorted(methods))

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.error("intake_internal_error", path=request.url.path, exc_info=exc)
        return problem(500, "the agent failed to handle this request; it has been logged")

    routes = [
        Route("/v1/orders", guarded(post_order), methods=["POST"]),
        Route("/v1/orders", guarded(list_orders), methods=["GET"]),
        Route("/v1/orders/{order_id}", guarded(get_order), methods=["GET"]),
        Route("/v1/orders/{order_id}", guarded(put_order), methods=["PUT"]),
        Route("/v1/orders/{order_id}/payment", guarded(pay), methods=["POST"]),
        Route("/v1/orders/{order_id}/cancel", guarded(cancel), methods=["POST"]),
        Route("/v1/orders/{order_id}/resubmit", guarded(resubmit), methods=["POST"]),
        Route("/v1/orders/{order_id}/reprint", guarded(reprint), methods=["POST"]),
        Route("/v1/health", guarded(get_health), methods=["GET"]),
        Route("/v1/availability", guarded(get_availability), methods=["GET"]),
        Route("/v1/webhooks/lightspeed", guarded(lightspeed_webhook, basic=True), methods=["POST"]),
        Route("/v1/pos/authorize", guarded(pos_authorize), methods=["POST"]),
        Route("/v1/snoozes/clear", guarded(clear_snoozes), methods=["POST"]),
        Route("/openapi.json", get_openapi, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_error, Exception: internal_error},
    )
