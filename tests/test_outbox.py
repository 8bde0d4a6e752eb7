"""The outbox on a real SQLite file: group commit, idempotent intake, transitions with events, recovery."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent.domain.clock import FakeClock
from agent.domain.errors import OrderConflict, StorageFull
from agent.domain.models import Order, parse_order
from agent.domain.states import State, place
from agent.outbox import intake, print_jobs, transitions
from agent.outbox.schema import MIGRATIONS
from agent.outbox.store import Outbox
from tests.conftest import make_order


def parsed(order_id: str = "ord_1", **changes: object) -> Order:
    """Return a valid parsed order."""
    return parse_order(make_order(order_id, **changes), venue_id="harbour-kitchen")


@pytest.fixture(name="clock")
def _clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(name="outbox")
async def _outbox(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Outbox]:
    outbox = Outbox(tmp_path / "outbox.db", clock=clock, min_free_mb=0)
    await outbox.open()
    yield outbox
    await outbox.close()


async def submit(outbox: Outbox, order: Order) -> intake.SubmitResult:
    """Submit an order placed by the default rules."""
    placement = place(order, now=outbox.clock.now(), hold_unpaid=True, buffered=True, buffer_minutes=20)
    return await outbox.submit(order, placement, key=f"harbour-kitchen:{order.id}")


class TestDurability:
    """How the file is set up and written."""

    async def test_wal_and_full_sync(self, outbox: Outbox) -> None:
        """The outbox runs in WAL mode with synchronous=FULL and the latest schema."""
        conn = sqlite3.connect(outbox.path)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == len(MIGRATIONS)
        conn.close()
        sync = await outbox.write(lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
        assert sync == 2  # FULL

    async def test_the_checkpointer_copies_acknowledged_orders_into_the_database_file(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """Shortly after writes, the database file alone (without its WAL) holds them; with no writes, no checkpoint."""
        outbox = Outbox(tmp_path / "o.db", clock=clock, min_free_mb=0, checkpoint_after_seconds=0.05)
        await outbox.open()
        try:
            assert outbox.checkpoints == 0
            await asyncio.gather(*(submit(outbox, parsed(f"o{i}")) for i in range(50)))

            def orders_in_the_file_alone() -> int:
                # The WAL still exists beside it: a copy of the database file alone shows what reached it.
                alone = tmp_path / "copy.db"
                alone.write_bytes(outbox.path.read_bytes())
                conn = sqlite3.connect(alone)
                try:
                    return int(conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0])
                finally:
                    conn.close()
                    alone.unlink()

            for _ in range(300):  # a checkpoint follows the commits within 0.05 s (more on a loaded machine)
                if outbox.checkpoints and orders_in_the_file_alone() == 50:
                    break
                await asyncio.sleep(0.01)
            assert outbox.checkpoints >= 1
            assert orders_in_the_file_alone() == 50
            await asyncio.sleep(0.1)
            settled = outbox.checkpoints
            # Only a commit schedules a checkpoint: reads and silence add none.
            await outbox.list_orders()
            await asyncio.sleep(0.15)
            assert outbox.checkpoints == settled
        finally:
            await outbox.close()

    async def test_concurrent_intakes_share_a_commit(self, outbox: Outbox) -> None:
        """200 orders arriving together are committed in a handful of transactions, all durable."""
        before = outbox.commits
        results = await asyncio.gather(*(submit(outbox, parsed(f"o{i}")) for i in range(200)))
        assert all(not r.duplicate for r in results)
        assert outbox.commits - before <= 5
        conn = sqlite3.connect(outbox.path)  # another connection sees every order: they are committed
        assert conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 200
        conn.close()

    async def test_a_refused_write_does_not_spoil_its_batch(self, outbox: Outbox) -> None:
        """A conflicting intake fails alone; the orders committed with it are stored."""
        await submit(outbox, parsed("same"))
        results = await asyncio.gather(
            submit(outbox, parsed("a")),
            submit(outbox, parsed("same", notes="changed")),
            submit(outbox, parsed("b")),
            return_exceptions=True,
        )
        assert isinstance(results[1], OrderConflict)
        assert {r.order_id for r in results if isinstance(r, intake.SubmitResult)} == {"a", "b"}
        assert (await outbox.counts())["queued"] == 3

    async def test_reopen_migrates_nothing_twice(self, tmp_path: Path, clock: FakeClock) -> None:
        """Opening an existing outbox keeps its orders and schema."""
        first = Outbox(tmp_path / "o.db", clock=clock, min_free_mb=0)
        await first.open()
        await submit(first, parsed())
        await first.close()
        second = Outbox(tmp_path / "o.db", clock=clock, min_free_mb=0)
        await second.open()
        assert (await second.get("ord_1")) is not None
        await second.close()


class TestIntake:
    """Idempotent intake and the free-space guard."""

    async def test_duplicate_is_a_no_op(self, outbox: Outbox) -> None:
        """The same id with the same content is a duplicate and stores nothing new."""
        await submit(outbox, parsed())
        again = await submit(outbox, parsed())
        assert again.duplicate and again.state is State.QUEUED
        assert len(await outbox.history("ord_1")) == 1

    async def test_conflict_tells_to_use_put(self, outbox: Outbox) -> None:
        """The same id with other content is a conflict that points at PUT."""
        await submit(outbox, parsed())
        with pytest.raises(OrderConflict, match="PUT"):
            await submit(outbox, parsed(notes="extra napkins"))

    async def test_low_disk_refuses_before_writing(self, tmp_path: Path, clock: FakeClock) -> None:
        """Below min_free_mb the intake is refused and nothing is stored."""
        outbox = Outbox(tmp_path / "o.db", clock=clock, min_free_mb=50, disk_free=lambda _p: 10 * 1024 * 1024)
        await outbox.open()
        with pytest.raises(StorageFull):
            await submit(outbox, parsed())
        assert (await outbox.counts())["queued"] == 0
        await outbox.close()


class TestTransitions:
    """State changes and their audit events."""

    async def test_transition_writes_its_event(self, outbox: Outbox) -> None:
        """Each state change is an event row in the same transaction."""
        await submit(outbox, parsed())
        [claimed] = await outbox.write(
            lambda c: transitions.claim(c, now=outbox.clock.now(), limit=10, count_strike=True)
        )
        assert claimed.state is State.SENDING and claimed.attempts == 1
        await outbox.transition("ord_1", State.INJECTED, event="injected", pos_reference="P-1")
        assert [(e.type, e.state) for e in await outbox.history("ord_1")] == [
            ("received", "queued"),
            ("sending", "sending"),
            ("injected", "injected"),
        ]

    async def test_illegal_transition_is_refused(self, outbox: Outbox) -> None:
        """An injected order cannot be cancelled; nothing changes."""
        await submit(outbox, parsed())
        await outbox.write(lambda c: transitions.claim(c, now=outbox.clock.now(), limit=1, count_strike=True))
        await outbox.transition("ord_1", State.INJECTED, event="injected")
        with pytest.raises(OrderConflict, match="already in the POS"):
            await outbox.write(lambda c: intake.cancel(c, "ord_1", now=outbox.clock.now()))
        assert (await outbox.get("ord_1")).state is State.INJECTED  # type: ignore[union-attr]

    async def test_claim_takes_oldest_due_first(self, outbox: Outbox, clock: FakeClock) -> None:
        """Claims go in due order."""
        for name in ("first", "second", "third"):
            await submit(outbox, parsed(name))
            clock.advance(1)
        claimed = await outbox.write(lambda c: transitions.claim(c, now=clock.now(), limit=2, count_strike=True))
        assert [r.id for r in claimed] == ["first", "second"]

    async def test_in_doubt_orders_are_requeued_with_the_same_key(self, outbox: Outbox) -> None:
        """An order found in sending at start-up goes back to the queue, same key, flagged in doubt."""
        await submit(outbox, parsed())
        await outbox.write(lambda c: transitions.claim(c, now=outbox.clock.now(), limit=1, count_strike=True))
        assert await outbox.recover() == ["ord_1"]
        record = await outbox.get("ord_1")
        assert record is not None
        assert record.state is State.QUEUED and record.in_doubt
        assert record.idempotency_key == "harbour-kitchen:ord_1"

    async def test_retention_purges_only_finished_old_orders(self, outbox: Outbox, clock: FakeClock) -> None:
        """Injected orders past retention_days go with their events; pending ones stay."""
        await submit(outbox, parsed("done"))
        await submit(outbox, parsed("waiting"))
        await outbox.write(lambda c: transitions.claim(c, now=clock.now(), limit=1, count_strike=True))
        await outbox.transition("done", State.INJECTED, event="injected")
        clock.advance(timedelta(days=31).total_seconds())
        assert await outbox.purge(30) == 1
        assert await outbox.get("done") is None and await outbox.history("done") == []
        assert await outbox.get("waiting") is not None

    async def test_component_events_are_capped_published_first_alerts_never(self, outbox: Outbox) -> None:
        """Past the cap, published component events go first, then the oldest unpublished; alerts, order events stay."""
        await submit(outbox, parsed("kept"))
        for _ in range(3):  # each alert also writes an "alert" event, the oldest component events here
            await outbox.alert("disk_low", "warning", {"reason": "r", "action": "a"})
        await outbox.write(lambda c: c.execute("UPDATE events SET published = 1 WHERE type = 'alert'"))
        for n in range(6):
            await outbox.event("test_event", {"n": n})
        # Events 0 and 1 reached the console; the rest did not.
        await outbox.write(
            lambda c: c.execute(
                "UPDATE events SET published = 1 WHERE type = 'test_event' AND json_extract(detail, '$.n') < 2"
            )
        )

        def component_ns(c: sqlite3.Connection) -> list[int]:
            rows = c.execute("SELECT detail FROM events WHERE type = 'test_event' ORDER BY seq")
            return [int(json.loads(r[0])["n"]) for r in rows]

        with capture_logs() as logs:
            await outbox.purge(30, events_cap=5, forwarding=True)
        # 9 component events, cap 5: the 3 published alert events and published event 0 go; 1 (published) stays.
        assert await outbox.read(component_ns) == [1, 2, 3, 4, 5]
        assert not [e for e in logs if e["event"] == "events_pruned_unpublished"]

        with capture_logs() as logs:
            await outbox.purge(30, events_cap=2, forwarding=True)
        assert await outbox.read(component_ns) == [4, 5]
        lost = [e for e in logs if e["event"] == "events_pruned_unpublished"]
        assert lost and lost[0]["count"] == 2 and lost[0]["log_level"] == "warning"
        assert await outbox.read(lambda c: c.execute("SELECT COUNT(*) FROM alerts").fetchone()[0]) == 3
        assert await outbox.history("kept") != []

        with capture_logs() as logs:
            await outbox.event("test_event", {"n": 6})
            await outbox.purge(30, events_cap=2, forwarding=False)
        assert await outbox.read(component_ns) == [5, 6]
        assert not [e for e in logs if e["event"] == "events_pruned_unpublished"]

    async def test_replace_gets_a_new_key_and_a_reprint_when_printed(self, outbox: Outbox) -> None:
        """A replaced order gets revision 2, its own key, and a modified ticket if it was printed."""
        await submit(outbox, parsed())
        await outbox.write(
            lambda c: print_jobs.request_fallback(c, "ord_1", now=outbox.clock.now(), reason="t", skip=False)
        )
        new = parsed(notes="no onions")
        placement = place(new, now=outbox.clock.now(), hold_unpaid=True, buffered=True, buffer_minutes=20)
        record, reprint = await outbox.replace(new, placement, base_key="harbour-kitchen:ord_1")
        assert record.revision == 2 and record.idempotency_key == "harbour-kitchen:ord_1:r2"
        assert reprint
        assert [j.kind for j in await outbox.print_jobs("ord_1")] == ["fallback", "modified"]

    async def test_fallback_is_recorded_once(self, outbox: Outbox) -> None:
        """A second automatic fallback request for the same order does nothing."""
        await submit(outbox, parsed())
        now = outbox.clock.now()
        assert await outbox.write(lambda c: print_jobs.request_fallback(c, "ord_1", now=now, reason="a", skip=False))
        assert not await outbox.write(
            lambda c: print_jobs.request_fallback(c, "ord_1", now=now, reason="b", skip=False)
        )
        assert len(await outbox.print_jobs("ord_1")) == 1
