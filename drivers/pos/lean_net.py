"""httpx's transport over plain asyncio streams: the same HTTP/1.1 client with less per-request bookkeeping.

httpcore's default network layer goes through anyio; for every request its pool asks each idle connection whether
the server closed it, and anyio answers by building a dict of socket attributes (with ``getpeername`` calls) each
time. Here that question is answered from the asyncio stream the event loop already reads.
"""

# ruff: noqa: ASYNC109  (httpcore's backend interface passes timeouts as arguments)

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx
from httpcore import SOCKET_OPTION, AsyncNetworkBackend, AsyncNetworkStream

_READ_LIMIT = 2**16


class _Stream(AsyncNetworkStream):
    """One TCP (or TLS) connection as an asyncio reader/writer pair, with httpcore's exceptions."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        # httpcore writes a request's head and body separately, then reads: one send for both instead of two.
        self._unsent: list[bytes] = []

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._unsent:
            await self._send(timeout)
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if buffer:
            self._unsent.append(buffer)
            if sum(map(len, self._unsent)) > _READ_LIMIT:
                await self._send(timeout)

    async def _send(self, timeout: float | None) -> None:
        data = b"".join(self._unsent)
        self._unsent.clear()
        if self._writer.is_closing():
            raise httpcore.WriteError("the connection is closed")
        try:
            self._writer.write(data)
            if self._writer.transport.get_write_buffer_size() > _READ_LIMIT:
                async with asyncio.timeout(timeout):
                    await self._writer.drain()
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc)) from exc
        except (OSError, RuntimeError) as exc:  # RuntimeError: the transport was closed under us
            raise httpcore.WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (OSError, ssl.SSLError):  # closing a connection the peer already dropped
            pass

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError as exc:
            await self.aclose()
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except (OSError, ssl.SSLError) as exc:
            await self.aclose()
            raise httpcore.ConnectError(str(exc)) from exc
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # Idle, the only thing a server may send is its close: the loop has then seen EOF or buffered bytes.
            if self._writer.is_closing() or self._reader.exception() is not None or self._reader.at_eof():
                return True
            return bool(getattr(self._reader, "_buffer", b""))
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "socket":
            return self._writer.get_extra_info("socket")
        return None


class AsyncioBackend(AsyncNetworkBackend):
    """httpcore's network backend on asyncio streams (TCP only, which is all a POS URL needs)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SOCKET_OPTION] | None = None,
    ) -> AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, limit=_READ_LIMIT, local_addr=(local_address, 0) if local_address else None
                )
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        sock: socket.socket | None = writer.get_extra_info("socket")
        if sock is not None:  # asyncio already set TCP_NODELAY
            for option in socket_options or ():
                sock.setsockopt(*option)
        return _Stream(reader, writer)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[SOCKET_OPTION] | None = None
    ) -> AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not used for a POS")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def lean_transport(limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """Return httpx's HTTP/1.1 transport (no proxy from the environment) on the asyncio backend."""
    transport = httpx.AsyncHTTPTransport(trust_env=False, limits=limits)
    # httpx builds its pool without a way to name the backend: rebuild it the same way with ours.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        http1=True,
        http2=False,
        network_backend=AsyncioBackend(),
    )
    return transport
