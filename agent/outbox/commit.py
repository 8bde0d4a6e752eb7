"""Group commit on the writer connection: the batch in one transaction, a savepoint per write, errors mapped.

Also the PRAGMAs each outbox connection is opened with.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiosqlite

from agent.domain.errors import StorageError, StorageFull

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5000


@dataclass
class Pending:
    """One queued write and the future its caller awaits."""

    op: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]


def configure_writer(conn: sqlite3.Connection) -> None:
    """Put the writer in WAL mode with synchronous=FULL; raise sqlite3.OperationalError if WAL is refused."""
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        msg = f"the outbox needs WAL mode, the file system gave {mode!r}"
        raise sqlite3.OperationalError(msg)
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys=ON")


def configure_reader(conn: sqlite3.Connection) -> None:
    """Make a connection read-only, waiting on locks like the writer."""
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA query_only=ON")


def run_batch(conn: sqlite3.Connection, batch: list[Pending]) -> list[tuple[bool, Any]]:
    """Run every op of a batch in one transaction, each under its own savepoint."""
    outcomes: list[tuple[bool, Any]] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for item in batch:
            conn.execute("SAVEPOINT op")
            try:
                value = item.op(conn)
            except sqlite3.Error:
                raise
            except Exception as exc:  # a refused operation: undo it alone, keep the batch
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                outcomes.append((False, exc))
            else:
                conn.execute("RELEASE op")
                outcomes.append((True, value))
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return outcomes


def storage_error(exc: sqlite3.Error) -> StorageError:
    """Map a failed commit to StorageFull (disk full) or StorageError."""
    code = getattr(exc, "sqlite_errorcode", None)
    text = str(exc)
    if code == sqlite3.SQLITE_FULL or "full" in text.lower():
        return StorageFull(f"the disk is full: {text}")
    return StorageError(f"the outbox could not write: {text}")


async def run_in_thread(conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn`` on the connection's own thread with the raw ``sqlite3.Connection``; return its result."""
    # aiosqlite owns one thread per connection; sending a whole batch over as one call costs one
    # thread hop per group commit instead of one per statement.
    raw = conn._conn
    result: T = await conn._execute(fn, raw)  # type: ignore[no-untyped-call]
    return result
