"""The ``lightspeed_k`` POS driver (docs/lightspeed-k.md): Lightspeed Restaurant K-Series Order and Pay API, two-phase.

``inject`` answers ``Accepted`` when the API took the order for delivery to the POS; the SUCCESS or FAILURE
webhook settles it later (handled by the agent core, so ``confirmation`` returns None). Tokens come from a
``TokenManager`` that keeps the single-use refresh token in the outbox's key/value table.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import httpx
import structlog

from agent.domain.config import LightspeedKSettings
from agent.domain.states import ErrorClass
from drivers.pos.base import (
    Injected,
    InjectRequest,
    InjectResult,
    KeyValueStore,
    Permanent,
    Readiness,
    ReadinessState,
    Transient,
)
from drivers.pos.errors import PosConfigError
from drivers.pos.lightspeed_answers import classify_answer
from drivers.pos.lightspeed_mapping import MappingError, build_order_request
from drivers.pos.lightspeed_notifications import readiness_from
from drivers.pos.oauth import CLIENT_REJECTED, REAUTHORISE, AuthRequired, TokenEndpointUnavailable, TokenManager
from drivers.pos.retry_after import parse_retry_after

log = structlog.get_logger("venue_agent.pos.lightspeed_k")

READINESS_PATH = "/o/op/1/onlineOrderReadiness"
REQUIRED = ("business_location_id", "client_id", "client_secret", "refresh_token", "endpoint_id")

# Failures before the request left this box; any other failure leaves the POS possibly holding the order.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol, httpx.InvalidURL)
_HTTPX_ERRORS = (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError)


def check_settings(settings: LightspeedKSettings | None) -> LightspeedKSettings:
    """Return the settings if the driver can be built from them, else raise PosConfigError naming every bad key."""
    if settings is None:
        keys = ", ".join(f"pos.lightspeed_k.{key}" for key in REQUIRED)
        msg = f"{keys}: required when driver = 'lightspeed_k'"
        raise PosConfigError(msg)
    missing = [f"pos.lightspeed_k.{key}" for key in REQUIRED if getattr(settings, key) in (None, "")]
    if missing:
        msg = f"{', '.join(missing)}: required when driver = 'lightspeed_k'"
        raise PosConfigError(msg)
    parts = urlsplit(settings.base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        msg = f"pos.lightspeed_k.base_url: {settings.base_url!r} is not an http(s) URL"
        raise PosConfigError(msg)
    return settings


class LightspeedKDriver:
    """Send orders to ``/o/op/1/order/toGo`` or ``/local`` with a Bearer token; outcomes arrive by webhook."""

    name = "lightspeed_k"
    two_phase = True

    def __init__(
        self,
        settings: LightspeedKSettings,
        *,
        tz: ZoneInfo,
        timeout_seconds: float,
        store: KeyValueStore | None,
        clock: Callable[[], datetime] | None = None,
        client: httpx.AsyncClient | None = None,
        confirm_timeout_seconds: float = 120,
        phone_region: str | None = None,
    ) -> None:
        self._settings = check_settings(settings)
        # Lightspeed stops trying to deliver the order to the POS when the agent stops waiting and prints
        # the fallback ticket; a longer window could bring the order to the till after the kitchen has it.
        self._max_attempt_ms = max(60_000, int(confirm_timeout_seconds * 1000))
        self._tz = tz
        self._phone_region = phone_region
        self._clock = clock or (lambda: datetime.now(UTC))
        self._base = settings.base_url.rstrip("/")
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_seconds),
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=8),
        )
        assert settings.client_id is not None and settings.client_secret is not None
        seed = settings.refresh_token.get_secret_value() if settings.refresh_token else None
        self.tokens = TokenManager(
            token_url=f"{self._base}/oauth/token",
            client_id=settings.client_id,
            client_secret=settings.client_secret.get_secret_value(),
            seed_refresh_token=seed,
            store=store,
            client=self._client,
            clock=self._clock,
            key_prefix=f"pos.lightspeed_k.{settings.business_location_id}",
        )

    async def inject(self, request: InjectRequest) -> InjectResult:
        """POST the order; every network, token or POS behaviour becomes a result, never an exception."""
        key = request.idempotency_key
        try:
            path, body = build_order_request(
                request.order,
                settings=self._settings,
                idempotency_key=key,
                already_printed=request.already_printed,
                tz=self._tz,
                now=self._clock(),
                max_attempt_ms=self._max_attempt_ms,
                phone_region=self._phone_region,
            )
        except MappingError as exc:
            result: InjectResult = _mapping_failure(exc)
            self._log_result(key, request.attempt, None, None, result)
            return result
        started = time.perf_counter()
        try:
            response = await self._authorised("POST", path, json=body)
        except AuthRequired as exc:
            result = Permanent(ErrorClass.AUTH, _auth_reason(exc.reason))
        except TokenEndpointUnavailable as exc:
            result = Transient(reason=exc.reason)
        except _HTTPX_ERRORS as exc:
            result = _network_failure(exc)
        else:
            result = self._classify(response)
            self._log_result(key, request.attempt, response.status_code, _ms_since(started), result)
            return result
        self._log_result(key, request.attempt, None, None, result)
        return result

    async def probe(self) -> Readiness:
        """Ask ``onlineOrderReadiness`` (check off: only the token; UNSUPPORTED when valid); never raises."""
        started = time.perf_counter()
        if not self._settings.check_readiness:
            try:
                await self.tokens.access_token()
            except AuthRequired as exc:
                return Readiness(ReadinessState.AUTH_REQUIRED, detail=_auth_reason(exc.reason))
            except TokenEndpointUnavailable as exc:
                return Readiness(ReadinessState.UNREACHABLE, detail=exc.reason)
            # A valid token says nothing about the till: with the check off, only a real order can tell.
            return Readiness(ReadinessState.UNSUPPORTED, _ms_since(started), "token valid (readiness check off)")
        params = {"businessLocationId": str(self._settings.business_location_id)}
        try:
            response = await self._authorised("GET", READINESS_PATH, params=params)
        except AuthRequired as exc:
            return Readiness(ReadinessState.AUTH_REQUIRED, detail=_auth_reason(exc.reason))
        except TokenEndpointUnavailable as exc:
            return Readiness(ReadinessState.UNREACHABLE, detail=exc.reason)
        except _HTTPX_ERRORS as exc:
            log.info("pos_probe_failed", driver=self.name, reason=_describe(exc))
            return Readiness(ReadinessState.UNREACHABLE, detail=f"Lightspeed API not reachable: {_describe(exc)}")
        latency_ms = _ms_since(started)
        status = response.status_code
        if status in (401, 403):
            detail = _auth_reason(f"the Lightspeed API refused the access token ({status}) after a refresh")
            return Readiness(ReadinessState.AUTH_REQUIRED, latency_ms, detail)
        if status != 200:
            detail = f"the readiness check answered {status}"
            return Readiness(ReadinessState.UNREACHABLE, latency_ms, detail)
        ready, conditions, detail = readiness_from(_body(response))
        state = ReadinessState.READY if ready else ReadinessState.NOT_READY
        return Readiness(state, latency_ms, detail, conditions)

    async def confirmation(self, request: InjectRequest) -> InjectResult | None:
        """Return None: K-Series outcomes arrive by webhook, handled by the agent core."""
        return None

    async def authorize(self, refresh_token: str) -> None:
        """Store a refresh token from a new authorisation (``venue-agent pos authorize``)."""
        await self.tokens.set_refresh_token(refresh_token)

    async def aclose(self) -> None:
        """Close the HTTP client if this driver made it."""
        if self._owns_client:
            await self._client.aclose()

    async def _authorised(
        self, method: str, path: str, *, json: object = None, params: dict[str, str] | None = None
    ) -> httpx.Response:
        """Send with a Bearer token; on 401/403 refresh once and send the same request once more."""
        token = await self.tokens.access_token()
        response = await self._send(method, path, token, json=json, params=params)
        if response.status_code not in (401, 403):
            return response
        log.info("pos_token_rejected", driver=self.name, status=response.status_code, path=path)
        token = await self.tokens.force_refresh(token)
        return await self._send(method, path, token, json=json, params=params)

    async def _send(
        self, method: str, path: str, token: str, *, json: object, params: dict[str, str] | None
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        return await self._client.request(method, f"{self._base}{path}", json=json, params=params, headers=headers)

    def _classify(self, response: httpx.Response) -> InjectResult:
        result = classify_answer(response.status_code, _body(response))
        if isinstance(result, Transient) and result.retry_after is None:
            wait = parse_retry_after(response.headers.get("Retry-After"), self._clock())
            if wait is not None:
                result = dataclasses.replace(result, retry_after=wait)
        if isinstance(result, Permanent) and result.error_class is ErrorClass.AUTH:
            result = dataclasses.replace(result, reason=_auth_reason(result.reason))
        return result

    def _log_result(
        self, key: str, attempt: int, status: int | None, latency_ms: float | None, result: InjectResult
    ) -> None:
        fields: dict[str, object] = {"driver": self.name, "idempotency_key": key, "attempt": attempt, "status": status}
        if latency_ms is not None:
            fields["latency_ms"] = latency_ms
        if isinstance(result, Transient):
            log.warning("pos_request_failed", **fields, reason=result.reason, in_doubt=result.in_doubt)
        elif isinstance(result, Permanent):
            log.warning("pos_request_failed", **fields, error_class=result.error_class.value, reason=result.reason)
        elif isinstance(result, Injected):
            log.info("pos_order_injected", **fields, pos_reference=result.pos_reference, duplicate=result.duplicate)
        else:
            log.info("pos_order_accepted", **fields, pos_reference=result.pos_reference)


def _mapping_failure(exc: MappingError) -> Permanent:
    return Permanent(exc.error_class, f"the order cannot be sent to Lightspeed: {exc}", skus=exc.skus)


def _auth_reason(reason: str) -> str:
    """Return ``reason`` with the re-authorisation remedy, unless it already names its own remedy."""
    if "venue-agent pos authorize" in reason or CLIENT_REJECTED in reason:
        return reason
    return f"{reason}; {REAUTHORISE}"


def _network_failure(exc: BaseException) -> Transient:
    if isinstance(exc, _NOT_SENT):
        return Transient(reason=f"Lightspeed API not reachable: {_describe(exc)}")
    if isinstance(exc, httpx.TimeoutException):
        reason = f"Lightspeed API did not answer in time; it may have the order: {_describe(exc)}"
    else:
        reason = f"Connection to the Lightspeed API broke mid-request; it may have the order: {_describe(exc)}"
    return Transient(reason=reason, in_doubt=True)


def _body(response: httpx.Response) -> object:
    try:
        body: object = response.json()
    except (ValueError, RecursionError):  # RecursionError: a nesting bomb from a broken or hostile POS is just not JSON
        return response.text
    return body


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
