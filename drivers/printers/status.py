"""Real-time status (DLE EOT n) for every transport, and the replies that confirm a job came out; pure.

Pure: the transports supply the I/O. An Epson-style printer answers each ``10 04 n`` with one byte whose
fixed bits follow the pattern ``0xx1xx10``; anything else (an ASB frame, noise, a reply to another query)
is not understood and the status stays unknown rather than being guessed.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from drivers.printers.base import UNKNOWN, PrinterStatus, StatusReading

QUERY_PRINTER = b"\x10\x04\x01"
QUERY_OFFLINE_CAUSE = b"\x10\x04\x02"
QUERY_PAPER = b"\x10\x04\x04"
STATUS_QUERIES: tuple[bytes, bytes, bytes] = (QUERY_PRINTER, QUERY_OFFLINE_CAUSE, QUERY_PAPER)

_FIXED_MASK = 0x93
_FIXED_BITS = 0x12


@dataclass(frozen=True)
class Timeouts:
    """Seconds a transport waits: to connect or open, for each status reply byte, to hand over a job, and for
    the printer to say a job came out (it is printing meanwhile, its status read every half second)."""

    connect: float = 3.0
    status: float = 1.0
    write: float = 10.0
    confirm: float = 20.0

    def __post_init__(self) -> None:
        for field in ("connect", "status", "write", "confirm"):
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


# ---- job confirmation (Epson's ESC/POS reference: GS a, GS r, GS ( H fn 48) -----------------------------------

ConfirmKind = Literal["process_id", "transmit_status"]
CONFIRM_KINDS: tuple[ConfirmKind, ...] = ("process_id", "transmit_status")
# GS r 1: the paper sensor status, processed in buffer order after everything before it (not while offline).
TRANSMIT_PAPER_STATUS = b"\x1dr\x01"
_PROCESS_ID_HEADER = 0x37
_PROCESS_ID_IDENTIFIER = 0x22
_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Which confirmation a profile's printer gives, by python-escpos profile name. GS ( H fn 48 is in Epson's command
# lists for these thermal models (TM-T20III and TM-T88VI are confirmed in Epson's model matrices; the older ones
# here are unverified per unit: `venue-agent print-test` shows whether a printer answered). GS r is older and is
# documented for the TM-U220 and TM-T88II/III. Every other profile confirms by status only.
_PROFILE_CONFIRMATION: dict[str, ConfirmKind] = {
    "TM-T88IV": "process_id",
    "TM-T88IV-SA": "process_id",
    "TM-T88V": "process_id",
    "TM-T20II": "process_id",
    "TM-T20II-42col": "process_id",
    "TM-L90": "process_id",
    "TM-P80": "process_id",
    "TM-P80-42col": "process_id",
    "TM-T88II": "transmit_status",
    "TM-T88III": "transmit_status",
    "TM-U220": "transmit_status",
    "TM-U220B": "transmit_status",
}


def profile_confirmation(profile: str) -> ConfirmKind | None:
    """Return how a printer of ``profile`` confirms a job came out, or None when it can only report status."""
    return _PROFILE_CONFIRMATION.get(profile)


@dataclass(frozen=True)
class ConfirmRequest:
    """What to append after a job so the printer says it came out: ``GS ( H`` with a process ID, or ``GS r 1``."""

    kind: ConfirmKind
    process_id: bytes = b"0000"

    def __post_init__(self) -> None:
        if len(self.process_id) != 4 or any(not 32 <= b <= 126 for b in self.process_id):
            raise ValueError(f"a process ID is 4 bytes from 0x20 to 0x7E, not {self.process_id!r}")

    @property
    def command(self) -> bytes:
        """Return the bytes to send after the job's cut."""
        if self.kind == "process_id":
            # GS ( H pL pH fn m d1..d4 with pL = 6, pH = 0, fn = 48, m = 48 (Epson "Specify the process ID response").
            return b"\x1d(H\x06\x00\x30\x30" + self.process_id
        return TRANSMIT_PAPER_STATUS

    @classmethod
    def for_job(cls, kind: ConfirmKind, job_id: int, attempt: int) -> ConfirmRequest:
        """Return a request whose process ID (4 of 0-9A-Z) tells this job's attempt from any earlier one."""
        number = (job_id * 16 + attempt) % len(_ID_ALPHABET) ** 4
        digits = []
        for _ in range(4):
            number, index = divmod(number, len(_ID_ALPHABET))
            digits.append(_ID_ALPHABET[index])
        return cls(kind, "".join(reversed(digits)).encode("ascii"))


@dataclass(frozen=True)
class Reply:
    """One thing a printer sent: a DLE EOT status byte, a process ID response, a GS r byte or an ASB frame."""

    kind: Literal["status", "process_id", "paper", "asb", "noise"]
    data: bytes


class ReplyParser:
    """Splits what a printer sends into replies, across reads; pure.

    The first byte tells them apart (Epson: DLE EOT, GS a, GS r, GS ( H): a process ID response is ``37 22 d1 d2 d3 d4
    00``; a DLE EOT reply matches ``0xx1xx10``; an ASB frame is 4 bytes whose first matches ``0xx1xx00``; a
    ``GS r 1`` reply has bits 4 and 7 clear. Anything else is noise, one byte at a time.
    """

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[Reply]:
        """Return the complete replies in the bytes received so far; a cut-off one waits for the next chunk."""
        buffer = self._pending + chunk
        replies: list[Reply] = []
        i = 0
        while i < len(buffer):
            byte = buffer[i]
            if byte == _PROCESS_ID_HEADER:
                end = buffer.find(b"\x00", i + 1)
                if end == -1 and len(buffer) - i < 7:
                    break
                if end == i + 6 and buffer[i + 1] == _PROCESS_ID_IDENTIFIER:
                    replies.append(Reply("process_id", buffer[i + 2 : i + 6]))
                    i = end + 1
                    continue
                replies.append(Reply("noise", buffer[i : i + 1]))
                i += 1
            elif byte & 0x93 == 0x12:
                replies.append(Reply("status", buffer[i : i + 1]))
                i += 1
            elif byte & 0x93 == 0x10:
                if len(buffer) - i < 4:
                    break
                replies.append(Reply("asb", buffer[i : i + 4]))
                i += 4
            elif byte & 0x90 == 0:
                replies.append(Reply("paper", buffer[i : i + 1]))
                i += 1
            else:
                replies.append(Reply("noise", buffer[i : i + 1]))
                i += 1
        self._pending = buffer[i:]
        return replies


def decode_asb(frame: bytes) -> StatusReading:
    """Map a 4-byte Automatic Status Back frame (Epson ``GS a``) to a reading."""
    first, _, paper = frame[0], frame[1], frame[2]
    if paper & 0x0C:
        return StatusReading(PrinterStatus.PAPER_OUT, "paper roll is out", frame)
    if first & 0x20:
        return StatusReading(PrinterStatus.COVER_OPEN, "cover is open", frame)
    if first & 0x08:
        return StatusReading(PrinterStatus.OFFLINE, "printer is offline", frame)
    if paper & 0x03:
        return StatusReading(PrinterStatus.PAPER_LOW, "paper roll is nearly out", frame)
    return StatusReading(PrinterStatus.OK, "ready", frame)


def decode_paper_reply(byte: int) -> StatusReading:
    """Map the reply to ``GS r 1`` (paper sensor: bits 2-3 paper end, bits 0-1 near end) to a reading."""
    raw = bytes([byte])
    if byte & 0x0C:
        return StatusReading(PrinterStatus.PAPER_OUT, "paper roll is out", raw)
    if byte & 0x03:
        return StatusReading(PrinterStatus.PAPER_LOW, "paper roll is nearly out", raw)
    return StatusReading(PrinterStatus.OK, "ready", raw)


# ---- waiting for the confirmation (every two-way transport: network, serial, USB, a device node) -------------

# While a job prints, its real-time status is read after this long without a word from the printer.
CONFIRM_POLL = 0.5
SILENT_WHILE_PRINTING = StatusReading(
    PrinterStatus.UNKNOWN, "the printer stopped answering status requests while printing the job"
)


class ConfirmWatch:
    """Decides when the wait for a job's confirmation ends, from what the printer sends and when; pure.

    Feed it every chunk read (``received``) and every read that timed out (``quiet``); ``verdict`` stays None
    while waiting, then is (confirmed, the printer fell silent). The request's answer confirms; an ASB frame or a
    status byte saying the printer stopped (paper out, cover open, offline) ends it unconfirmed, as does the
    deadline; a status query unanswered for the status timeout ends it silent.
    """

    def __init__(self, request: ConfirmRequest, timeouts: Timeouts, started: float, poll: float = CONFIRM_POLL) -> None:
        self.request = request
        self.verdict: tuple[bool, bool] | None = None
        self._deadline = started + timeouts.confirm
        self._status_timeout = timeouts.status
        self._poll = poll
        self._parser = ReplyParser()
        self._asked_at: float | None = None

    def read_timeout(self, now: float) -> float:
        """Return how long the next read may wait; past the deadline the verdict is set (unconfirmed) and 0 returned."""
        left = self._deadline - now
        if left <= 0:
            if self.verdict is None:
                self.verdict = (False, False)
            return 0.0
        return min(self._poll, left)

    def quiet(self, now: float) -> bytes:
        """A read timed out: return the status query to send now (empty for none); silent once one went unanswered."""
        if self._asked_at is None:
            self._asked_at = now
            return QUERY_PRINTER
        if now - self._asked_at >= self._status_timeout:
            self.verdict = (False, True)
        return b""

    def received(self, chunk: bytes) -> None:
        """Take bytes the printer sent; the first reply that settles the wait sets the verdict."""
        for reply in self._parser.feed(chunk):
            if self.verdict is not None:
                return
            if reply.kind == "process_id" and self.request.kind == "process_id":
                if reply.data == self.request.process_id:
                    self.verdict = (True, False)
            elif reply.kind == "paper" and self.request.kind == "transmit_status":
                self.verdict = (True, False)
            elif reply.kind == "status":
                self._asked_at = None
                if reply.data[0] & 0x08:  # offline: paper end, cover open or an error stopped the job
                    self.verdict = (False, False)
            elif reply.kind == "asb" and decode_asb(reply.data).status.blocks_printing:
                self.verdict = (False, False)


class ReplyStream(Protocol):
    """Blocking two-way bytes to a printer (serial, USB, a device node), each read bounded by its timeout."""

    def read(self, timeout: float) -> bytes:
        """Return what the printer sent within ``timeout`` s (empty when nothing came); raise if the link is gone."""
        ...

    def write(self, data: bytes) -> None:
        """Send a short request (a status query)."""
        ...


class AsyncReplyStream(Protocol):
    """Non-blocking two-way bytes to a printer (network), each read bounded by its timeout."""

    def read(self, within: float) -> Awaitable[bytes]:
        """Return what the printer sent within ``within`` s (empty when nothing came); raise if the link is gone."""
        ...

    def write(self, data: bytes) -> Awaitable[None]:
        """Send a short request (a status query)."""
        ...


def await_confirmation(
    stream: ReplyStream, request: ConfirmRequest, timeouts: Timeouts, clock: Callable[[], float] = time.monotonic
) -> tuple[bool, bool]:
    """Wait over a blocking stream for ``request``'s answer (see ``ConfirmWatch``); return (confirmed, silent)."""
    watch = ConfirmWatch(request, timeouts, clock())
    while True:
        timeout = watch.read_timeout(clock())
        if watch.verdict is not None:
            return watch.verdict
        chunk = stream.read(timeout)
        if chunk:
            watch.received(chunk)
        elif query := watch.quiet(clock()):
            stream.write(query)


async def await_confirmation_async(
    stream: AsyncReplyStream, request: ConfirmRequest, timeouts: Timeouts, clock: Callable[[], float] = time.monotonic
) -> tuple[bool, bool]:
    """Wait over an asyncio stream for ``request``'s answer (see ``ConfirmWatch``); return (confirmed, silent)."""
    watch = ConfirmWatch(request, timeouts, clock())
    while True:
        timeout = watch.read_timeout(clock())
        if watch.verdict is not None:
            return watch.verdict
        chunk = await stream.read(timeout)
        if chunk:
            watch.received(chunk)
        elif query := watch.quiet(clock()):
            await stream.write(query)
