"""A USB printer re-plugged under its stable name: debounced "unplugged", and it prints again without a restart.

The printer is a pty (a character device, as /dev/usb/lp0 is) behind a udev-style symlink, printed to by the
real file transport in device mode; the print worker runs on a fake clock and its detections are driven one
by one. The debounce itself (agent/printing/presence.py) is checked against a model with hypothesis.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.domain.clock import FakeClock
from agent.domain.config import settings_from_dict
from agent.domain.models import parse_order
from agent.domain.states import place
from agent.outbox import print_jobs
from agent.outbox.store import Outbox
from agent.printing.presence import MISSES_TO_DROP, Change, Presence
from agent.printing.worker import PrintWorker
from drivers.printers.base import PrinterStatus
from drivers.printers.decode import decode_escpos
from drivers.printers.file import FileTransport
from tests.conftest import make_order
from tests.test_file_printer import Socket

# ---- the debounce -------------------------------------------------------------------------------------------


def model(detections: list[bool], misses_to_drop: int) -> list[Change | None]:
    """What a person would report, detection by detection: gone after N misses in a row, back when seen again."""
    reported: list[Change | None] = []
    run = 0
    gone = False
    for seen in detections:
        if seen:
            reported.append(Change.BACK if gone else Change.RETURNED if run else None)
            run, gone = 0, False
        else:
            run += 1
            reported.append(Change.GONE if run == misses_to_drop and not gone else None)
            gone = gone or run >= misses_to_drop
    return reported


@given(st.lists(st.booleans(), max_size=60), st.integers(min_value=1, max_value=5))
def test_presence_reports_as_the_model_does(detections: list[bool], misses_to_drop: int) -> None:
    presence = Presence(misses_to_drop=misses_to_drop)
    assert [presence.observe(seen) for seen in detections] == model(detections, misses_to_drop)


def test_two_misses_are_not_an_unplug_the_third_is() -> None:
    presence = Presence()
    assert MISSES_TO_DROP == 3
    assert [presence.observe(False), presence.observe(False)] == [None, None]
    assert presence.missing and not presence.gone
    assert presence.observe(True) is Change.RETURNED
    assert [presence.observe(False) for _ in range(4)] == [None, None, Change.GONE, None]
    assert presence.observe(True) is Change.BACK
    assert presence.observe(True) is None


def test_presence_refuses_a_threshold_below_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Presence(misses_to_drop=0)


# ---- the print worker with a re-plugged printer -------------------------------------------------------------


class Kitchen:
    """An outbox and a print worker whose one printer is a pty behind ``tmp/venue-printer/04b8-0202-SN1``."""

    def __init__(self, tmp_path: Path) -> None:
        link_dir = tmp_path / "venue-printer"
        link_dir.mkdir()
        self.socket = Socket(link_dir / "04b8-0202-SN1")
        self.settings = settings_from_dict(
            {
                "venue": {"id": "harbour-kitchen", "timezone": "Europe/London"},
                "storage": {"path": str(tmp_path / "outbox.db"), "min_free_mb": 0},
                "pos": {"driver": "http", "http": {"url": "http://127.0.0.1:9/orders"}},
                "printers": [{"name": "pass", "connection": "file", "path": str(self.socket.link), "format": "escpos"}],
            }
        )
        self.clock = FakeClock()
        self.outbox = Outbox(self.settings.storage.path, clock=self.clock, min_free_mb=0)
        transport = FileTransport("pass", self.socket.link, device=True)
        self.worker = PrintWorker(
            outbox=self.outbox, settings=self.settings, clock=self.clock, transports={"pass": transport}
        )

    async def fallback(self, order_id: str) -> None:
        order = parse_order(make_order(order_id), venue_id="harbour-kitchen")
        now = self.clock.now()
        placement = place(order, now=now, hold_unpaid=True, buffered=True, buffer_minutes=20)
        await self.outbox.submit(order, placement, key=f"harbour-kitchen:{order_id}")
        await self.outbox.write(lambda c: print_jobs.request_fallback(c, order_id, now=now, reason="test", skip=False))

    async def print_due(self) -> list[bool]:
        return [await self.worker.print_job(job) for job in await self.outbox.due_print_jobs(self.clock.now())]

    async def alerts(self) -> list[str]:
        return await self.outbox.read(lambda c: [r["alert"] for r in c.execute("SELECT alert FROM alerts")])

    async def events(self, kind: str) -> list[dict[str, Any]]:
        def query(c: sqlite3.Connection) -> list[dict[str, Any]]:
            return [dict(r) for r in c.execute("SELECT * FROM events WHERE type = ?", (kind,))]

        return await self.outbox.read(query)

    def printed_codes(self) -> list[str]:
        data = self.socket.received()
        return [line.text.strip() for line in decode_escpos(data).lines if line.text.strip().startswith("K7Q2")]


@pytest.fixture(name="kitchen")
async def _kitchen(tmp_path: Path) -> AsyncIterator[Kitchen]:
    kitchen = Kitchen(tmp_path)
    await kitchen.outbox.open()
    await kitchen.worker.prepare()
    try:
        yield kitchen
    finally:
        await kitchen.outbox.close()
        if kitchen.socket.master is not None:
            kitchen.socket.unplug()


async def test_a_quick_replug_is_never_reported_and_the_waiting_ticket_prints_on_the_new_node(
    kitchen: Kitchen,
) -> None:
    kitchen.socket.plug()
    await kitchen.worker.detect_presence()
    await kitchen.fallback("ord_1")
    assert await kitchen.print_due() == [True]
    assert kitchen.printed_codes()

    kitchen.socket.unplug()
    await kitchen.worker.detect_presence()
    await kitchen.fallback("ord_2")
    assert await kitchen.print_due() == [False]  # it fails now, as it must...
    await kitchen.worker.detect_presence()
    assert await kitchen.alerts() == []  # ...but two misses are not an unplug: nobody is told
    assert kitchen.worker.health()[0]["state"] != "offline"

    blocker = os.openpty()  # the printer comes back as another node (lp0 -> lp1)
    try:
        kitchen.socket.plug()
        await kitchen.worker.detect_presence()  # seen again: the waiting ticket is due now, not in a minute
        assert await kitchen.print_due() == [True]
        assert kitchen.printed_codes()
    finally:
        for fd in blocker:
            os.close(fd)
    assert await kitchen.alerts() == []
    assert [job.state for job in await kitchen.outbox.print_jobs("ord_2")] == ["printed"]


async def test_three_missed_detections_report_it_unplugged_once_and_recovered_when_back(kitchen: Kitchen) -> None:
    kitchen.socket.plug()
    await kitchen.worker.detect_presence()
    kitchen.socket.unplug()
    for _ in range(MISSES_TO_DROP - 1):
        await kitchen.worker.detect_presence()
    assert await kitchen.alerts() == []
    await kitchen.worker.detect_presence()
    assert await kitchen.alerts() == ["printer_offline"]
    (health,) = kitchen.worker.health()
    assert health["state"] == "offline"
    assert "unplugged" in health["detail"]
    for _ in range(5):
        await kitchen.worker.detect_presence()
    assert await kitchen.alerts() == ["printer_offline"]  # one alert for the outage, not one per check

    kitchen.socket.plug()
    await kitchen.worker.detect_presence()
    assert [e["type"] for e in await kitchen.events("printer_recovered")] == ["printer_recovered"]
    assert kitchen.worker.health()[0]["state"] != "offline"
    await kitchen.fallback("ord_3")
    assert await kitchen.print_due() == [True]


async def until(condition: Callable[[], bool]) -> None:
    """Let the worker's task run until ``condition`` holds (it waits on the fake clock, not on time)."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the prober did not get there")


async def test_the_prober_looks_for_usb_printers_every_few_seconds(kitchen: Kitchen) -> None:
    """No device node at start: reported unplugged after three detections on the clock, not at the first."""
    presence = kitchen.worker.slots["pass"].presence
    prober = asyncio.create_task(kitchen.worker.run_prober())
    try:
        await until(lambda: presence.missed == 1)
        for misses in range(2, MISSES_TO_DROP + 1):
            assert await kitchen.alerts() == []
            assert kitchen.worker.health()[0]["state"] != "offline"
            kitchen.clock.advance(2.9)
            await asyncio.sleep(0.05)
            assert presence.missed == misses - 1, "looked again before 3 s had passed"
            kitchen.clock.advance(0.1)
            await until(lambda expected=misses: presence.missed == expected)
        await until(lambda: kitchen.worker.health()[0]["state"] == PrinterStatus.OFFLINE.value)
        assert await kitchen.alerts() == ["printer_offline"]
    finally:
        prober.cancel()
        with pytest.raises(asyncio.CancelledError):
            await prober
