"""Fuzz the DLE EOT status decoders with arbitrary bytes: they never raise and always give a defined status."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.printers.base import PrinterStatus, StatusReading
from drivers.printers.decode import decode_escpos
from drivers.printers.errors import EscPosDecodeError
from drivers.printers.network import NetworkTransport
from drivers.printers.status import (
    STATUS_QUERIES,
    Timeouts,
    decode_replies,
    decode_status,
    read_status,
    read_status_async,
)

FUZZ = settings(max_examples=300, deadline=None)
BYTE = st.integers(min_value=0, max_value=255)
REPLY = st.none() | BYTE
# A printer's answers: each query gets a byte, nothing (timeout) or several (an ASB frame, noise).
ANSWERS = st.lists(st.binary(max_size=4), max_size=5)


def defined(reading: StatusReading, raw_from: Sequence[int]) -> None:
    """A reading is one of the states, has a detail and only raw bytes the printer sent."""
    assert isinstance(reading.status, PrinterStatus)
    assert reading.detail
    assert set(reading.raw) <= set(raw_from)


@FUZZ
@given(REPLY, REPLY, REPLY)
def test_decode_status_never_raises(n1: int | None, n2: int | None, n4: int | None) -> None:
    """Any reply bytes (or none) decode to a defined status; without n1 it is unknown, never ok."""
    reading = decode_status(n1, n2, n4)
    defined(reading, [b for b in (n1, n2, n4) if b is not None])
    if n1 is None:
        assert reading.status is PrinterStatus.UNKNOWN


@FUZZ
@given(st.binary(max_size=8))
def test_decode_replies_never_raises(data: bytes) -> None:
    """Any sequence of reply bytes decodes; bytes past the third are ignored."""
    defined(decode_replies(list(data)), list(data[:3]))


class ScriptedPort:
    """A status port answering each query with the next scripted bytes (first byte, or None when empty)."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = list(answers)
        self.sent: list[bytes] = []

    def discard_input(self) -> None:
        """Nothing waits unasked."""

    def query(self, request: bytes) -> int | None:
        """Return the first byte of the next answer, None when silent or out of answers."""
        self.sent.append(request)
        answer = self.answers.pop(0) if self.answers else b""
        return answer[0] if answer else None


class AsyncScriptedPort(ScriptedPort):
    """The asyncio flavour of ``ScriptedPort``."""

    async def discard_input(self) -> None:  # type: ignore[override]
        """Nothing waits unasked."""

    async def query(self, request: bytes) -> int | None:  # type: ignore[override]
        """Return the first byte of the next answer, None when silent or out of answers."""
        return ScriptedPort.query(self, request)


@FUZZ
@given(ANSWERS)
def test_status_dialogue_never_raises(answers: list[bytes]) -> None:
    """Whatever the printer answers, the dialogue ends with a defined status and asks at most the three queries."""
    port = ScriptedPort(answers)
    reading = read_status(port)
    defined(reading, [a[0] for a in answers if a])
    assert port.sent == list(STATUS_QUERIES[: len(port.sent)])
    if not answers or not answers[0]:
        assert reading.status is PrinterStatus.UNKNOWN


@settings(max_examples=100, deadline=None)
@given(ANSWERS)
def test_async_status_dialogue_agrees_with_the_blocking_one(answers: list[bytes]) -> None:
    """The network (asyncio) dialogue decodes the same answers to the same reading."""
    expected = read_status(ScriptedPort(answers))
    assert asyncio.run(read_status_async(AsyncScriptedPort(answers))) == expected


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=256))
def test_escpos_decoder_never_raises(data: bytes) -> None:
    """The ESC/POS reader refuses a stream it cannot read with its own error, never another exception."""
    try:
        decode_escpos(data)
    except EscPosDecodeError as exc:
        assert "byte" in str(exc)


async def _network_status(answers: list[bytes]) -> StatusReading:
    """Read status over TCP from a loopback peer that answers each chunk it receives with the next scripted bytes."""
    script = list(answers)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.read(64):
                if script:
                    writer.write(script.pop(0))
                    await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        transport = NetworkTransport("fuzz", "127.0.0.1", port, Timeouts(connect=1, status=0.05, write=1))
        return await transport.status()
    finally:
        server.close()


@settings(max_examples=25, deadline=None)
@given(ANSWERS)
def test_network_status_from_arbitrary_replies_is_defined(answers: list[bytes]) -> None:
    """Over a real socket, any bytes the printer sends back give a defined status, never an exception."""
    reading = asyncio.run(_network_status(answers))
    defined(reading, b"".join(answers))
