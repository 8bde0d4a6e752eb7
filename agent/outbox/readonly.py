"""Read-only views of the outbox file for operator commands: with the agent stopped, or unable to ask it.

Every function takes a connection from ``connect`` and only reads. The views have the
same shape as the local API's answers (agent/outbox/records.py), so a command prints them the same way.
"""

from __future__ import annotations

import errno
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.domain.states import State
from agent.outbox.records import EventRecord, OrderRecord, PrintJob, order_detail, order_listing, parse_ts

PENDING = ("queued", "sending", "retrying", "awaiting_pos")


def connect(path: Path) -> sqlite3.Connection:
    """Open the outbox read-only (rows as sqlite3.Row); raise sqlite3.Error or FileNotFoundError.

    While the agent runs (a -wal file exists) a read-only connection shares its WAL index. With the agent stopped,
    SQLite would have to create that index, which a reader that may not write the directory cannot: the file is
    then opened as immutable (nothing else writes it then).
    """
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, "no outbox file", str(path))
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:
        conn.close()
        if Path(f"{path}-wal").exists():
            raise
        conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, timeout=5)
    conn.row_factory = sqlite3.Row
    return conn


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Return how many orders are in each state (every state, zero included)."""
    found = {str(r[0]): int(r[1]) for r in conn.execute("SELECT state, COUNT(*) FROM orders GROUP BY state")}
    return {s.value: found.get(s.value, 0) for s in State}


def list_orders(conn: sqlite3.Connection, *, state: str | None, limit: int) -> list[dict[str, Any]]:
    """Return orders newest first, as ``GET /v1/orders`` lists them."""
    if state is None:
        rows = conn.execute("SELECT * FROM orders ORDER BY received_at DESC, rowid DESC LIMIT ?", (limit,))
    else:
        query = "SELECT * FROM orders WHERE state = ? ORDER BY received_at DESC, rowid DESC LIMIT ?"
        rows = conn.execute(query, (state, limit))
    return [order_listing(OrderRecord.from_row(r)) for r in rows.fetchall()]


def detail(conn: sqlite3.Connection, order_id: str) -> dict[str, Any] | None:
    """Return one order as ``GET /v1/orders/{id}`` shows it, or None."""
    row = conn.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
    if row is None:
        return None
    jobs = conn.execute("SELECT * FROM print_jobs WHERE order_id = ? ORDER BY id", (order_id,)).fetchall()
    events = conn.execute("SELECT * FROM events WHERE order_id = ? ORDER BY seq", (order_id,)).fetchall()
    return order_detail(
        OrderRecord.from_row(row), [PrintJob.from_row(r) for r in jobs], [EventRecord.from_row(r) for r in events]
    )


def oldest_due(conn: sqlite3.Connection) -> datetime | None:
    """Return the due time of the oldest order that is due and not yet in the POS."""
    marks = ",".join("?" * len(PENDING))
    row = conn.execute(f"SELECT MIN(due_at) FROM orders WHERE state IN ({marks})", PENDING).fetchone()  # noqa: S608
    return parse_ts(row[0]) if row else None


def last_injected(conn: sqlite3.Connection) -> datetime | None:
    """Return when the most recent order reached the POS."""
    row = conn.execute("SELECT MAX(injected_at) FROM orders").fetchone()
    return parse_ts(row[0]) if row else None


def file_sizes(path: Path) -> dict[str, int]:
    """Return the sizes in bytes of the database, its -wal and -shm (absent files: 0)."""
    sizes = {}
    for suffix, name in (("", "db"), ("-wal", "wal"), ("-shm", "shm")):
        try:
            sizes[name] = Path(f"{path}{suffix}").stat().st_size
        except OSError:
            sizes[name] = 0
    return sizes


def statistics(conn: sqlite3.Connection, path: Path) -> dict[str, Any]:
    """Return counts and sizes without any customer data: orders by state, rows per table, files, time span."""
    tables = ("orders", "events", "alerts", "print_jobs", "snoozes", "kv")
    present = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    rows = {t: int(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in tables if t in present}  # noqa: S608
    span = conn.execute("SELECT MIN(received_at), MAX(received_at) FROM orders").fetchone()
    unpublished = {
        t: int(conn.execute(f"SELECT COUNT(*) FROM {t} WHERE published = 0").fetchone()[0])  # noqa: S608
        for t in ("events", "alerts")
        if t in present
    }
    version = None
    if "schema_version" in present:
        version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    jobs = {str(r[0]): int(r[1]) for r in conn.execute("SELECT state, COUNT(*) FROM print_jobs GROUP BY state")}
    oldest, last = oldest_due(conn), last_injected(conn)
    return {
        "path": str(path),
        "files": file_sizes(path),
        "page_size": int(conn.execute("PRAGMA page_size").fetchone()[0]),
        "page_count": int(conn.execute("PRAGMA page_count").fetchone()[0]),
        "freelist_count": int(conn.execute("PRAGMA freelist_count").fetchone()[0]),
        "schema_version": int(version[0]) if version and version[0] is not None else None,
        "orders_by_state": counts(conn),
        "print_jobs_by_state": jobs,
        "rows": rows,
        "unpublished": unpublished,
        "first_received_at": span[0],
        "last_received_at": span[1],
        "oldest_due_pending_at": oldest.isoformat() if oldest else None,
        "last_injected_at": last.isoformat() if last else None,
    }
