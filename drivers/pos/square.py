"""The ``square`` POS driver (docs/square.md): CreateOrder on the Square Orders API with a Bearer access token."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

import httpx
import structlog

from drivers.pos.base import (
    Injected,
    InjectRequest,
    InjectResult,
    Permanent,
    Readiness,
    ReadinessState,
    Transient,
)
from drivers.pos.errors import PosConfigError
from drivers.pos.retry_after import parse_retry_after
from drivers.pos.square_answers import classify_error, classify_probe, decode_body
from drivers.pos.square_mapping import build_create_order

log = structlog.get_logger("venue_agent.pos.square")

# Failures before the request left this box; any other failure leaves Square possibly holding the order.
_NOT_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
    httpx.InvalidURL,
)
_HTTPX_ERRORS = (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError)


class SquareDriver:
    """Send orders to ``POST {base_url}/v2/orders``; one-phase: a 200 with an order id means it is in Square.

    ``phone_region`` (ISO 3166-1 alpha-2, ``venue.country``) places phone numbers typed without a country code.
    """

    name = "square"
    two_phase = False

    def __init__(
        self,
        *,
        base_url: str,
        location_id: str,
        access_token: str,
        square_version: str,
        catalog: Mapping[str, str],
        timeout_seconds: float,
        phone_region: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            msg = f"pos.square.base_url: {base_url!r} is not an http(s) URL"
            raise PosConfigError(msg)
        if not location_id:
            msg = "pos.square.location_id: required when driver = 'square'"
            raise PosConfigError(msg)
        if not access_token:
            msg = "pos.square.access_token: required when driver = 'square' (or access_token_file)"
            raise PosConfigError(msg)
        self._base = base_url.rstrip("/")
        self._location_id = location_id
        self._catalog = dict(catalog)
        self._phone_region = phone_region
        self._clock = clock
        headers = {
            "Authorization": f"Bearer {access_token}",
            "Square-Version": square_version,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_seconds),
            transport=transport,
            headers=headers,
            # Square is reached directly; an environment proxy would see the access token.
            trust_env=False,
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=8),
        )

    async def inject(self, request: InjectRequest) -> InjectResult:
        """POST CreateOrder; every network or Square behaviour becomes a result, never an exception."""
        key = request.idempotency_key
        body = build_create_order(
            request.order,
            location_id=self._location_id,
            idempotency_key=key,
            catalog=self._catalog,
            already_printed=request.already_printed,
            phone_region=self._phone_region,
        )
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        started = time.perf_counter()
        try:
            response = await self._client.post(f"{self._base}/v2/orders", content=content)
        except _HTTPX_ERRORS as exc:
            failure = _network_failure(exc)
            log.warning(
                "pos_request_failed",
                driver=self.name,
                idempotency_key=key,
                attempt=request.attempt,
                reason=failure.reason,
                in_doubt=failure.in_doubt,
            )
            return failure
        latency_ms = round((time.perf_counter() - started) * 1000, 1)
        retry_after = parse_retry_after(response.headers.get("Retry-After"), self._clock())
        result = classify_error(
            response.status_code,
            decode_body(response.content),
            retry_after,
            catalog=self._catalog,
            sent=body,
        )
        fields = {
            "driver": self.name,
            "idempotency_key": key,
            "attempt": request.attempt,
            "status": response.status_code,
            "latency_ms": latency_ms,
        }
        if isinstance(result, Injected):
            log.info("pos_order_injected", **fields, pos_reference=result.pos_reference, duplicate=result.duplicate)
        else:
            error_class = result.error_class.value if isinstance(result, Permanent) else None
            reason = result.reason if isinstance(result, Transient | Permanent) else ""
            log.warning("pos_request_failed", **fields, error_class=error_class, reason=reason)
        return result

    async def probe(self) -> Readiness:
        """GET the configured location (cheap and authenticated); never raises."""
        url = f"{self._base}/v2/locations/{quote(self._location_id, safe='')}"
        started = time.perf_counter()
        try:
            response = await self._client.get(url)
        except _HTTPX_ERRORS as exc:
            log.info("pos_probe_failed", driver=self.name, reason=_describe(exc))
            return Readiness(ReadinessState.UNREACHABLE, detail=f"Square not reachable: {_describe(exc)}")
        latency_ms = round((time.perf_counter() - started) * 1000, 1)
        return classify_probe(response.status_code, decode_body(response.content), latency_ms, self._location_id)

    async def confirmation(self, request: InjectRequest) -> InjectResult | None:
        """Square is one-phase: there is never a confirmation to wait for."""
        return None

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()


def _network_failure(exc: BaseException) -> Transient:
    if isinstance(exc, _NOT_SENT):
        return Transient(reason=f"Square not reachable: {_describe(exc)}")
    if isinstance(exc, httpx.TimeoutException):
        reason = f"Square did not answer in time; it may have the order: {_describe(exc)}"
    else:
        reason = f"Connection to Square broke mid-request; it may have the order: {_describe(exc)}"
    return Transient(reason=reason, in_doubt=True)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
