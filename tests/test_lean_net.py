"""The HTTP driver's asyncio network backend: keep-alive the POS closed, TLS, and the errors httpx expects."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpcore
import pytest

from drivers.pos.base import Injected
from drivers.pos.lean_net import AsyncioBackend
from tests.test_http_driver import driver_for, request_for


class ClosingPos:
    """A POS that answers one order per connection with keep-alive, then closes that connection while it is idle."""

    def __init__(self) -> None:
        self.connections = 0
        self.orders = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.answer(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):  # a client that left without a request
            pass
        finally:
            writer.close()

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        self.orders += 1
        body = json.dumps({"pos_reference": f"P{self.orders}"}).encode()
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nConnection: keep-alive\r\n")
        writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        await asyncio.sleep(0.1)  # the driver's connection is back in its pool, idle, when the POS drops it


@pytest.fixture
async def closing_pos() -> AsyncIterator[tuple[ClosingPos, int]]:
    pos = ClosingPos()
    server = await asyncio.start_server(pos.handle, "127.0.0.1", 0)
    try:
        yield pos, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_keep_alive_connection_the_pos_closed_is_not_reused(closing_pos: tuple[ClosingPos, int]) -> None:
    """After the POS closes an idle connection, the next order goes on a new one: injected, not in doubt."""
    pos, port = closing_pos
    async with driver_for(f"http://127.0.0.1:{port}/orders") as driver:
        first = await driver.inject(request_for("ord_1"))
        await asyncio.sleep(0.3)
        second = await driver.inject(request_for("ord_2"))
    assert (first, second) == (Injected(pos_reference="P1"), Injected(pos_reference="P2"))
    assert pos.connections == 2


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (made with the openssl command)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def echo_tls_server(cert: Path, key: Path) -> asyncio.Server:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()

    return await asyncio.start_server(echo, "127.0.0.1", 0, ssl=context)


async def test_tls_round_trip_and_untrusted_certificate(certificate: tuple[Path, Path]) -> None:
    """TLS to a trusted POS carries bytes both ways; an untrusted certificate is a connect error (nothing sent)."""
    cert, key = certificate
    server = await echo_tls_server(cert, key)
    port = server.sockets[0].getsockname()[1]
    backend = AsyncioBackend()
    try:
        trusted = ssl.create_default_context(cafile=str(cert))
        stream = await (await backend.connect_tcp("127.0.0.1", port, timeout=2)).start_tls(trusted, "127.0.0.1", 2)
        assert stream.get_extra_info("ssl_object") is not None
        await stream.write(b"hello", timeout=2)
        assert await stream.read(100, timeout=2) == b"hello"
        await stream.aclose()
        plain = await backend.connect_tcp("127.0.0.1", port, timeout=2)
        with pytest.raises(httpcore.ConnectError):
            await plain.start_tls(ssl.create_default_context(), "127.0.0.1", 2)
    finally:
        server.close()
        await server.wait_closed()


async def test_read_timeout_and_refused_connection_map_to_httpcore_errors(
    closing_pos: tuple[ClosingPos, int],
) -> None:
    """A silent peer is a read timeout; a closed port is a connect error (httpx maps both for the driver)."""
    _, port = closing_pos
    backend = AsyncioBackend()
    stream = await backend.connect_tcp("127.0.0.1", port, timeout=2)
    with pytest.raises(httpcore.ReadTimeout):
        await stream.read(100, timeout=0.05)
    await stream.aclose()
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    free = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    with pytest.raises(httpcore.ConnectError):
        await backend.connect_tcp("127.0.0.1", free, timeout=2)
