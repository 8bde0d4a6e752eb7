"""Audit events, alerts and the key/value table: the appends every other outbox write builds on.

Every function here and in the sibling write modules (``transitions``, ``intake``, ``print_jobs``,
``retention``) is one logical change on a ``sqlite3.Connection`` inside an open transaction: the row
update and its audit event together. The outbox runs a batch of them in one transaction (group
commit); a function that raises has its savepoint rolled back and leaves the rest of the batch alone.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any

from agent.domain.states import ErrorClass, State
from agent.outbox.records import ts


def add_event(
    conn: sqlite3.Connection,
    now: datetime,
    kind: str,
    *,
    order_id: str | None = None,
    state: State | None = None,
    error_class: ErrorClass | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append one audit event."""
    conn.execute(
        "INSERT INTO events (ts, type, order_id, state, error_class, detail) VALUES (?, ?, ?, ?, ?, ?)",
        (
            ts(now),
            kind,
            order_id,
            state.value if state else None,
            error_class.value if error_class else None,
            json.dumps(detail, separators=(",", ":")) if detail else None,
        ),
    )


def add_events(conn: sqlite3.Connection, now: datetime, kind: str, order_ids: list[str], *, state: State) -> None:
    """Append the same audit event (no detail) for each of ``order_ids``, in that order."""
    stamp, value = ts(now), state.value
    conn.executemany(
        "INSERT INTO events (ts, type, order_id, state) VALUES (?, ?, ?, ?)",
        [(stamp, kind, order_id, value) for order_id in order_ids],
    )


def add_alert(
    conn: sqlite3.Connection,
    now: datetime,
    alert: str,
    severity: str,
    payload: dict[str, Any],
    *,
    order_id: str | None = None,
) -> None:
    """Record an alert for the ops console (published by the MQTT reporter when it is connected)."""
    body = {"ts": now.isoformat(), "alert": alert, "severity": severity, **payload}
    conn.execute(
        "INSERT INTO alerts (ts, alert, severity, order_id, payload) VALUES (?, ?, ?, ?, ?)",
        (ts(now), alert, severity, order_id, json.dumps(body, separators=(",", ":"))),
    )
    add_event(conn, now, "alert", order_id=order_id, detail={"alert": alert, "severity": severity})


def kv_put(conn: sqlite3.Connection, key: str, value: str, *, now: datetime) -> None:
    """Store a value under a key (POS tokens, breaker state)."""
    conn.execute(
        "INSERT INTO kv (key, value, updated_at) VALUES (?, ?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        (key, value, ts(now)),
    )
