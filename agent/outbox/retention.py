"""Retention: deleting finished orders with their events and jobs, and capping component events."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from agent.outbox.records import ts


def purge(conn: sqlite3.Connection, *, before: datetime, limit: int | None = None) -> int:
    """Delete finished orders last changed before ``before`` (at most ``limit``) with their events and jobs.

    Return how many orders were deleted.
    """
    # The index by name: a purge must never scan every order (the last slice of a day would hold intake's commits
    # for the whole scan), whatever the planner's statistics say.
    sql = (
        "SELECT id FROM orders INDEXED BY orders_by_state_updated"
        " WHERE state IN ('injected', 'cancelled', 'skipped') AND updated_at < ?"
    )
    params: tuple[Any, ...] = (ts(before),)
    if limit is not None:
        sql += " LIMIT ?"
        params = (*params, limit)
    ids = [r["id"] for r in conn.execute(sql, params).fetchall()]
    for chunk_start in range(0, len(ids), 500):
        chunk = ids[chunk_start : chunk_start + 500]
        marks = ",".join("?" * len(chunk))
        conn.execute(f"DELETE FROM events WHERE order_id IN ({marks})", chunk)  # noqa: S608
        conn.execute(f"DELETE FROM print_jobs WHERE order_id IN ({marks})", chunk)  # noqa: S608
        conn.execute(f"DELETE FROM orders WHERE id IN ({marks})", chunk)  # noqa: S608
    return len(ids)


def prune_component_events(conn: sqlite3.Connection, *, cap: int) -> tuple[int, int]:
    """Keep at most ``cap`` component events (no order), dropping published ones first, then the oldest.

    Return (deleted, of which never published). Alerts are never pruned; order events go with their order.
    """
    beyond_cap = (
        "SELECT seq, published FROM events WHERE order_id IS NULL ORDER BY published, seq DESC LIMIT -1 OFFSET ?"
    )
    row = conn.execute(
        f"SELECT COUNT(*), COALESCE(SUM(published = 0), 0) FROM ({beyond_cap})",  # noqa: S608 - a constant
        (cap,),
    ).fetchone()
    if row[0]:
        conn.execute(f"DELETE FROM events WHERE seq IN (SELECT seq FROM ({beyond_cap}))", (cap,))  # noqa: S608
    return int(row[0]), int(row[1])
