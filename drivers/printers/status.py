"""Real-time status (DLE EOT n) for every transport: the queries, the reply decoding and the dialogue.

Pure: the transports supply the I/O. An Epson-style printer answers each ``10 04 n`` with one byte whose
fixed bits follow the pattern ``0xx1xx10``; anything else (an ASB frame, noise, a reply to another query)
is not understood and the status stays unknown rather than being guessed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Protocol

from drivers.printers.base import UNKNOWN, PrinterStatus, StatusReading

QUERY_PRINTER = b"\x10\x04\x01"
QUERY_OFFLINE_CAUSE = b"\x10\x04\x02"
QUERY_PAPER = b"\x10\x04\x04"
STATUS_QUERIES: tuple[bytes, bytes, bytes] = (QUERY_PRINTER, QUERY_OFFLINE_CAUSE, QUERY_PAPER)

_FIXED_MASK = 0x93
_FIXED_BITS = 0x12


@dataclass(frozen=True)
class Timeouts:
    """Seconds a transport waits: to connect or open, for each status reply byte, and to hand over a job."""

    connect: float = 3.0
    status: float = 1.0
    write: float = 10.0

    def __post_init__(self) -> None:
        for field in ("connect", "status", "write"):
            if not getattr(self, field) > 0:
                raise ValueError(f"timeout {field} must be positive, got {getattr(self, field)!r}")


def valid_reply(byte: int) -> bool:
    """Whether ``byte`` has the fixed bits of a DLE EOT reply (``0xx1xx10``)."""
    return byte & _FIXED_MASK == _FIXED_BITS


def decode_status(n1: int | None, n2: int | None = None, n4: int | None = None) -> StatusReading:
    """Map the replies to DLE EOT 1, 2 and 4 (``None`` = not answered) to a reading; unknown unless n1 answered."""
    replies = [byte for byte in (n1, n2, n4) if byte is not None]
    raw = bytes(replies)
    if n1 is None:
        return UNKNOWN
    for byte in replies:
        if not valid_reply(byte):
            return StatusReading(PrinterStatus.UNKNOWN, f"status reply not understood: 0x{byte:02X}", raw)
    if (n4 is not None and n4 & 0x60 == 0x60) or (n2 is not None and n2 & 0x20):
        return StatusReading(PrinterStatus.PAPER_OUT, "paper roll is out", raw)
    if n2 is not None and n2 & 0x04:
        return StatusReading(PrinterStatus.COVER_OPEN, "cover is open", raw)
    if n1 & 0x08:
        return StatusReading(PrinterStatus.OFFLINE, "printer is offline", raw)
    if n4 is not None and n4 & 0x0C == 0x0C:
        return StatusReading(PrinterStatus.PAPER_LOW, "paper roll is nearly out", raw)
    return StatusReading(PrinterStatus.OK, "ready", raw)


def decode_replies(replies: Sequence[int]) -> StatusReading:
    """Decode the replies received so far, in query order (n1, n2, n4); missing ones count as unanswered."""
    padded = [*replies, None, None, None]
    return decode_status(padded[0], padded[1], padded[2])


class StatusPort(Protocol):
    """Blocking I/O for the status dialogue (serial, USB), each call bounded by the status timeout."""

    def discard_input(self) -> None:
        """Drop bytes already waiting from the printer (ASB frames, late replies)."""
        ...

    def query(self, request: bytes) -> int | None:
        """Send ``request`` and return the one reply byte, or ``None`` when none came in time."""
        ...


class AsyncStatusPort(Protocol):
    """Non-blocking I/O for the status dialogue (network), each call bounded by the status timeout."""

    def discard_input(self) -> Awaitable[None]:
        """Drop bytes already waiting from the printer (ASB frames, late replies)."""
        ...

    def query(self, request: bytes) -> Awaitable[int | None]:
        """Send ``request`` and return the one reply byte, or ``None`` when none came in time."""
        ...


def _ends_dialogue(reply: int | None) -> bool:
    # A missing or garbled reply ends the dialogue: a late answer would otherwise be read as the next one's.
    return reply is None or not valid_reply(reply)


def read_status(port: StatusPort) -> StatusReading:
    """Run DLE EOT 1, 2, 4 over a blocking port; stops at the first silent or garbled reply."""
    port.discard_input()
    replies: list[int] = []
    for request in STATUS_QUERIES:
        reply = port.query(request)
        if reply is not None:
            replies.append(reply)
        if _ends_dialogue(reply):
            break
    return decode_replies(replies)


async def read_status_async(port: AsyncStatusPort) -> StatusReading:
    """Run DLE EOT 1, 2, 4 over an asyncio port; stops at the first silent or garbled reply."""
    await port.discard_input()
    replies: list[int] = []
    for request in STATUS_QUERIES:
        reply = await port.query(request)
        if reply is not None:
            replies.append(reply)
        if _ends_dialogue(reply):
            break
    return decode_replies(replies)
