"""The ``http`` POS driver (docs/http-pos.md): a POS terminal or in-house POS on the LAN that speaks plain JSON."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from urllib.parse import quote, urlsplit, urlunsplit

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
from drivers.pos.errors import PosConfigError, PosResolveError
from drivers.pos.http_mapping import (
    build_request,
    classify_confirmation,
    classify_readiness,
    classify_response,
)
from drivers.pos.lean_http import LeanTransport
from drivers.pos.mdns import MDNS_SCHEME, MdnsResolver

log = structlog.get_logger("venue_agent.pos.http")

# Sends are rate limited: a few keep-alive connections suffice.
MAX_CONNECTIONS = 8
try:
    USER_AGENT = f"venue-agent/{version('venue-agent')}"
except PackageNotFoundError:  # run from a source tree that was never installed
    USER_AGENT = "venue-agent"

# Failures before the request left this box; any other failure leaves the POS possibly holding the order.
_NOT_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
    httpx.InvalidURL,
)
_HTTPX_ERRORS = (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError)


class HttpDriver:
    """Send orders to ``POST {url}`` with an idempotency key and an optional HMAC signature."""

    two_phase = False

    def __init__(
        self,
        *,
        url: str,
        timeout_seconds: float,
        hmac_secret: bytes | None = None,
        token: str | None = None,
        clock_unix: Callable[[], int] = lambda: int(time.time()),
        transport: httpx.AsyncBaseTransport | None = None,
        resolver: MdnsResolver | None = None,
        name: str = "http",
    ) -> None:
        self.name = name
        self._mdns_name: str | None = None
        if url.startswith(MDNS_SCHEME):
            self._mdns_name = url.removeprefix(MDNS_SCHEME).strip()
            if not self._mdns_name:
                msg = "pos.http.url: 'mdns:' needs an instance name, e.g. 'mdns:front-till'"
                raise PosConfigError(msg)
        elif urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            msg = f"pos.http.url: {url!r} is not an http(s) URL or 'mdns:<instance name>'"
            raise PosConfigError(msg)
        self._url = url.rstrip("/")
        self._hmac_secret = hmac_secret
        self._clock_unix = clock_unix
        self._resolver = resolver
        self._owns_resolver = False
        if self._mdns_name is not None and resolver is None:
            self._resolver = MdnsResolver(timeout_seconds=min(timeout_seconds, 5.0))
            self._owns_resolver = True
        self._headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._timeout = httpx.Timeout(timeout_seconds).as_dict()
        # httpx's request and response types over a lean transport, without httpx's client around them: a POS on
        # the LAN needs no proxy from the environment, cookies, redirects or auth flows, and those layers cost more
        # CPU per order than the exchange itself (docs/benchmarks.md).
        self._transport = transport or LeanTransport(max_connections=MAX_CONNECTIONS)

    async def inject(self, request: InjectRequest) -> InjectResult:
        """POST the order; every network or POS behaviour becomes a result, never an exception."""
        key = request.idempotency_key
        try:
            url = await self._order_url()
        except PosResolveError as exc:
            log.warning("pos_request_failed", driver=self.name, idempotency_key=key, reason=str(exc))
            return Transient(reason=str(exc))
        headers, body = build_request(request, hmac_secret=self._hmac_secret, now_unix=self._clock_unix())
        started = time.perf_counter()
        try:
            response = await self._call("POST", url, content=body, headers=headers)
        except _HTTPX_ERRORS as exc:
            failure = self._network_failure(exc)
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
        result = classify_response(response.status_code, response.headers, response.content, self._now())
        self._log_result(key, request.attempt, response.status_code, latency_ms, result)
        return result

    async def probe(self) -> Readiness:
        """GET ``/ready`` on the POS's host; never raises."""
        try:
            url = _with_path(await self._order_url(), "/ready")
        except PosResolveError as exc:
            return Readiness(ReadinessState.UNREACHABLE, detail=str(exc))
        started = time.perf_counter()
        try:
            response = await self._call("GET", url)
        except _HTTPX_ERRORS as exc:
            self._forget_on_connect_error(exc)
            log.info("pos_probe_failed", driver=self.name, reason=_describe(exc))
            return Readiness(ReadinessState.UNREACHABLE, detail=f"POS not reachable: {_describe(exc)}")
        latency_ms = round((time.perf_counter() - started) * 1000, 1)
        return classify_readiness(response.status_code, response.headers, response.content, latency_ms)

    async def confirmation(self, request: InjectRequest) -> InjectResult | None:
        """GET ``{url}/{key}``: the order's fate once a two-phase POS settled it, else None."""
        key = request.idempotency_key
        try:
            url = f"{await self._order_url()}/{quote(key, safe='')}"
            response = await self._call("GET", url)
        except PosResolveError as exc:
            log.info("pos_confirmation_failed", driver=self.name, idempotency_key=key, reason=str(exc))
            return None
        except _HTTPX_ERRORS as exc:
            self._forget_on_connect_error(exc)
            log.info("pos_confirmation_failed", driver=self.name, idempotency_key=key, reason=_describe(exc))
            return None
        result = classify_confirmation(response.status_code, response.headers, response.content)
        if result is None and response.status_code not in (200, 404):
            log.info("pos_confirmation_failed", driver=self.name, idempotency_key=key, status=response.status_code)
        elif result is not None:
            self._log_result(key, request.attempt, response.status_code, None, result)
        return result

    async def aclose(self) -> None:
        """Close the HTTP client (and the mDNS resolver this driver started)."""
        await self._transport.aclose()
        if self._resolver is not None and self._owns_resolver:
            await self._resolver.aclose()

    async def _call(
        self, method: str, url: str, *, content: bytes = b"", headers: dict[str, str] | None = None
    ) -> httpx.Response:
        request = httpx.Request(
            method,
            url,
            headers={**self._headers, **headers} if headers else self._headers,
            content=content,
            extensions={"timeout": self._timeout},
        )
        response = await self._transport.handle_async_request(request)
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    async def _order_url(self) -> str:
        if self._mdns_name is None:
            return self._url
        assert self._resolver is not None
        return (await self._resolver.resolve(self._mdns_name)).rstrip("/")

    def _network_failure(self, exc: BaseException) -> Transient:
        self._forget_on_connect_error(exc)
        if isinstance(exc, _NOT_SENT):
            return Transient(reason=f"POS not reachable: {_describe(exc)}")
        if isinstance(exc, httpx.TimeoutException):
            reason = f"POS did not answer in time; it may have the order: {_describe(exc)}"
        else:
            reason = f"Connection to the POS broke mid-request; it may have the order: {_describe(exc)}"
        return Transient(reason=reason, in_doubt=True)

    def _forget_on_connect_error(self, exc: BaseException) -> None:
        if self._mdns_name is not None and self._resolver is not None and isinstance(exc, httpx.ConnectError):
            self._resolver.forget(self._mdns_name)

    def _log_result(self, key: str, attempt: int, status: int, latency_ms: float | None, result: InjectResult) -> None:
        fields = {"driver": self.name, "idempotency_key": key, "attempt": attempt, "status": status}
        if latency_ms is not None:
            fields["latency_ms"] = latency_ms
        if isinstance(result, Transient | Permanent):
            error_class = result.error_class.value if isinstance(result, Permanent) else None
            log.warning("pos_request_failed", **fields, error_class=error_class, reason=result.reason)
        elif isinstance(result, Injected):
            log.info("pos_order_injected", **fields, pos_reference=result.pos_reference, duplicate=result.duplicate)
        else:
            log.info("pos_order_accepted", **fields, pos_reference=result.pos_reference)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock_unix(), UTC)


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
