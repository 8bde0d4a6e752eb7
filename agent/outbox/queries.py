"""The running outbox's reads as plain functions on its reader connection (rows as ``sqlite3.Row``)."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any

from agent.domain.states import State
from agent.outbox.records import EventRecord, OrderRecord, PrintJob, ts


def list_orders(c: sqlite3.Connection, *, state: State | None, limit: int) -> list[OrderRecord]:
    """Return orders newest first, optionally in one state."""
    if state is None:
        rows = c.execute("SELECT * FROM orders ORDER BY received_at DESC, rowid DESC LIMIT ?", (limit,))
    else:
        rows = c.execute(
            "SELECT * FROM orders WHERE state = ? ORDER BY received_at DESC, rowid DESC LIMIT ?",
            (state.value, limit),
        )
    return [OrderRecord.from_row(r) for r in rows.fetchall()]


def orders_in(c: sqlite3.Connection, states: tuple[State, ...], *, limit: int) -> list[OrderRecord]:
    """Return orders in any of ``states``, oldest due first."""
    marks = ",".join("?" * len(states))
    sql = f"SELECT * FROM orders WHERE state IN ({marks}) ORDER BY due_at LIMIT ?"  # noqa: S608
    return [OrderRecord.from_row(r) for r in c.execute(sql, (*[s.value for s in states], limit))]


def history(c: sqlite3.Connection, order_id: str) -> list[EventRecord]:
    """Return an order's audit events, oldest first."""
    return [
        EventRecord.from_row(r) for r in c.execute("SELECT * FROM events WHERE order_id = ? ORDER BY seq", (order_id,))
    ]


def events_since(c: sqlite3.Connection, seq: int, *, limit: int) -> list[EventRecord]:
    """Return audit events after ``seq``, oldest first."""
    return [
        EventRecord.from_row(r)
        for r in c.execute("SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit))
    ]


def alerts(c: sqlite3.Connection, *, limit: int) -> list[dict[str, Any]]:
    """Return the newest alerts, newest first."""
    rows = c.execute("SELECT payload FROM alerts ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
    return [json.loads(r["payload"]) for r in rows]


def print_jobs(c: sqlite3.Connection, order_id: str) -> list[PrintJob]:
    """Return an order's print jobs, oldest first."""
    return [
        PrintJob.from_row(r) for r in c.execute("SELECT * FROM print_jobs WHERE order_id = ? ORDER BY id", (order_id,))
    ]


def due_print_jobs(c: sqlite3.Connection, now: datetime, *, limit: int) -> list[PrintJob]:
    """Return pending print jobs whose time has come, oldest first."""
    return [
        PrintJob.from_row(r)
        for r in c.execute(
            # Without INDEXED BY, SQLite walks every job in id order (a month: 100,000 rows a round).
            "SELECT * FROM print_jobs INDEXED BY print_jobs_by_state"
            " WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY id LIMIT ?",
            (ts(now), limit),
        )
    ]


def counts(c: sqlite3.Connection) -> dict[str, int]:
    """Return how many orders are in each state (every state present, zero included)."""
    found = {r[0]: r[1] for r in c.execute("SELECT state, COUNT(*) FROM orders GROUP BY state")}
    return {s.value: int(found.get(s.value, 0)) for s in State}


def oldest_pending(c: sqlite3.Connection) -> datetime | None:
    """Return the due time of the oldest order that is due and not yet in the POS."""
    row = c.execute(
        "SELECT MIN(due_at) FROM orders WHERE state IN ('queued', 'sending', 'retrying', 'awaiting_pos')"
    ).fetchone()
    return datetime.fromisoformat(row[0]) if row and row[0] else None


def last_injected(c: sqlite3.Connection) -> datetime | None:
    """Return when the most recent order reached the POS."""
    row = c.execute("SELECT MAX(injected_at) FROM orders").fetchone()
    return datetime.fromisoformat(row[0]) if row and row[0] else None


def next_deadline(c: sqlite3.Connection) -> datetime | None:
    """Return the earliest time a scheduled order or a retry becomes due."""
    row = c.execute(
        "SELECT MIN(t) FROM (SELECT MIN(due_at) AS t FROM orders WHERE state = 'scheduled'"
        " UNION ALL SELECT MIN(next_attempt_at) FROM orders WHERE state = 'retrying')"
    ).fetchone()
    return datetime.fromisoformat(row[0]) if row and row[0] else None


def health_figures(c: sqlite3.Connection) -> tuple[dict[str, int], datetime | None, datetime | None]:
    """Return (counts per state, oldest pending due time, last injection) in one read."""
    found = {r[0]: r[1] for r in c.execute("SELECT state, COUNT(*) FROM orders GROUP BY state")}
    oldest = c.execute(
        "SELECT MIN(due_at) FROM orders WHERE state IN ('queued', 'sending', 'retrying', 'awaiting_pos')"
    ).fetchone()[0]
    last = c.execute("SELECT MAX(injected_at) FROM orders").fetchone()[0]
    return (
        {s.value: int(found.get(s.value, 0)) for s in State},
        datetime.fromisoformat(oldest) if oldest else None,
        datetime.fromisoformat(last) if last else None,
    )


def idle_until(c: sqlite3.Connection) -> tuple[bool, datetime | None]:
    """Return (an order is on its way to the POS or waits for a fallback, earliest scheduled/retry due time)."""
    busy = c.execute(
        "SELECT EXISTS (SELECT 1 FROM orders WHERE state IN ('queued', 'sending', 'retrying', 'awaiting_pos'))"
        " OR EXISTS (SELECT 1 FROM orders WHERE state = 'failed' AND fallback_at IS NULL)"
    ).fetchone()[0]
    row = c.execute(
        "SELECT MIN(t) FROM (SELECT MIN(due_at) AS t FROM orders WHERE state = 'scheduled'"
        " UNION ALL SELECT MIN(next_attempt_at) FROM orders WHERE state = 'retrying')"
    ).fetchone()
    return bool(busy), datetime.fromisoformat(row[0]) if row and row[0] else None


def next_print_due(c: sqlite3.Connection) -> datetime | None:
    """Return when the earliest pending print job is due, or None."""
    row = c.execute("SELECT MIN(next_attempt_at) FROM print_jobs WHERE state = 'pending'").fetchone()
    return datetime.fromisoformat(row[0]) if row and row[0] else None


def kv_get(c: sqlite3.Connection, key: str) -> str | None:
    """Return the value stored under a key, or None."""
    row = c.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
    return str(row[0]) if row else None
