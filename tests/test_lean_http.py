"""The HTTP driver's transport against real sockets: keep-alive, the pool, TLS, and every way a POS answers badly."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.pos.base import Injected, Transient
from drivers.pos.lean_http import MAX_BODY_BYTES, LeanTransport
from tests.test_http_driver import driver_for, request_for

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """Read one request (head and Content-Length body) and return its head."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
        0,
    )
    await reader.readexactly(length)
    return head


def answer(status: int, body: bytes, *extra: bytes) -> bytes:
    """An HTTP/1.1 answer with a Content-Length."""
    head = [b"HTTP/1.1 %d X" % status, b"Content-Length: %d" % len(body), *extra]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class Pos:
    """A POS on a loopback port whose every connection runs ``handler``; counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.port = 0
        self.tasks: set[asyncio.Task[object]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self.handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):  # the client left
            pass
        except asyncio.CancelledError:  # ended by pos_serving; Python 3.11's streams log a re-raised one as an error
            pass
        finally:
            writer.close()


@asynccontextmanager
async def pos_serving(handler: Handler, *, tls: ssl.SSLContext | None = None) -> AsyncIterator[Pos]:
    pos = Pos(handler)
    server = await asyncio.start_server(pos.handle, "127.0.0.1", 0, ssl=tls)
    pos.port = server.sockets[0].getsockname()[1]
    try:
        yield pos
    finally:
        server.close()
        # Handlers still waiting on a client's next request end here, not when the test's loop is torn down.
        for task in pos.tasks:
            task.cancel()
        await asyncio.gather(*pos.tasks, return_exceptions=True)
        await server.wait_closed()


def reference_answers(*, close_after: float | None = None, delay: float = 0.0) -> Handler:
    """Answer each order 201 with a running ``pos_reference`` on a keep-alive connection."""
    served = [0]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            served[0] += 1
            reference = f"P{served[0]}"
            await asyncio.sleep(delay)
            writer.write(answer(201, json.dumps({"pos_reference": reference}).encode()))
            await writer.drain()
            if close_after is not None:
                await asyncio.sleep(close_after)  # the client's connection is idle in its pool when this one closes
                return

    return handler


async def post(transport: LeanTransport, url: str, *, timeout: float = 2.0) -> httpx.Response:
    request = httpx.Request("POST", url, content=b"{}", extensions={"timeout": httpx.Timeout(timeout).as_dict()})
    response = await transport.handle_async_request(request)
    await response.aread()
    return response


async def test_keep_alive_connection_the_pos_closed_is_not_reused() -> None:
    """After the POS closes an idle connection, the next order goes on a new one: injected, not in doubt."""
    async with (
        pos_serving(reference_answers(close_after=0.1)) as pos,
        driver_for(f"http://127.0.0.1:{pos.port}/orders") as driver,
    ):
        first = await driver.inject(request_for("ord_1"))
        await asyncio.sleep(0.3)
        second = await driver.inject(request_for("ord_2"))
    assert (first, second) == (Injected(pos_reference="P1"), Injected(pos_reference="P2"))
    assert pos.connections == 2


async def test_orders_share_keep_alive_connections_up_to_the_pool_size() -> None:
    """Forty orders at once go over at most ``max_connections`` connections, each answered with its own reference."""
    async with pos_serving(reference_answers(delay=0.01)) as pos:
        transport = LeanTransport(max_connections=3)
        try:
            answers = await asyncio.gather(*(post(transport, f"http://127.0.0.1:{pos.port}/o") for _ in range(40)))
        finally:
            await transport.aclose()
    references = sorted(int(r.json()["pos_reference"][1:]) for r in answers)
    assert references == list(range(1, 41))
    assert pos.connections == 3


async def test_a_full_pool_is_a_pool_timeout_and_the_request_is_not_sent() -> None:
    """With every connection busy past the pool timeout, the next request fails before it leaves the box."""
    async with pos_serving(reference_answers(delay=1.0)) as pos:
        transport = LeanTransport(max_connections=1)
        try:
            busy = asyncio.create_task(post(transport, f"http://127.0.0.1:{pos.port}/o"))
            await asyncio.sleep(0.1)
            with pytest.raises(httpx.PoolTimeout):
                await post(transport, f"http://127.0.0.1:{pos.port}/o", timeout=0.2)
            assert (await busy).status_code == 201
        finally:
            await transport.aclose()
    assert pos.connections == 1


async def test_connection_close_and_http_1_0_answers_are_not_reused() -> None:
    """An answer saying ``Connection: close``, or an HTTP/1.0 one, leaves its connection unused afterwards."""
    answers = [answer(200, b"{}", b"Connection: close"), b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}"]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answers.pop(0))
        await writer.drain()
        await asyncio.sleep(0.5)  # keeps the connection open: only the client's reading of the answer closes it

    async with pos_serving(handler) as pos:
        transport = LeanTransport()
        try:
            for _ in range(2):
                assert (await post(transport, f"http://127.0.0.1:{pos.port}/o")).status_code == 200
        finally:
            await transport.aclose()
    assert pos.connections == 2


async def test_chunked_answer_and_interim_answers_are_read_whole() -> None:
    """A chunked body is reassembled; a 103 before the real answer is skipped."""
    chunked = (
        b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
        b'7\r\n{"pos_r\r\n12\r\neference": "P-77"}\r\n0\r\n\r\n'
    )

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(chunked)
        await writer.drain()

    async with pos_serving(handler) as pos, driver_for(f"http://127.0.0.1:{pos.port}/orders") as driver:
        assert await driver.inject(request_for()) == Injected(pos_reference="P-77")


async def test_silence_is_a_read_timeout_in_doubt_and_a_closed_port_is_not_sent() -> None:
    """A POS that takes the order and never answers leaves it in doubt; a closed port is simply not reachable."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async with pos_serving(silent) as pos, driver_for(f"http://127.0.0.1:{pos.port}/o", timeout_seconds=0.2) as d:
        hung = await d.inject(request_for())
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    free = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    async with driver_for(f"http://127.0.0.1:{free}/o") as driver:
        refused = await driver.inject(request_for())
    assert isinstance(hung, Transient) and hung.in_doubt
    assert "did not answer in time" in hung.reason
    assert isinstance(refused, Transient) and not refused.in_doubt
    assert refused.reason.startswith("POS not reachable: ConnectError")


@pytest.mark.parametrize(
    ("sent", "error", "says"),
    [
        (b"", httpx.RemoteProtocolError, "without answering"),  # closed without a word
        (b"HTTP/1.1 201 Created\r\nContent-Length: 10\r\n\r\n{}", httpx.ReadError, "mid-answer"),  # cut mid-body
        (b"SMTP ready\r\n\r\n", httpx.RemoteProtocolError, "not valid HTTP"),  # not HTTP
        # More than the cap: a protocol error, not an agent holding the answer in memory.
        (answer(200, b"x" * (MAX_BODY_BYTES + 1)), httpx.RemoteProtocolError, "longer than"),
    ],
)
async def test_broken_answers_are_httpx_errors(sent: bytes, error: type[Exception], says: str) -> None:
    """Each way a POS can break an answer is the httpx error the driver classifies (never a hang, never a crash)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(sent)
        await writer.drain()

    async with pos_serving(handler) as pos:
        transport = LeanTransport()
        try:
            with pytest.raises(error, match=says):
                await post(transport, f"http://127.0.0.1:{pos.port}/o")
        finally:
            await transport.aclose()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sent=st.binary(max_size=300) | st.builds(lambda t: t.encode(), st.text(max_size=200)), close=st.booleans())
async def test_whatever_the_pos_sends_the_answer_is_a_response_or_an_httpx_error(sent: bytes, close: bool) -> None:
    """Any bytes from the POS, then a close or silence, end as a response or an httpx error within the timeout."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 " + sent if sent[:1].isdigit() else sent)
        await writer.drain()
        if not close:
            await asyncio.sleep(1)

    async with pos_serving(handler) as pos:
        transport = LeanTransport()
        try:
            response = await post(transport, f"http://127.0.0.1:{pos.port}/o", timeout=0.2)
        except httpx.TransportError:
            pass
        else:
            assert 200 <= response.status_code < 600
        finally:
            await transport.aclose()


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


async def test_tls_to_a_trusted_pos_and_an_untrusted_certificate(certificate: tuple[Path, Path]) -> None:
    """HTTPS to a POS whose certificate is trusted works; an untrusted one is a connect error (nothing sent)."""
    cert, key = certificate
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    async with pos_serving(reference_answers(), tls=server_side) as pos:
        url = f"https://127.0.0.1:{pos.port}/orders"
        trusted = LeanTransport(ssl_context=ssl.create_default_context(cafile=str(cert)))
        try:
            assert (await post(trusted, url)).json() == {"pos_reference": "P1"}
        finally:
            await trusted.aclose()
        async with driver_for(url) as driver:  # the default context: the system's CAs, which do not know this one
            untrusted = await driver.inject(request_for())
    assert isinstance(untrusted, Transient) and not untrusted.in_doubt
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.reason
