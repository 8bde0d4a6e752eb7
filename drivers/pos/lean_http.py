"""An httpx transport for a POS on the LAN: HTTP/1.1 keep-alive connections parsed by httptools (llhttp).

The HTTP driver sends an order as one small request and reads one small answer. httpx's default transport
(httpcore's pool, h11 and anyio's locks and cancel scopes) spent about half of the agent's CPU per drained order
on that; this transport does the same exchange on an asyncio protocol with the C parser uvicorn already uses,
and hands httpx a finished ``httpx.Response``. It raises httpx's own exceptions, split as httpcore splits them:
``ConnectError``/``ConnectTimeout``/``PoolTimeout`` before anything was sent, ``WriteError``, ``ReadTimeout``,
``ReadError`` and ``RemoteProtocolError`` once the request may have reached the POS.

Kept out on purpose: proxies, HTTP/2, ``Expect: 100-continue``, streaming bodies (a POS answer is read whole, at
most ``MAX_BODY_BYTES``) and bodies that end only with the connection after an HTTP/1.0 answer without a length.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import httptools
import httpx

MAX_BODY_BYTES = 1 << 20
KEEPALIVE_EXPIRY_SECONDS = 5.0  # httpx's default: an idle connection older than this is closed, not reused

Origin = tuple[str, str, int]


@dataclass
class _Answer:
    """The response being read on a connection."""

    done: asyncio.Future[None]
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: list[bytes] = field(default_factory=list)
    size: int = 0
    keep_alive: bool = False


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection to the POS: at most one request on it at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._answer: _Answer | None = None
        self._parser: httptools.HttpResponseParser | None = None

    # ---- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._answer is None or self._parser is None:
            self.close()  # a server talking while the connection is idle: do not trust it with the next order
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("the POS asked to upgrade the connection"))
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"the POS's answer is not valid HTTP/1.1: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        answer = self._answer
        if answer is not None and not answer.done.done():
            why = f": {exc}" if exc else ""
            if answer.status:
                answer.done.set_exception(httpx.ReadError(f"the POS closed the connection mid-answer{why}"))
            else:
                answer.done.set_exception(
                    httpx.RemoteProtocolError(f"the POS closed the connection without answering{why}")
                )

    # ---- httptools callbacks -------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._answer is not None
        self._answer.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self._answer is not None and self._parser is not None
        self._answer.status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        answer = self._answer
        assert answer is not None
        answer.size += len(body)
        if answer.size > MAX_BODY_BYTES:
            self._fail(httpx.RemoteProtocolError(f"the POS's answer is longer than {MAX_BODY_BYTES} bytes"))
            return
        answer.body.append(body)

    def on_message_complete(self) -> None:
        answer = self._answer
        assert answer is not None
        if 100 <= answer.status < 200:  # an interim answer (102 Processing, 103 Early Hints): the real one follows
            answer.status, answer.headers, answer.body, answer.size = 0, [], [], 0
            return
        assert self._parser is not None
        answer.keep_alive = self._parser.should_keep_alive()  # HTTP/1.0 and "Connection: close" say no
        if not answer.done.done():
            answer.done.set_result(None)

    # ---- one exchange --------------------------------------------------------------------------

    async def exchange(self, head: bytes, body: bytes, *, read_timeout: float | None) -> _Answer:
        """Send one request and return the whole answer; raise httpx's errors."""
        assert self.transport is not None
        answer = _Answer(done=self._loop.create_future())
        self._answer = answer
        self._parser = httptools.HttpResponseParser(self)
        if self.closed or self.transport.is_closing():
            raise httpx.WriteError("the connection to the POS is closed")
        try:
            self.transport.write(head + body)
        except (OSError, RuntimeError) as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__) from exc
        try:
            async with asyncio.timeout(read_timeout):
                await answer.done
        except TimeoutError as exc:
            self.close()
            raise httpx.ReadTimeout(f"the POS did not answer within {read_timeout} s") from exc
        finally:
            self._answer = None
            self._parser = None
        return answer

    def reusable(self, answer: _Answer) -> bool:
        """Return whether the connection may carry another request after ``answer``."""
        return answer.keep_alive and not self.closed and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, error: Exception) -> None:
        answer = self._answer
        if answer is not None and not answer.done.done():
            answer.done.set_exception(error)
        self.close()


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 to the POS with up to ``max_connections`` keep-alive connections per origin; no proxy."""

    def __init__(
        self,
        *,
        max_connections: int = 8,
        keepalive_expiry: float = KEEPALIVE_EXPIRY_SECONDS,
        ssl_context: ssl.SSLContext | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max = max_connections
        self._expiry = keepalive_expiry
        self._ssl_context = ssl_context
        self._monotonic = monotonic
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open: dict[Origin, int] = {}
        self._waiters: dict[Origin, deque[asyncio.Future[None]]] = {}
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` on a pooled connection and return the whole answer."""
        scheme = request.url.scheme
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"the POS URL must be http or https, not {scheme!r}")
        host = request.url.host
        port = request.url.port or (443 if scheme == "https" else 80)
        origin: Origin = (scheme, host, port)
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        body = await request.aread()
        head = _head(request)
        conn = await self._checkout(origin, timeouts)
        keep = False
        try:
            answer = await conn.exchange(head, body, read_timeout=timeouts.get("read"))
            keep = conn.reusable(answer)
        finally:
            self._checkin(origin, conn, keep=keep)
        return httpx.Response(
            answer.status,
            headers=answer.headers,
            stream=httpx.ByteStream(b"".join(answer.body)),
            extensions={"http_version": b"HTTP/1.1"},
            request=request,
        )

    async def aclose(self) -> None:
        """Close every pooled connection."""
        self._closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()

    async def _checkout(self, origin: Origin, timeouts: dict[str, float | None]) -> _Connection:
        if self._closed:
            raise httpx.ConnectError("the POS client is closed")
        idle = self._idle.setdefault(origin, [])
        while True:
            now = self._monotonic()
            while idle:
                conn = idle.pop()
                if not conn.closed and now - conn.idle_since < self._expiry:
                    return conn
                conn.close()
                self._open[origin] -= 1
            if self._open.get(origin, 0) < self._max:
                break
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            waiters = self._waiters.setdefault(origin, deque())
            waiters.append(waiter)
            try:
                async with asyncio.timeout(timeouts.get("pool")):
                    await waiter
            except TimeoutError as exc:
                raise httpx.PoolTimeout("no connection to the POS came free in time") from exc
            finally:
                if not waiter.done():
                    waiter.cancel()
                with contextlib.suppress(ValueError):
                    waiters.remove(waiter)
        self._open[origin] = self._open.get(origin, 0) + 1
        try:
            return await self._connect(origin, timeouts.get("connect"))
        except BaseException:
            self._open[origin] -= 1
            self._wake_one(origin)
            raise

    def _checkin(self, origin: Origin, conn: _Connection, *, keep: bool) -> None:
        if keep and not self._closed:
            conn.idle_since = self._monotonic()
            self._idle[origin].append(conn)
        else:
            conn.close()
            self._open[origin] -= 1
        self._wake_one(origin)

    def _wake_one(self, origin: Origin) -> None:
        for waiter in self._waiters.get(origin, ()):
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _connect(self, origin: Origin, connect_seconds: float | None) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        context: ssl.SSLContext | None = None
        if scheme == "https":
            context = self._ssl_context or httpx.create_ssl_context(trust_env=False)
        try:
            async with asyncio.timeout(connect_seconds):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop), host, port, ssl=context, server_hostname=host if context else None
                )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"no connection to {host}:{port} within {connect_seconds} s") from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        return conn


def _head(request: httpx.Request) -> bytes:
    target = request.url.raw_path
    lines = [b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), target)]
    lines.extend(b"%s: %s\r\n" % (name, value) for name, value in request.headers.raw)
    lines.append(b"\r\n")
    return b"".join(lines)
