"""The print worker against fake network printers on loopback: failover, alerts, routing, crash doubt."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from agent.cli.main import main
from agent.domain.clock import FakeClock
from agent.domain.config import Settings, TicketSettings, settings_from_dict
from agent.domain.models import parse_order
from agent.domain.routing import TicketPart
from agent.domain.states import place
from agent.outbox import print_jobs, snoozes
from agent.outbox.store import Outbox
from agent.printing.slots import NOT_READ
from agent.printing.tickets import late_minutes
from agent.printing.worker import PrintWorker
from drivers.printers.decode import decode_escpos
from drivers.printers.status import Timeouts
from tests.conftest import make_order
from tests.fake_printer import FakeNetworkPrinter

PIZZA: dict[str, Any] = {
    "name": "Margherita",
    "sku": "PZ-MARG",
    "quantity": 1,
    "unit_price": 950,
    "category": "Pizza",
}
BEER: dict[str, Any] = {"name": "Pale ale", "sku": "DR-ALE", "quantity": 2, "unit_price": 500, "category": "Drinks"}


def settings_for(tmp_path: Path, printers: list[dict[str, Any]]) -> Settings:
    """Settings whose printers are the given tables (network printers on loopback)."""
    return settings_from_dict(
        {
            "venue": {"id": "harbour-kitchen", "timezone": "Europe/London"},
            "storage": {"path": str(tmp_path / "outbox.db"), "min_free_mb": 0},
            "pos": {"driver": "http", "http": {"url": "http://127.0.0.1:9/orders"}},
            "printers": printers,
        }
    )


def net(name: str, printer: FakeNetworkPrinter, **extra: Any) -> dict[str, Any]:
    """A ``[[printers]]`` table for a fake network printer."""
    return {"name": name, "connection": "network", "host": "127.0.0.1", "port": printer.port, **extra}


@pytest.fixture(name="printers")
async def _printers() -> AsyncIterator[list[FakeNetworkPrinter]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(FakeNetworkPrinter.running()) for _ in range(3)]


class Rig:
    """An outbox and a print worker on a fake clock, with helpers to queue fallback tickets."""

    def __init__(self, outbox: Outbox, worker: PrintWorker, clock: FakeClock) -> None:
        self.outbox, self.worker, self.clock = outbox, worker, clock

    async def fallback(self, order_id: str, items: list[dict[str, Any]] | None = None) -> None:
        """Store an order and request its fallback ticket."""
        payload = make_order(order_id)
        if items is not None:
            total = sum(i["quantity"] * i["unit_price"] for i in items)
            payload.update(
                items=items,
                discounts=[],
                charges={"delivery_fee": 0, "service_charge": 0, "tip": 0},
                total=total,
                payment={"status": "paid", "method": "card", "amount": total, "currency": "GBP"},
            )
        order = parse_order(payload, venue_id="harbour-kitchen")
        now = self.clock.now()
        placement = place(order, now=now, hold_unpaid=True, buffered=True, buffer_minutes=20)
        await self.outbox.submit(order, placement, key=f"harbour-kitchen:{order_id}")
        await self.outbox.write(lambda c: print_jobs.request_fallback(c, order_id, now=now, reason="test", skip=False))

    async def run_due(self) -> list[bool]:
        """Print every due job once."""
        return [await self.worker.print_job(job) for job in await self.outbox.due_print_jobs(self.clock.now())]

    async def alerts(self) -> list[dict[str, Any]]:
        """Alerts oldest first, with their names."""

        def query(c: sqlite3.Connection) -> list[dict[str, Any]]:
            return [
                {"alert": r["alert"], "severity": r["severity"], **json.loads(r["payload"])}
                for r in c.execute("SELECT * FROM alerts ORDER BY seq")
            ]

        return await self.outbox.read(query)


async def rig_for(tmp_path: Path, settings: Settings) -> Rig:
    """Open an outbox and build a worker for ``settings``."""
    clock = FakeClock()
    outbox = Outbox(settings.storage.path, clock=clock, min_free_mb=0)
    await outbox.open()
    worker = PrintWorker(outbox=outbox, settings=settings, clock=clock)
    await worker.prepare()
    return Rig(outbox, worker, clock)


def texts(job: bytes) -> list[str]:
    """The decoded lines of one printed job."""
    return [line.text.strip() for line in decode_escpos(job).lines]


async def test_a_fallback_ticket_reaches_the_printer_as_escpos(
    tmp_path: Path, printers: list[FakeNetworkPrinter]
) -> None:
    """The kitchen reads banner, code and items; the ticket is cut; the job is recorded as printed there."""
    rig = await rig_for(tmp_path, settings_for(tmp_path, [net("pass", printers[0])]))
    await rig.fallback("ord_1")
    assert await rig.run_due() == [True]
    assert len(printers[0].jobs) == 1
    decoded = decode_escpos(printers[0].jobs[0])
    assert decoded.cuts == 1
    banner = next(line for line in decoded.lines if "FALLBACK - NOT IN POS" in line.text)
    assert banner.inverse
    code = next(line for line in decoded.lines if line.text.strip() == "K7Q2M9XA")
    assert code.double
    assert any(line.text.strip().startswith("2 x Margherita") for line in decoded.lines)
    jobs = await rig.outbox.print_jobs("ord_1")
    assert [(j.state, j.printer) for j in jobs] == [("printed", "pass")]
    assert [(h["name"], h["state"]) for h in rig.worker.health()] == [("pass", "ok")]
    await rig.outbox.close()


async def test_paper_out_fails_over_to_the_next_printer_and_alerts_once(
    tmp_path: Path, printers: list[FakeNetworkPrinter]
) -> None:
    """The first printer is out of paper: the ticket prints on the second, and ops hears it once."""
    printers[0].mode = "paper_out"
    rig = await rig_for(tmp_path, settings_for(tmp_path, [net("pass", printers[0]), net("bar", printers[1])]))
    await rig.fallback("ord_1")
    await rig.fallback("ord_2")
    assert await rig.run_due() == [True, True]
    assert printers[0].jobs == []
    assert len(printers[1].jobs) == 2
    alerts = await rig.alerts()
    assert [(a["alert"], a["severity"], a["printer"]) for a in alerts] == [("printer_paper_out", "warning", "pass")]
    assert "bar" in alerts[0]["action"] and "paper roll" in alerts[0]["action"]
    assert {h["name"]: h["state"] for h in rig.worker.health()} == {"pass": "paper_out", "bar": "ok"}
    await rig.outbox.close()


async def test_all_printers_down_then_one_returns_prints_once_and_alerts_once(
    tmp_path: Path, printers: list[FakeNetworkPrinter]
) -> None:
    """Nothing can print: the job waits with backoff and one critical alert; a returning printer prints it once."""
    printers[0].refuse()
    printers[1].mode = "cover_open"
    rig = await rig_for(tmp_path, settings_for(tmp_path, [net("pass", printers[0]), net("bar", printers[1])]))
    await rig.fallback("ord_1")
    with capture_logs() as logs:
        assert await rig.run_due() == [False]
    assert any(e["event"] == "ticket_not_printed" for e in logs)
    job = (await rig.outbox.print_jobs("ord_1"))[0]
    assert job.state == "pending" and job.next_attempt_at > rig.clock.now()
    assert "connection refused" in (job.last_error or "") and "cover" in (job.last_error or "")
    assert await rig.run_due() == []  # not due yet: backoff
    for _ in range(3):
        rig.clock.advance(61)
        assert await rig.run_due() == [False]
    alerts = await rig.alerts()
    assert [(a["alert"], a["severity"]) for a in alerts] == [("printer_offline", "critical")]
    assert alerts[0]["order"]["display_code"] == "K7Q2M9XA"
    assert "Close the cover of printer bar" in alerts[0]["action"]

    await printers[0].accept()
    rig.clock.advance(61)
    assert await rig.run_due() == [True]
    rig.clock.advance(61)
    assert await rig.run_due() == []
    assert len(printers[0].jobs) == 1 and printers[1].jobs == []
    assert len(await rig.alerts()) == 1
    await rig.outbox.close()


async def test_kitchen_routing_splits_by_category_one_of_n(tmp_path: Path, printers: list[FakeNetworkPrinter]) -> None:
    """The grill gets the pizza (1 of 2), the bar the beer (2 of 2); neither sees the other's items."""
    settings = settings_for(
        tmp_path,
        [net("grill", printers[0], categories=["Pizza"]), net("bar", printers[1], categories=["Drinks"])],
    )
    rig = await rig_for(tmp_path, settings)
    await rig.fallback("ord_1", items=[PIZZA, BEER])
    assert await rig.run_due() == [True]
    grill, bar = texts(printers[0].jobs[0]), texts(printers[1].jobs[0])
    assert "1 of 2" in grill and "2 of 2" in bar
    assert any("Margherita" in t for t in grill) and not any("Pale ale" in t for t in grill)
    assert any("Pale ale" in t for t in bar) and not any("Margherita" in t for t in bar)
    jobs = await rig.outbox.print_jobs("ord_1")
    assert [(j.part, j.parts, j.printer, j.state) for j in jobs] == [
        (1, 2, "grill", "printed"),
        (2, 2, "bar", "printed"),
    ]
    await rig.outbox.close()


async def test_a_station_down_sends_its_share_to_another_printer(
    tmp_path: Path, printers: list[FakeNetworkPrinter]
) -> None:
    """The grill is out of paper: its pizza ticket (still 1 of 2) prints at the bar, so nothing is lost."""
    printers[0].mode = "paper_out"
    settings = settings_for(
        tmp_path,
        [net("grill", printers[0], categories=["Pizza"]), net("bar", printers[1], categories=["Drinks"])],
    )
    rig = await rig_for(tmp_path, settings)
    await rig.fallback("ord_1", items=[PIZZA, BEER])
    assert await rig.run_due() == [True]
    assert len(printers[1].jobs) == 2
    grills = [texts(job) for job in printers[1].jobs if "1 of 2" in texts(job)]
    assert len(grills) == 1 and any("Margherita" in t for t in grills[0]) and "BACKUP FOR GRILL" in grills[0]
    await rig.outbox.close()


async def test_a_job_caught_mid_print_by_a_crash_prints_again_marked_reprint(
    tmp_path: Path, printers: list[FakeNetworkPrinter]
) -> None:
    """A job left 'printing' by a crash prints after restart, marked as a possible duplicate."""
    settings = settings_for(tmp_path, [net("pass", printers[0])])
    rig = await rig_for(tmp_path, settings)
    await rig.fallback("ord_1")
    job = (await rig.outbox.due_print_jobs(rig.clock.now()))[0]
    await rig.outbox.write(lambda c: print_jobs.route_print_job(c, job.id, [TicketPart(1, 1, None, ("pass",))]))
    await rig.outbox.write(lambda c: print_jobs.start_print_job(c, job_id=job.id, printer="pass"))
    await rig.outbox.close()

    again = await rig_for(tmp_path, settings)
    assert await again.worker.recover() == [job.id]
    assert await again.run_due() == [True]
    lines = texts(printers[0].jobs[0])
    assert "FALLBACK - NOT IN POS" in lines and "MAY BE A DUPLICATE" in lines and "COPY 2" in lines
    assert (await again.outbox.print_jobs("ord_1"))[0].in_doubt
    await again.outbox.close()


async def test_the_prober_reports_paper_low_once_and_recovery(
    tmp_path: Path, printers: list[FakeNetworkPrinter]
) -> None:
    """A nearly empty roll raises one warning; a new roll clears it with a printer_recovered event."""
    printers[0].mode = "paper_low"
    rig = await rig_for(tmp_path, settings_for(tmp_path, [net("pass", printers[0])]))
    for slot in rig.worker.slots.values():
        await rig.worker._observe(slot, await slot.transport.status())
    await rig.worker._flush_printer_alerts()
    await rig.worker._flush_printer_alerts()
    alerts = await rig.alerts()
    assert [(a["alert"], a["severity"]) for a in alerts] == [("printer_paper_low", "warning")]
    printers[0].mode = "ok"
    for slot in rig.worker.slots.values():
        await rig.worker._observe(slot, await slot.transport.status())
    events = await rig.outbox.events_since(0)
    assert any(e.type == "printer_recovered" for e in events)
    await rig.outbox.close()


async def test_a_ticket_printed_long_after_its_order_became_due_says_late(
    tmp_path: Path, printers: list[FakeNetworkPrinter]
) -> None:
    """Printed 38 minutes after due (an outage): LATE - 38 MIN; printed within late_after_minutes: no banner."""
    rig = await rig_for(tmp_path, settings_for(tmp_path, [net("pass", printers[0])]))
    await rig.fallback("ord_soon")
    await rig.fallback("ord_late")
    soon = (await rig.outbox.due_print_jobs(rig.clock.now()))[0]
    rig.clock.advance(9 * 60)
    assert await rig.worker.print_job(soon)
    rig.clock.advance(29 * 60 + 30)
    assert await rig.run_due() == [True]
    assert not any("LATE" in t for t in texts(printers[0].jobs[0]))
    assert "LATE - 38 MIN" in texts(printers[0].jobs[1])
    late = (await rig.outbox.print_jobs("ord_late"))[0]
    assert json.loads(late.ticket or "{}")["late_minutes"] == 38
    await rig.outbox.close()


async def test_a_backup_printer_says_whose_ticket_it_prints_and_reprints_count_copies(
    tmp_path: Path, printers: list[FakeNetworkPrinter]
) -> None:
    """The grill is out of paper: the bar prints BACKUP FOR GRILL; a reprint then says REPRINT and COPY 2."""
    printers[0].mode = "paper_out"
    rig = await rig_for(tmp_path, settings_for(tmp_path, [net("grill", printers[0]), net("bar", printers[1])]))
    await rig.fallback("ord_1")
    assert await rig.run_due() == [True]
    first = texts(printers[1].jobs[0])
    assert "BACKUP FOR GRILL" in first and not any(t.startswith("COPY") for t in first)
    printers[0].mode = "ok"
    rig.worker.slots["grill"].state = NOT_READ
    assert await rig.outbox.write(lambda c: print_jobs.request_reprint(c, "ord_1", now=rig.clock.now())) == 1
    assert await rig.run_due() == [True]
    again = texts(printers[0].jobs[0])
    assert again[:2] == ["REPRINT", "COPY 2"] and not any("BACKUP" in t for t in again)
    jobs = await rig.outbox.print_jobs("ord_1")
    facts = [json.loads(j.ticket or "{}") for j in jobs]
    assert [(f["kind"], f["copy"], f["backup_for"], f["printer"]) for f in facts] == [
        ("fallback", 1, "grill", "bar"),
        ("reprint", 2, None, "grill"),
    ]
    await rig.outbox.close()


async def test_sold_out_flags_reach_the_printer_and_the_preview_of_the_printed_job(
    tmp_path: Path, printers: list[FakeNetworkPrinter], capsys: pytest.CaptureFixture[str]
) -> None:
    """A snoozed SKU is flagged on paper, and `ticket render --job` shows the same flag from the stored facts."""
    settings = settings_for(tmp_path, [net("pass", printers[0])])
    rig = await rig_for(tmp_path, settings)
    now = rig.clock.now()
    await rig.outbox.write(
        lambda c: snoozes.snooze(c, ["PZ-MARG"], until=None, source="test", reason="sold out", now=now)
    )
    await rig.fallback("ord_1")
    assert await rig.run_due() == [True]
    assert "!! SOLD OUT IN POS" in texts(printers[0].jobs[0])
    await rig.outbox.write(lambda c: snoozes.clear(c, None, now=now, source="test"))
    job = (await rig.outbox.print_jobs("ord_1"))[0]
    await rig.outbox.close()
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[venue]\nid = "harbour-kitchen"\ntimezone = "Europe/London"\n[storage]\npath = "{settings.storage.path}"\n'
        '[pos]\ndriver = "http"\n[pos.http]\nurl = "http://127.0.0.1:9/orders"\n'
        f'[[printers]]\nname = "pass"\nconnection = "network"\nhost = "127.0.0.1"\nport = {printers[0].port}\n',
        encoding="utf-8",
    )
    capsys.readouterr()
    assert main(["ticket", "render", "ord_1", "--job", str(job.id), "--config", str(config)]) == 0
    as_printed = capsys.readouterr().out
    assert "!! SOLD OUT IN POS" in as_printed
    preview = [" ".join(t.split()).casefold() for t in as_printed.splitlines()[:-2] if set(t) != {"*"}]
    assert preview == [" ".join(t.split()).casefold() for t in texts(printers[0].jobs[0])]
    assert main(["ticket", "render", "ord_1", "--config", str(config)]) == 0
    assert "SOLD OUT" not in capsys.readouterr().out  # as it would print now: the snooze is over


async def test_the_order_page_prints_as_a_qr_code_when_configured(
    tmp_path: Path, printers: list[FakeNetworkPrinter]
) -> None:
    """[tickets] qr = "order_url": a TM-T20II gets the order's page as a native QR code after the order id."""
    settings = settings_for(tmp_path, [net("pass", printers[0], profile="TM-T20II")])
    tickets = TicketSettings(qr="order_url", qr_url="https://kitchen.example/o/{order_id}")
    rig = await rig_for(tmp_path, settings.model_copy(update={"tickets": tickets}))
    await rig.fallback("ord_1")
    assert await rig.run_due() == [True]
    assert decode_escpos(printers[0].jobs[0]).qr_codes == ["https://kitchen.example/o/ord_1"]
    await rig.outbox.close()


@pytest.mark.parametrize(
    ("due_minutes_ago", "requested_minutes_ago", "late"),
    [(10, None, None), (11, None, 11), (38, None, 38), (0, 25, 25), (0, 5, None), (40, 25, 40)],
)
def test_late_counts_from_due_or_an_earlier_requested_time(
    due_minutes_ago: int, requested_minutes_ago: int | None, late: int | None
) -> None:
    """More than late_after_minutes (10) after due is late; a pre-order that arrived after its time is late too."""
    now = datetime(2026, 11, 23, 19, 0, tzinfo=UTC)
    requested = None if requested_minutes_ago is None else now - timedelta(minutes=requested_minutes_ago)
    due = now - timedelta(minutes=due_minutes_ago)
    assert late_minutes(due, now, late_after_minutes=10, requested_at=requested) == late


async def test_a_reprint_after_a_copy_in_doubt_counts_both(tmp_path: Path) -> None:
    """The first printer took the ticket without a word, the backup printed COPY 2; a reprint is then COPY 3."""
    async with FakeNetworkPrinter.running("black_hole") as stuck, FakeNetworkPrinter.running() as backup:
        settings = settings_for(tmp_path, [net("pass", stuck), net("bar", backup)])
        rig = await rig_for(tmp_path, settings)
        rig.worker.slots["pass"].transport.timeouts = Timeouts(connect=1, status=0.2, write=1)  # type: ignore[attr-defined]
        await rig.fallback("ord_1")
        assert await rig.run_due() == [True]
        assert "COPY 2" in texts(backup.jobs[0])
        assert await rig.outbox.write(lambda c: print_jobs.request_reprint(c, "ord_1", now=rig.clock.now())) == 1
        assert await rig.run_due() == [True]
        assert "COPY 3" in texts(backup.jobs[1])
        await rig.outbox.close()
