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
# The outbox's checkpointer (its own connection and thread) copies the WAL into the database a second after
# writes, so the checkpoint SQLite runs inside a commit once the WAL holds this many pages (its default, kept as
# the backstop for a sustained burst) finds little left to copy: a commit that paid for a whole checkpoint's page
# copies and fsyncs waited about 100 ms here, and far longer on an SD card.
WRITER_AUTOCHECKPOINT_PAGES = 1000
# A WAL restarted after a complete checkpoint is cut back to this size, so a burst's WAL does not keep its disk.
WAL_SIZE_LIMIT_BYTES = 16 * 1024 * 1024


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
    conn.execute(f"PRAGMA wal_autocheckpoint={WRITER_AUTOCHECKPOINT_PAGES}")
    conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")


def configure_reader(conn: sqlite3.Connection) -> None:
    """Make a connection read-only, waiting on locks like the writer."""
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA query_only=ON")


def configure_checkpointer(conn: sqlite3.Connection) -> None:
    """Prepare the connection that runs the background checkpoints (it writes nothing else)."""
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA synchronous=FULL")


def checkpoint(conn: sqlite3.Connection) -> tuple[int, int]:
    """Copy what the WAL holds into the database without blocking readers or the writer.

    Return (frames in the WAL, frames copied); SQLite restarts the WAL at the next write once they are equal.
    """
    _busy, wal_frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(wal_frames), int(copied)


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
