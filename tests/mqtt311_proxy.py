"""A stand-in for a broker that speaks only MQTT 3.1.1: a TCP front for a real mosquitto.

A CONNECT at protocol level 5 is answered the way a 3.1.1 broker must answer it (CONNACK return code 1,
"unacceptable protocol version", then the connection closes); any other connection is relayed byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

CONNACK_UNACCEPTABLE_PROTOCOL = bytes([0x20, 0x02, 0x00, 0x01])


class Mqtt311Only:
    """Listens on a free loopback port; ``levels`` records the protocol level of every CONNECT seen."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.levels: list[int] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    @classmethod
    @asynccontextmanager
    async def running(cls, upstream_port: int) -> AsyncIterator[Mqtt311Only]:
        """Serve for the block."""
        proxy = cls(upstream_port)
        proxy._server = await asyncio.start_server(proxy._serve, "127.0.0.1", 0)
        proxy.port = proxy._server.sockets[0].getsockname()[1]
        try:
            yield proxy
        finally:
            proxy._server.close()
            for task in proxy._pipes:
                task.cancel()
            await asyncio.gather(*proxy._pipes, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            packet = await _read_packet(reader)
            body = packet[_header_length(packet) :]
            name_length = int.from_bytes(body[:2], "big")
            level = body[2 + name_length]
            self.levels.append(level)
            if level == 5:
                writer.write(CONNACK_UNACCEPTABLE_PROTOCOL)
                await writer.drain()
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            up_writer.write(packet)
            pipes = [
                asyncio.create_task(_pipe(reader, up_writer), name="proxy client to broker"),
                asyncio.create_task(_pipe(up_reader, writer), name="proxy broker to client"),
            ]
            self._pipes.update(pipes)
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            for task in pipes:
                task.cancel()
                self._pipes.discard(task)
            up_writer.close()
        except (asyncio.IncompleteReadError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def _read_packet(reader: asyncio.StreamReader) -> bytes:
    """Read one MQTT control packet (fixed header, variable-length remaining length, the rest)."""
    head = await reader.readexactly(1)
    length, multiplier, raw = 0, 1, b""
    while True:
        byte = await reader.readexactly(1)
        raw += byte
        length += (byte[0] & 0x7F) * multiplier
        if not byte[0] & 0x80:
            break
        multiplier *= 128
    return head + raw + await reader.readexactly(length)


def _header_length(packet: bytes) -> int:
    """Return the length of the fixed header of ``packet``."""
    index = 1
    while packet[index] & 0x80:
        index += 1
    return index + 1


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.CancelledError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
