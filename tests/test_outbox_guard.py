"""The outbox's identity marker and integrity check: decisions as pure functions, then on real SQLite files."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent.domain.clock import FakeClock
from agent.domain.errors import OutboxRefused
from agent.domain.models import parse_order
from agent.domain.states import place
from agent.outbox import identity
from agent.outbox.schema import MIGRATIONS
from agent.outbox.store import Outbox
from agent.service.service import INTEGRITY_CHECK_SECONDS
from tests.conftest import agent_settings, eventually, make_order, run_agent, run_simulator

DB = Path("/var/lib/venue-agent/outbox.db")
MARKER = identity.Marker("a" * 32, len(MIGRATIONS), "2026-11-23T12:00:00+00:00")


# ---- pure decisions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("marker", "files", "reason"),
    [
        (None, identity.Files(exists=False, size=0, wal_size=0), None),  # first run
        (None, identity.Files(exists=True, size=0, wal_size=0), None),  # an empty file nobody knew of
        (None, identity.Files(exists=True, size=0, wal_size=4096), "empty"),  # its WAL says it held something
        (None, identity.Files(exists=False, size=0, wal_size=4096), "missing"),
        (MARKER, identity.Files(exists=False, size=0, wal_size=0), "missing"),
        (MARKER, identity.Files(exists=True, size=0, wal_size=0), "empty"),
        (MARKER, identity.Files(exists=True, size=4096, wal_size=0), None),  # SQLite may look inside
    ],
)
def test_check_files(marker: identity.Marker | None, files: identity.Files, reason: str | None) -> None:
    """A missing or 0-byte outbox is refused when the marker or a leftover WAL says one existed."""
    refusal = identity.check_files(marker, files, DB)
    assert (refusal.reason if refusal else None) == reason
    if refusal is not None:
        assert str(DB) in refusal.message
        assert identity.INIT_COMMAND in refusal.message
        assert "restore outbox.db from a backup" in refusal.message


@pytest.mark.parametrize(
    ("marker", "found", "reason"),
    [
        (None, identity.Database(0, None), None),  # first run: migrations follow
        (None, identity.Database(4, "b" * 32), None),  # marker lost: the database is adopted
        (MARKER, identity.Database(0, None), "empty"),  # schema-less
        (MARKER, identity.Database(4, "a" * 32), None),
        (MARKER, identity.Database(4, "b" * 32), "foreign"),  # another box's outbox copied in
        (MARKER, identity.Database(4, None), None),  # a backup from before outbox ids: takes the marker's id
    ],
)
def test_check_database(marker: identity.Marker | None, found: identity.Database, reason: str | None) -> None:
    """A schema-less outbox or one with another id than the marker's is refused."""
    refusal = identity.check_database(marker, found, DB)
    assert (refusal.reason if refusal else None) == reason


# ---- on real files -----------------------------------------------------------------------------


async def open_outbox(path: Path) -> Outbox:
    """Return an open outbox at ``path``."""
    outbox = Outbox(path, clock=FakeClock(), min_free_mb=0)
    await outbox.open()
    return outbox


async def with_orders(path: Path, count: int) -> str:
    """Create an outbox holding ``count`` queued orders; return its id."""
    outbox = await open_outbox(path)
    for i in range(count):
        order = parse_order(make_order(f"o{i}"), venue_id="harbour-kitchen")
        placement = place(order, now=outbox.clock.now(), hold_unpaid=True, buffered=True, buffer_minutes=20)
        await outbox.submit(order, placement, key=f"harbour-kitchen:o{i}")
    await outbox.close()
    return outbox.outbox_id


async def test_new_outbox_writes_its_marker(tmp_path: Path) -> None:
    """A new outbox gets a random id, in the database and in the marker beside it, with the schema version."""
    db = tmp_path / "outbox.db"
    outbox_id = await with_orders(db, 1)
    marker = json.loads(identity.marker_path(db).read_text())
    assert marker["outbox_id"] == outbox_id and len(outbox_id) == 32
    assert marker["schema_version"] == len(MIGRATIONS)
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT value FROM kv WHERE key = 'outbox_id'").fetchone()[0] == outbox_id
    conn.close()
    assert not list(tmp_path.glob(".*.tmp")), "the temporary marker is renamed over, not left behind"
    again = await open_outbox(db)  # reopening keeps the id
    assert again.outbox_id == outbox_id and again.integrity.state == "ok"
    await again.close()


async def test_truncated_outbox_is_refused_and_left_alone(tmp_path: Path) -> None:
    """A 0-byte outbox with a marker is refused; neither the file nor its leftover WAL is touched."""
    db = tmp_path / "outbox.db"
    await with_orders(db, 3)
    db.write_bytes(b"")
    wal = Path(f"{db}-wal")
    wal.write_bytes(b"W" * 4096)  # what a SIGKILL leaves; SQLite would delete it on opening an empty file
    with capture_logs() as logs, pytest.raises(OutboxRefused, match="empty") as refused:
        await open_outbox(db)
    assert refused.value.reason == "empty"
    assert db.stat().st_size == 0 and wal.read_bytes() == b"W" * 4096
    assert [e["reason"] for e in logs if e["event"] == "outbox_refused"] == ["empty"]


async def test_missing_outbox_is_refused_and_not_created(tmp_path: Path) -> None:
    """A deleted outbox with a marker is refused and no new file appears."""
    db = tmp_path / "outbox.db"
    await with_orders(db, 1)
    db.unlink()
    with pytest.raises(OutboxRefused, match="missing") as refused:
        await open_outbox(db)
    assert refused.value.reason == "missing"
    assert not db.exists()


async def test_schema_less_outbox_is_refused(tmp_path: Path) -> None:
    """An outbox file replaced by an empty SQLite database is refused."""
    db = tmp_path / "outbox.db"
    await with_orders(db, 1)
    db.unlink()
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (x)")  # a database, but not an outbox
    conn.close()
    with pytest.raises(OutboxRefused) as refused:
        await open_outbox(db)
    assert refused.value.reason == "empty"


async def test_foreign_outbox_is_refused(tmp_path: Path) -> None:
    """Another box's outbox copied over this one is refused: its id is not the marker's."""
    ours, theirs = tmp_path / "ours" / "outbox.db", tmp_path / "theirs" / "outbox.db"
    await with_orders(ours, 1)
    await with_orders(theirs, 2)
    ours.write_bytes(theirs.read_bytes())
    with pytest.raises(OutboxRefused, match="copied in") as refused:
        await open_outbox(ours)
    assert refused.value.reason == "foreign"
    identity.marker_path(ours).unlink()  # the documented way to adopt it on purpose
    adopted = await open_outbox(ours)
    assert (await adopted.counts())["queued"] == 2
    await adopted.close()


async def test_outbox_from_before_ids_is_adopted(tmp_path: Path) -> None:
    """An outbox created before ids and markers existed gets both at its first open, orders kept."""
    db = tmp_path / "outbox.db"
    await with_orders(db, 2)
    identity.marker_path(db).unlink()
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM kv WHERE key = 'outbox_id'")
    conn.commit()
    conn.close()
    outbox = await open_outbox(db)
    assert (await outbox.counts())["queued"] == 2
    assert identity.read_marker(identity.marker_path(db)) == identity.Marker(
        outbox.outbox_id,
        len(MIGRATIONS),
        identity.read_marker(identity.marker_path(db)).created_at,  # type: ignore[union-attr]
    )
    await outbox.close()


async def test_unreadable_marker_is_refused(tmp_path: Path) -> None:
    """A marker that is not what the agent writes is refused, naming it."""
    db = tmp_path / "outbox.db"
    await with_orders(db, 1)
    identity.marker_path(db).write_text("{not json")
    with pytest.raises(OutboxRefused, match="marker") as refused:
        await open_outbox(db)
    assert refused.value.reason == "marker"


async def test_garbage_file_is_refused_as_corrupt(tmp_path: Path) -> None:
    """A file that is not a database is refused as corrupt (as before), with what to do."""
    db = tmp_path / "outbox.db"
    db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutboxRefused, match="damaged") as refused:
        await open_outbox(db)
    assert refused.value.reason == "corrupt"


def damage_an_index(db: Path, index: str = "orders_by_received") -> None:
    """Overwrite the root page of one index (by default one that health does not read) with garbage."""
    conn = sqlite3.connect(db)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (index,)).fetchone()[0]
    conn.close()
    with db.open("r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xa5" * page_size)


async def test_damaged_outbox_fails_quick_check_at_start(tmp_path: Path) -> None:
    """An outbox whose pages are damaged fails PRAGMA quick_check and is refused at open."""
    db = tmp_path / "outbox.db"
    await with_orders(db, 50)
    damage_an_index(db)
    with pytest.raises(OutboxRefused, match="quick_check") as refused:
        await open_outbox(db)
    assert refused.value.reason == "integrity"


async def test_periodic_check_reports_damage_in_health_and_alerts(tmp_path: Path) -> None:
    """The running agent repeats quick_check every 6 h; damage found shows in health and raises one alert."""
    async with run_simulator() as sim:
        settings = agent_settings(tmp_path, sim.url)
        async with run_agent(settings) as running:
            health = (await running.client.get("/v1/health")).json()
            assert health["storage"]["integrity"] == "ok"
            first_checked = health["storage"]["integrity_checked_at"]
            for i in range(50):
                assert (await running.client.post("/v1/orders", json=make_order(f"h{i}"))).status_code == 202
            # Once every order is in the POS nothing rewrites the damaged index from the writer's page cache.
            await eventually(running.agent.outbox.counts, lambda c: c["injected"] == 50)
            conn = sqlite3.connect(settings.storage.path)
            assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
            conn.close()
            damage_an_index(settings.storage.path)
            await running.advance(INTEGRITY_CHECK_SECONDS)

            async def storage() -> dict[str, str]:
                return dict((await running.client.get("/v1/health")).json()["storage"])

            found = await eventually(storage, lambda s: s["integrity"] == "failed")
            assert found["integrity_checked_at"] != first_checked
            assert "quick_check" not in found["integrity_detail"]  # the findings themselves
            alerts = await eventually(
                running.agent.outbox.alerts, lambda a: any(x["alert"] == "outbox_integrity_failed" for x in a)
            )
            [alert] = [x for x in alerts if x["alert"] == "outbox_integrity_failed"]
            assert alert["severity"] == "critical" and "back up the outbox" in alert["action"]
