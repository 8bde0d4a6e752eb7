"""The console's fleet model and screen: what needs a human sorts first, filters, alerts that close themselves."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.cli.main import main
from agent.fleet.model import Fleet
from agent.fleet.screen import render_screen, render_table
from tests.test_console import NOW, alert, health, iso, status


def send(fleet: Fleet, venue: str, kind: str, body: dict[str, Any] | bytes, at: float = NOW) -> None:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    assert fleet.apply(f"venues/{venue}/{kind}", payload, now=at) == kind


def ok_health(**overrides: Any) -> bytes:
    body: dict[str, Any] = {
        "outbox": {"held": 0, "scheduled": 0, "queued": 0, "retrying": 0, "awaiting_pos": 0, "failed": 0},
        "pos": {"driver": "square", "state": "ok", "latency_ms": 100, "circuit": "closed"},
        "printers": [{"name": "kitchen", "state": "ok"}],
    }
    body.update(overrides)
    return health(**body)


def availability(accepting: bool, seq: int, since: float = NOW - 60, reason: str = "x") -> dict[str, Any]:
    return {"accepting": accepting, "reason": reason, "since": iso(since), "seq": seq}


def fleet_of_every_kind() -> Fleet:
    fleet = Fleet("venues")
    for venue in ("a-ok", "b-paper", "c-failed", "d-paused", "e-offline", "f-alert", "g-pos-down"):
        send(fleet, venue, "status", status("offline" if venue == "e-offline" else "online", f"boot-{venue}", 1))
        send(fleet, venue, "health", ok_health())
        send(fleet, venue, "availability", availability(True, 1))
    send(fleet, "b-paper", "health", ok_health(printers=[{"name": "kitchen", "state": "paper_out"}]))
    failed = {"held": 0, "scheduled": 0, "queued": 0, "retrying": 0, "awaiting_pos": 0, "failed": 2}
    send(fleet, "c-failed", "health", ok_health(outbox=failed))
    send(fleet, "d-paused", "availability", availability(False, 2, reason="pos_down_and_no_printer"))
    send(fleet, "f-alert", "alerts", alert("disk_low", NOW - 10))
    send(fleet, "g-pos-down", "health", ok_health(pos={"driver": "square", "state": "down", "circuit": "open"}))
    return fleet


def test_what_needs_a_human_sorts_first() -> None:
    fleet = fleet_of_every_kind()
    order = [row.venue for row in fleet.rows()]
    assert order == ["e-offline", "d-paused", "c-failed", "b-paper", "g-pos-down", "f-alert", "a-ok"]
    assert fleet.counts() | {} == {
        "venues": 7,
        "online": 6,
        "offline": 1,
        "not-accepting": 1,
        "failed": 1,
        "paper-out": 1,
        "degraded": 1,
        "alerts": 1,
    }
    screen = render_screen(fleet, NOW).splitlines()
    assert screen[0].startswith("7 venues, 6 online; 1 offline, 1 not-accepting, 1 failed, 1 paper-out")
    paused = next(line for line in screen if line.startswith("d-paused"))
    assert paused.split()[1:3] == ["online", "NO"]


@pytest.mark.parametrize(
    ("states", "venues", "expected"),
    [
        (("offline",), (), ["e-offline"]),
        (("not-accepting", "paper-out"), (), ["d-paused", "b-paper"]),
        (("attention",), (), ["e-offline", "d-paused", "c-failed", "b-paper", "g-pos-down", "f-alert"]),
        (("ok",), (), ["a-ok"]),
        ((), ("?-p*",), ["d-paused", "b-paper", "g-pos-down"]),
        (("attention",), ("a-*", "b-*"), ["b-paper"]),
    ],
)
def test_filters_by_state_and_venue(states: tuple[str, ...], venues: tuple[str, ...], expected: list[str]) -> None:
    fleet = fleet_of_every_kind()
    assert [row.venue for row in fleet.rows(states, venues)] == expected


def test_an_order_alert_closes_when_the_order_leaves_failed() -> None:
    fleet = Fleet("venues")
    send(fleet, "hk", "status", status("online", "boot-a", 1))
    send(fleet, "hk", "alerts", alert("order_failed", NOW))
    send(fleet, "hk", "events", {"type": "failed", "order_id": "ord_1", "state": "failed"})
    assert fleet.venues["hk"].open_alerts == 1
    assert fleet.venues["hk"].needs == ("failed", "alerts")
    send(fleet, "hk", "events", {"type": "resubmitted", "order_id": "ord_1", "state": "queued"})
    assert fleet.venues["hk"].alerts == []


def test_printer_and_pos_alerts_close_when_health_shows_them_well() -> None:
    fleet = Fleet("venues")
    send(fleet, "hk", "status", status("online", "boot-a", 1))
    paper = {"ts": iso(NOW), "alert": "printer_paper_out", "severity": "warning", "order": None}
    send(
        fleet, "hk", "alerts", paper | {"printer": "kitchen", "reason": "printer kitchen: out of paper", "action": "x"}
    )
    send(fleet, "hk", "alerts", {"ts": iso(NOW), "alert": "pos_down", "reason": "down", "action": "check the POS"})
    send(fleet, "hk", "health", ok_health(pos={"state": "down"}, printers=[{"name": "kitchen", "state": "paper_out"}]))
    assert [a.name for a in fleet.venues["hk"].alerts] == ["printer_paper_out", "pos_down"]
    send(fleet, "hk", "health", ok_health(pos={"state": "down"}))
    assert [a.name for a in fleet.venues["hk"].alerts] == ["pos_down"]
    send(fleet, "hk", "health", ok_health())
    assert fleet.venues["hk"].alerts == []


def test_availability_keeps_the_newest_and_takes_a_restarted_agents_sequence() -> None:
    fleet = Fleet("venues")
    send(fleet, "hk", "availability", availability(False, 5, since=NOW - 30))
    send(fleet, "hk", "availability", availability(True, 4, since=NOW - 30))  # late and older: ignored
    assert fleet.venues["hk"].accepting is False
    send(fleet, "hk", "availability", availability(True, 1, since=NOW))  # a restart starts at 1 again
    assert (fleet.venues["hk"].accepting, fleet.venues["hk"].availability_seq) == (True, 1)


def test_injected_and_failed_orders_are_counted_from_events() -> None:
    fleet = Fleet("venues")
    for i in range(3):
        send(fleet, "hk", "events", {"type": "received", "order_id": f"o{i}", "state": "queued"})
        send(fleet, "hk", "events", {"type": "injected", "order_id": f"o{i}", "state": "injected"})
    send(fleet, "hk", "events", {"type": "failed", "order_id": "o9", "state": "failed"})
    send(fleet, "hk", "events", {"type": "alert", "order_id": "o9", "state": None})
    row = fleet.venues["hk"]
    assert (row.injected_total, row.failed_total) == (3, 1)


def test_a_terminal_gets_a_screenful_cut_to_its_width() -> None:
    fleet = Fleet("venues")
    for i in range(40):
        send(fleet, f"v{i:02d}", "status", status("online", f"b{i}", 1))
        send(fleet, f"v{i:02d}", "alerts", alert("order_failed", NOW))
    screen = render_screen(fleet, NOW, height=20, width=60).splitlines()
    assert len(screen) == 20
    assert all(len(line) <= 60 for line in screen)
    assert screen[-1].startswith("... more below")
    assert len(render_table(fleet.rows(), NOW).splitlines()) == 81  # the whole table for a pipe


def test_an_unknown_state_filter_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["console", "--broker", "127.0.0.1:1", "--state", "offline,sleepy", "--once", "0"]) == 2
    assert "unknown --state sleepy: use offline, not-accepting" in capsys.readouterr().err


def test_an_offline_venue_counts_from_when_it_was_seen_going_offline() -> None:
    """A Will carries the since of the connection it ends; the console counts from the change it saw."""
    fleet = Fleet("venues")
    send(fleet, "hk", "status", status("online", "boot-a", 1, since=NOW - 3600))
    send(fleet, "hk", "status", status("offline", "boot-a", 1, since=NOW - 3600), at=NOW - 30)
    assert render_table(fleet.rows(), NOW).splitlines()[1].split()[1:4] == ["offline", "-", "30s"]
    send(fleet, "hk", "status", status("online", "boot-a", 2, since=NOW - 5), at=NOW - 5)
    assert render_table(fleet.rows(), NOW).splitlines()[1].split()[1:4] == ["online", "-", "5s"]
