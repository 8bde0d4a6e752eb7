"""The component watcher: a change of state in the POS, a printer or the intake becomes an event and a wake-up."""

from __future__ import annotations

import asyncio
import json

from agent.domain.clock import FakeClock
from agent.outbox.store import Outbox
from agent.service.components import CHECK_SECONDS, ComponentWatcher, changes, disk_state
from tests.conftest import eventually


def test_changes_lists_each_differing_component_in_name_order() -> None:
    """Appeared, vanished and changed components are reported; equal ones are not."""
    before = {"pos": "ok", "printer:pass": "ok", "printer:bar": "paper_low"}
    after = {"pos": "down", "printer:pass": "ok", "printer:grill": "offline"}
    assert changes(before, after) == [
        ("pos", "ok", "down"),
        ("printer:bar", "paper_low", None),
        ("printer:grill", None, "offline"),
    ]
    assert changes(after, dict(after)) == []


async def test_watcher_records_a_change_once_and_sets_changed(outbox: Outbox) -> None:
    """The first reading is the baseline; a change writes one component_changed event per component, once."""
    assert isinstance(outbox.clock, FakeClock)
    clock = outbox.clock
    states = {"intake": "ready", "pos": "ok"}
    watcher = ComponentWatcher(read=lambda: dict(states), outbox=outbox, clock=clock)
    task = asyncio.create_task(watcher.run(), name="test components")
    try:
        await asyncio.sleep(0.01)
        clock.advance(CHECK_SECONDS)
        await asyncio.sleep(0.05)
        assert not watcher.changed.is_set()

        states["pos"] = "auth_required"
        clock.advance(CHECK_SECONDS)
        await asyncio.wait_for(watcher.changed.wait(), 2)
        watcher.changed.clear()
        clock.advance(CHECK_SECONDS)
        await asyncio.sleep(0.05)
        assert not watcher.changed.is_set()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    events = [e for e in await outbox.events_since(0) if e.type == "component_changed"]
    assert [e.detail for e in events] == [{"component": "pos", "from": "ok", "to": "auth_required"}]


def test_disk_state_is_full_below_min_free_and_low_near_it() -> None:
    """Full below storage.min_free_mb (intake refuses orders), low within max(2x, +100 MB) of it."""
    mb = 1_048_576
    assert disk_state(49 * mb, 50) == "full"
    assert disk_state(50 * mb, 50) == "low"
    assert disk_state(149 * mb, 50) == "low"
    assert disk_state(150 * mb, 50) == "ok"
    assert disk_state(1500 * mb, 1000) == "low"
    assert disk_state(2000 * mb, 1000) == "ok"


async def test_disk_getting_low_then_full_raises_one_alert_each(outbox: Outbox) -> None:
    """ok → low: a warning disk_low alert; low → full: a critical one; full → low → ok: none."""
    states = {"disk": "ok"}
    watcher = ComponentWatcher(read=lambda: dict(states), outbox=outbox, clock=outbox.clock)
    watcher.states = dict(states)
    for step in ("low", "full", "low", "ok"):
        states["disk"] = step
        await watcher.check()
    rows = await outbox.read(lambda c: c.execute("SELECT alert, severity, payload FROM alerts ORDER BY seq").fetchall())
    assert [(r["alert"], r["severity"]) for r in rows] == [("disk_low", "warning"), ("disk_low", "critical")]
    payload = json.loads(rows[1]["payload"])
    assert "refuses new orders" in payload["reason"]
    assert str(outbox.path) in payload["reason"]
    assert "journalctl" in payload["action"]


async def test_a_disk_already_full_at_start_is_alerted(outbox: Outbox) -> None:
    """The baseline raises no change events, but a disk already full at start is still an alert."""
    watcher = ComponentWatcher(read=lambda: {"disk": "full", "pos": "ok"}, outbox=outbox, clock=outbox.clock)
    task = asyncio.create_task(watcher.run(), name="test components")

    async def alerts() -> list[str]:
        return await outbox.read(lambda c: [r["severity"] for r in c.execute("SELECT severity FROM alerts")])

    try:
        await eventually(alerts, bool)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert await alerts() == ["critical"]
    assert not [e for e in await outbox.events_since(0) if e.type == "component_changed"]
