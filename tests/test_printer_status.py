"""DLE EOT status: reply validation, decoding of Epson replies, the query dialogue; choosing the transport."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.domain.config import PrinterSettings
from drivers.printers.base import PrinterStatus, StatusReading
from drivers.printers.file import FileTransport
from drivers.printers.network import NetworkTransport
from drivers.printers.serial_port import SerialTransport
from drivers.printers.status import (
    STATUS_QUERIES,
    Timeouts,
    decode_replies,
    decode_status,
    read_status,
    read_status_async,
    valid_reply,
)
from drivers.printers.transports import build_transport
from drivers.printers.usb import UsbTransport
from tests.fake_printer import QuerySplitter


@pytest.mark.parametrize("byte", [0x12, 0x16, 0x1A, 0x1E, 0x32, 0x72, 0x7E])
def test_epson_replies_are_valid(byte: int) -> None:
    """Bytes with the fixed pattern 0xx1xx10 are status replies."""
    assert valid_reply(byte)


@pytest.mark.parametrize("byte", [0x00, 0x10, 0x13, 0x41, 0x92, 0xFF])
def test_other_bytes_are_not_replies(byte: int) -> None:
    """ASB frame bytes (0xx1xx00), text and noise break the pattern."""
    assert not valid_reply(byte)


@pytest.mark.parametrize(
    ("n1", "n2", "n4", "status", "detail"),
    [
        (0x12, 0x12, 0x12, PrinterStatus.OK, "ready"),
        (0x1A, 0x32, 0x7E, PrinterStatus.PAPER_OUT, "paper roll is out"),
        (0x12, 0x12, 0x72, PrinterStatus.PAPER_OUT, "paper roll is out"),
        (0x1A, 0x32, 0x12, PrinterStatus.PAPER_OUT, "paper roll is out"),
        (0x1A, 0x16, 0x12, PrinterStatus.COVER_OPEN, "cover is open"),
        (0x1A, 0x12, 0x12, PrinterStatus.OFFLINE, "printer is offline"),
        (0x12, 0x12, 0x1E, PrinterStatus.PAPER_LOW, "paper roll is nearly out"),
    ],
)
def test_decodes_epson_examples(n1: int, n2: int, n4: int, status: PrinterStatus, detail: str) -> None:
    """Idle, paper out, cover open, offline and near end map to their states with the raw bytes kept."""
    assert decode_status(n1, n2, n4) == StatusReading(status, detail, bytes([n1, n2, n4]))


def test_paper_out_wins_over_cover_open() -> None:
    """When both are reported, paper out is what the kitchen has to fix first."""
    assert decode_status(0x1A, 0x36, 0x7E).status is PrinterStatus.PAPER_OUT


def test_no_answer_is_unknown() -> None:
    """A printer that did not answer is unknown, never ok."""
    reading = decode_status(None, None, None)
    assert reading.status is PrinterStatus.UNKNOWN
    assert reading.detail == "the printer did not answer a status request"
    assert not reading.status.blocks_printing


def test_garbled_reply_is_unknown_with_the_byte() -> None:
    """A reply that breaks the fixed pattern is not guessed at."""
    assert decode_status(0x12, 0x41, 0x12) == StatusReading(
        PrinterStatus.UNKNOWN, "status reply not understood: 0x41", b"\x12\x41\x12"
    )


def test_partial_answers_decode_what_came() -> None:
    """n1 alone still tells offline from online."""
    assert decode_replies([0x1A]).status is PrinterStatus.OFFLINE
    assert decode_replies([0x12]) == StatusReading(PrinterStatus.OK, "ready", b"\x12")
    assert decode_replies([]).status is PrinterStatus.UNKNOWN


def test_timeouts_defaults_and_validation() -> None:
    """Defaults are 3 s to connect, 1 s per status reply, 10 s to write; non-positive values are refused."""
    assert Timeouts() == Timeouts(connect=3.0, status=1.0, write=10.0)
    with pytest.raises(ValueError, match="status"):
        Timeouts(status=0)


class ScriptedPort:
    """A blocking status port answering from a script; ``None`` = no reply in time."""

    def __init__(self, *replies: int | None) -> None:
        self.replies = list(replies)
        self.log: list[bytes | str] = []

    def discard_input(self) -> None:
        self.log.append("discard")

    def query(self, request: bytes) -> int | None:
        self.log.append(request)
        return self.replies.pop(0) if self.replies else None


def test_dialogue_discards_then_asks_1_2_4() -> None:
    """Stray bytes are dropped first, then DLE EOT 1, 2, 4 are asked in order."""
    port = ScriptedPort(0x12, 0x12, 0x1E)
    assert read_status(port).status is PrinterStatus.PAPER_LOW
    assert port.log == ["discard", *STATUS_QUERIES]


def test_dialogue_stops_when_n1_times_out() -> None:
    """A silent printer costs one status timeout, not three."""
    port = ScriptedPort(None)
    assert read_status(port).status is PrinterStatus.UNKNOWN
    assert port.log == ["discard", STATUS_QUERIES[0]]


def test_dialogue_stops_at_a_garbled_reply() -> None:
    """After a reply that is not understood nothing more is asked (a late byte would shift every answer)."""
    port = ScriptedPort(0x41)
    reading = read_status(port)
    assert reading.detail == "status reply not understood: 0x41"
    assert port.log == ["discard", STATUS_QUERIES[0]]


async def test_async_dialogue_matches_the_blocking_one() -> None:
    """The asyncio variant asks the same queries and decodes the same way."""

    class AsyncPort(ScriptedPort):
        async def discard_input(self) -> None:  # type: ignore[override]
            super().discard_input()

        async def query(self, request: bytes) -> int | None:  # type: ignore[override]
            return super().query(request)

    port = AsyncPort(0x1A, 0x16)
    reading = await read_status_async(port)
    assert reading.status is PrinterStatus.COVER_OPEN
    assert port.log == ["discard", *STATUS_QUERIES]


def test_fake_splitter_finds_queries_across_chunks() -> None:
    """The fakes' splitter separates DLE EOT queries from print data even when a query is split."""
    splitter = QuerySplitter()
    assert splitter.feed(b"ab\x10") == [b"ab"]
    assert splitter.feed(b"\x04") == []
    assert splitter.feed(b"\x01cd\x10\x05") == [1, b"cd\x10\x05"]


def test_build_transport_picks_the_class_by_connection(tmp_path: Path) -> None:
    """Each ``connection`` gets its transport, with the settings' keys and the shared timeouts."""
    timeouts = Timeouts(connect=1.0, status=0.5, write=5.0)
    network = build_transport(
        PrinterSettings(name="pass", connection="network", host="10.0.0.5", port=9101), timeouts=timeouts
    )
    assert isinstance(network, NetworkTransport)
    assert (network.name, network.address, network.timeouts) == ("pass", "10.0.0.5:9101", timeouts)
    serial = build_transport(PrinterSettings(name="bar", connection="serial", device="/dev/ttyS0", baudrate=9600))
    assert isinstance(serial, SerialTransport)
    assert (serial.device, serial.baudrate, serial.timeouts) == ("/dev/ttyS0", 9600, Timeouts())
    usb = build_transport(PrinterSettings(name="grill", connection="usb", usb_vendor=0x04B8, usb_product=0x0202))
    assert isinstance(usb, UsbTransport)
    assert usb.label == "04b8:0202"
    file = build_transport(PrinterSettings(name="demo", connection="file", path=tmp_path / "t.txt"))
    assert isinstance(file, FileTransport)
    assert file.path == tmp_path / "t.txt"
