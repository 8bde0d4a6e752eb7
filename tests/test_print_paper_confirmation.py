"""Printed means the paper came out: the printer's own confirmation (GS ( H, GS r) after the cut, over TCP 9100."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from agent.domain.config import PrinterSettings
from agent.printing.print_test import print_test
from agent.printing.tickets import PrinterSetup
from drivers.printers.base import Outcome, PrinterStatus
from drivers.printers.network import NetworkTransport
from drivers.printers.status import (
    ConfirmRequest,
    ReplyParser,
    Timeouts,
    decode_asb,
    decode_paper_reply,
    profile_confirmation,
)
from tests.fake_printer import FakeNetworkPrinter
from tests.test_print_confirmation import events
from tests.test_print_worker import net, rig_for, settings_for, texts

TICKET = b"\x1b@" + b"2 x Margherita, well done and cut in eight slices\n" * 200 + b"\x1dV\x01"
FAST = Timeouts(connect=1, status=0.5, write=2, confirm=5)
PID = ConfirmRequest("process_id", b"A7K2")
GS_R = ConfirmRequest("transmit_status")


def transport(printer: FakeNetworkPrinter) -> NetworkTransport:
    """A network transport to the fake with short timeouts."""
    return NetworkTransport("pass", printer.host, printer.port, FAST)


# The wire format


def test_the_requests_are_epsons_bytes() -> None:
    """GS ( H pL=6 pH=0 fn=48 m=48 d1..d4, and GS r 1; a process ID is 4 printable bytes."""
    assert PID.command == b"\x1d\x28\x48\x06\x00\x30\x30A7K2"
    assert GS_R.command == b"\x1d\x72\x01"
    with pytest.raises(ValueError, match="4 bytes"):
        ConfirmRequest("process_id", b"\x00abc")
    ids = {ConfirmRequest.for_job("process_id", job, attempt).process_id for job in range(300) for attempt in range(3)}
    assert len(ids) == 900 and all(len(i) == 4 and i.isalnum() for i in ids)


def test_replies_are_told_apart_across_reads() -> None:
    """A status byte, a process ID response, an ASB frame and a GS r byte, split anywhere, come out in order."""
    stream = b"\x12" + b"\x37\x22A7K2\x00" + b"\x18\x00\x0f\x00" + b"\x03" + b"\x1a"
    for cut in range(len(stream) + 1):
        parser = ReplyParser()
        replies = parser.feed(stream[:cut]) + parser.feed(stream[cut:])
        assert [(r.kind, r.data) for r in replies] == [
            ("status", b"\x12"),
            ("process_id", b"A7K2"),
            ("asb", b"\x18\x00\x0f\x00"),
            ("paper", b"\x03"),
            ("status", b"\x1a"),
        ], cut


@pytest.mark.parametrize(
    ("frame", "status"),
    [
        (b"\x10\x00\x00\x00", PrinterStatus.OK),
        (b"\x10\x00\x03\x00", PrinterStatus.PAPER_LOW),
        (b"\x18\x00\x0f\x00", PrinterStatus.PAPER_OUT),
        (b"\x38\x00\x00\x00", PrinterStatus.COVER_OPEN),
        (b"\x18\x00\x00\x00", PrinterStatus.OFFLINE),
    ],
)
def test_asb_frames_decode_as_the_reference_describes(frame: bytes, status: PrinterStatus) -> None:
    """The ASB examples of Epson's GS a page read as their states."""
    assert decode_asb(frame).status is status


def test_gs_r_paper_replies() -> None:
    """GS r 1: 00 adequate, 03 near end, 0F out."""
    assert [decode_paper_reply(b).status for b in (0x00, 0x03, 0x0F)] == [
        PrinterStatus.OK,
        PrinterStatus.PAPER_LOW,
        PrinterStatus.PAPER_OUT,
    ]


def test_epson_thermal_profiles_confirm_by_process_id() -> None:
    """TM-T20II and TM-T88V ask for a process ID, the TM-U220 for GS r, other profiles only read status."""
    assert [profile_confirmation(p) for p in ("TM-T20II", "TM-T88V", "TM-U220", "default", "POS-5890")] == [
        "process_id",
        "process_id",
        "transmit_status",
        None,
        None,
    ]


# The network transport against the fake printer


@pytest.mark.parametrize("request_", [PID, GS_R], ids=["process_id", "transmit_status"])
async def test_a_healthy_printer_confirms_the_job(request_: ConfirmRequest) -> None:
    """The fake prints the job, then answers the request: the delivery is confirmed and printed."""
    async with FakeNetworkPrinter.running() as printer:
        delivery = await transport(printer).send(TICKET, confirm=request_)
    assert delivery.confirmed is True and delivery.outcome is Outcome.PRINTED
    assert printer.jobs == [TICKET]  # the request is not print data
    assert printer.confirmations == ([b"A7K2"] if request_ is PID else [])


@pytest.mark.parametrize("request_", [PID, GS_R], ids=["process_id", "transmit_status"])
async def test_paper_running_out_mid_ticket_is_caught_within_a_second(request_: ConfirmRequest) -> None:
    """The roll ends halfway: no confirmation comes, the status read meanwhile says paper out; no 5 s wait."""
    async with FakeNetworkPrinter.running() as printer:
        printer.mode_after(len(TICKET) // 2, "paper_out")
        started = time.monotonic()
        delivery = await transport(printer).send(TICKET, confirm=request_)
        elapsed = time.monotonic() - started
    assert delivery.confirmed is False
    assert delivery.after.status is PrinterStatus.PAPER_OUT
    assert delivery.outcome is Outcome.FAILED
    assert elapsed < 1.5, elapsed


async def test_the_confirmation_held_while_out_of_paper_is_not_taken_for_this_job() -> None:
    """A new roll after the connection closed releases the held answer to nobody: the job stays unconfirmed."""
    async with FakeNetworkPrinter.running() as printer:
        printer.mode_after(len(TICKET) // 2, "paper_out")
        delivery = await transport(printer).send(TICKET, confirm=PID)
        await printer.idle()
        printer.mode = "ok"
        assert delivery.confirmed is False
        assert printer.confirmations == []


async def test_an_asb_frame_saying_paper_out_ends_the_wait() -> None:
    """With ASB on (here by GS a in the job, as a DIP switch would), the paper-out frame ends the wait at once."""
    async with FakeNetworkPrinter.running() as printer:
        printer.mode_after(len(TICKET) // 2, "paper_out")
        started = time.monotonic()
        delivery = await transport(printer).send(b"\x1da\x0a" + TICKET, confirm=PID)
    assert delivery.confirmed is False and delivery.after.status is PrinterStatus.PAPER_OUT
    assert time.monotonic() - started < 1.0


async def test_a_printer_that_falls_silent_while_printing_is_not_waited_for() -> None:
    """A printer that answers nothing during the job (switched off) ends the wait after one status timeout."""
    async with FakeNetworkPrinter.running() as printer:
        printer.mode_after(len(TICKET) // 2, "silent")
        started = time.monotonic()
        delivery = await transport(printer).send(TICKET, confirm=PID)
    assert delivery.confirmed is False and delivery.after.status is PrinterStatus.UNKNOWN
    assert delivery.outcome is Outcome.UNCONFIRMED
    assert time.monotonic() - started < 2.5


# The print worker


@pytest.fixture(name="pair")
async def _pair() -> AsyncIterator[list[FakeNetworkPrinter]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(FakeNetworkPrinter.running()) for _ in range(2)]


async def test_an_epson_printer_confirms_each_ticket_and_the_record_says_so(
    tmp_path: Path, pair: list[FakeNetworkPrinter]
) -> None:
    """A TM-T20II answers GS ( H: the job is printed, confirmed; health says the printer confirms."""
    rig = await rig_for(tmp_path, settings_for(tmp_path, [net("pass", pair[0], profile="TM-T20II")]))
    await rig.fallback("ord_1")
    assert await rig.run_due() == [True]
    assert len(pair[0].confirmations) == 1
    job = (await rig.outbox.print_jobs("ord_1"))[0]
    assert (job.as_dict()["confirmation"], job.as_dict()["confirmed_by"]) == ("confirmed", "process_id")
    health = rig.worker.health()[0]
    assert (health["confirmation"], health["confirmed_by"]) == ("confirmed", "process_id")
    await rig.outbox.close()


async def test_paper_out_mid_ticket_prints_it_again_on_the_next_printer_marked_reprint(
    tmp_path: Path, pair: list[FakeNetworkPrinter]
) -> None:
    """The grill's roll ends halfway through a ticket: the bar prints it as REPRINT, BACKUP FOR GRILL; ops is told."""
    grill, bar = pair
    settings = settings_for(tmp_path, [net("grill", grill, profile="TM-T20II"), net("bar", bar, profile="TM-T20II")])
    rig = await rig_for(tmp_path, settings)
    await rig.fallback("ord_1")
    grill.mode_after(200, "paper_out")
    assert await rig.run_due() == [True]
    assert len(grill.jobs) == 1 and grill.confirmations == []
    lines = texts(bar.jobs[0])
    assert {"MAY BE A DUPLICATE", "BACKUP FOR GRILL", "COPY 2"} <= set(lines)
    job = (await rig.outbox.print_jobs("ord_1"))[0]
    assert (job.printer, job.in_doubt, job.confirmation) == ("bar", True, "process_id")
    assert [e["printer"] for e in events(settings.storage.path, "print_interrupted")] == ["grill"]
    assert {h["name"]: h["state"] for h in rig.worker.health()} == {"grill": "paper_out", "bar": "ok"}
    alerts = await rig.alerts()
    assert [(a["alert"], a["printer"]) for a in alerts] == [("printer_paper_out", "grill")]
    await rig.outbox.close()


async def test_a_clone_that_never_confirms_is_read_by_status_and_said_to_be_unconfirmed(
    tmp_path: Path, pair: list[FakeNetworkPrinter]
) -> None:
    """Profile TM-T20II but the unit ignores GS ( H: the ticket counts on its status, no duplicate, a warning."""
    clone, backup = pair
    clone.answers_confirmations = False
    rig = await rig_for(tmp_path, settings_for(tmp_path, [net("pass", clone, profile="TM-T20II"), net("bar", backup)]))
    rig.worker.slots["pass"].transport.timeouts = Timeouts(confirm=1)  # type: ignore[attr-defined]
    await rig.fallback("ord_1")
    await rig.fallback("ord_2")
    with capture_logs() as logs:
        assert await rig.run_due() == [True, True]
    assert len(clone.jobs) == 2 and backup.jobs == []
    assert [e["event"] for e in logs].count("printer_confirmation_unsupported") == 1
    assert b"\x1d(H" not in clone.jobs[1]  # not asked again
    records = [(await rig.outbox.print_jobs(o))[0].as_dict() for o in ("ord_1", "ord_2")]
    assert [(r["confirmation"], r["confirmed_by"]) for r in records] == [("unconfirmed", "status")] * 2
    assert rig.worker.health()[0]["confirmation"] == "unconfirmed"
    await rig.outbox.close()


async def test_a_printer_configured_to_confirm_that_does_not_fails_over(
    tmp_path: Path, pair: list[FakeNetworkPrinter]
) -> None:
    """confirm = "process_id" is a promise: a unit that does not answer is unconfirmed, the backup prints a REPRINT."""
    clone, backup = pair
    clone.answers_confirmations = False
    printers = [net("pass", clone, confirm="process_id"), net("bar", backup)]
    rig = await rig_for(tmp_path, settings_for(tmp_path, printers))
    rig.worker.slots["pass"].transport.timeouts = Timeouts(confirm=1)  # type: ignore[attr-defined]
    await rig.fallback("ord_1")
    assert await rig.run_due() == [True]
    assert "MAY BE A DUPLICATE" in texts(backup.jobs[0])
    job = (await rig.outbox.print_jobs("ord_1"))[0]
    assert (job.printer, job.as_dict()["confirmation"]) == ("bar", "unconfirmed")
    await rig.outbox.close()


async def test_a_plain_profile_is_unconfirmed_in_health_and_records(
    tmp_path: Path, pair: list[FakeNetworkPrinter]
) -> None:
    """The default profile can confirm nothing: status before and after as before, and it says unconfirmed."""
    rig = await rig_for(tmp_path, settings_for(tmp_path, [net("pass", pair[0])]))
    await rig.fallback("ord_1")
    assert await rig.run_due() == [True]
    assert b"\x1d(H" not in pair[0].jobs[0] and pair[0].queries >= 2
    job = (await rig.outbox.print_jobs("ord_1"))[0].as_dict()
    assert (job["confirmation"], job["confirmed_by"]) == ("unconfirmed", "status")
    assert (rig.worker.health()[0]["confirmation"], rig.worker.health()[0]["confirmed_by"]) == ("unconfirmed", "status")
    await rig.outbox.close()


@pytest.mark.parametrize("answers", [True, False])
async def test_print_test_tells_the_technician_whether_the_printer_confirms(answers: bool) -> None:
    """print-test asks a TM-T20II for its process ID and says whether it answered, and what to set if not."""
    async with FakeNetworkPrinter.running() as printer:
        printer.answers_confirmations = answers
        settings = PrinterSettings(
            name="pass", connection="network", host=printer.host, port=printer.port, profile="TM-T20II"
        )
        quick = NetworkTransport("pass", printer.host, printer.port, Timeouts(connect=1, status=0.5, confirm=1))
        result = await print_test(PrinterSetup(settings), quick, tz=ZoneInfo("Europe/London"))
    assert result["printed"] is answers
    assert result["confirmation"] == ("confirmed" if answers else "unconfirmed")
    note = " ".join(result["notes"])
    assert ("confirmed the page came out" in note) is answers
    assert ('set confirm = "status"' in note) is not answers


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=64), cut=st.integers(0, 64))
def test_the_reply_parser_takes_any_bytes_split_anywhere(data: bytes, cut: int) -> None:
    """Whatever a printer (or noise) sends, split at any point, the parser finds the same replies and never raises."""
    whole = ReplyParser().feed(data)
    parser = ReplyParser()
    split = parser.feed(data[:cut]) + parser.feed(data[cut:])
    assert split == whole
    assert all(r.kind in ("status", "process_id", "paper", "asb", "noise") for r in whole)
