"""Which outbox this is: a random id kept inside the database and in a marker file beside it.

The marker is how the agent knows an outbox existed: an outbox file that is missing, 0 bytes, schema-less or another
box's (its id differs) while the marker names one is refused at start instead of silently replaced by an empty one.
The decisions are pure functions of the marker and what was found on disk; only ``read_marker``, ``write_marker``,
``files_found`` and ``database_found`` touch the file system.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

OUTBOX_ID_KEY = "outbox_id"
INIT_COMMAND = "venue-agent outbox init --force"


@dataclass(frozen=True)
class Marker:
    """The marker's content: the outbox's id, its last schema version and when it was created."""

    outbox_id: str
    schema_version: int
    created_at: str


@dataclass(frozen=True)
class Files:
    """What the file system holds at the outbox's path before SQLite touches it."""

    exists: bool
    size: int
    wal_size: int


@dataclass(frozen=True)
class Database:
    """What an opened outbox file holds: its schema version (0 = schema-less) and its id, if any."""

    schema_version: int
    outbox_id: str | None


@dataclass(frozen=True)
class Refusal:
    """Why the agent will not open the outbox (``reason`` is stable: missing, empty, foreign, ...) and what to do."""

    reason: str
    message: str


@dataclass(frozen=True)
class IntegrityResult:
    """The last ``PRAGMA quick_check``: ``state`` ok, failed or unknown (not run yet), its findings, when."""

    state: str
    detail: str | None
    checked_at: datetime | None

    @property
    def ok(self) -> bool:
        """Return whether the check found nothing wrong."""
        return self.state == "ok"


def integrity_check(conn: sqlite3.Connection) -> str | None:
    """Run ``PRAGMA quick_check`` (at most 20 problems); return None when it is ok, else its findings."""
    rows = [str(r[0]) for r in conn.execute("PRAGMA quick_check(20)").fetchall()]
    return None if rows == ["ok"] else "; ".join(rows)[:500]


def integrity_result(problems: str | None, now: datetime) -> IntegrityResult:
    """Return the result of a check that found ``problems`` (None: ok) at ``now``."""
    return IntegrityResult("ok" if problems is None else "failed", problems, now)


def damaged_text(db: Path, detail: str | None) -> str:
    """Return the refusal text for an outbox file SQLite or quick_check found damaged."""
    return (
        f"the outbox {db} is damaged ({detail}). The agent does not start on it. Copy {db} and its -wal file"
        f" somewhere safe first. {_action(db)}"
    )


def marker_path(db: Path) -> Path:
    """Return the marker's path beside the outbox file."""
    return db.with_name(db.name + ".marker")


def new_outbox_id() -> str:
    """Return a fresh random outbox id."""
    return secrets.token_hex(16)


def _action(db: Path) -> str:
    return (
        f"What to do: restore outbox.db from a backup to {db} (owned by the agent's user) and start again;"
        f" or, to start with a new empty outbox knowing the orders it held are lost, run `{INIT_COMMAND}`"
        " (then check the POS and the kitchen tickets for orders that never arrived)."
        " `venue-agent status` and docs/operations.md ('The outbox refused at start') say more."
    )


def check_files(marker: Marker | None, files: Files, db: Path) -> Refusal | None:
    """Refuse a missing or 0-byte outbox the marker (or a leftover WAL) says existed; None when SQLite may open it."""
    if files.exists and files.size > 0:
        return None
    what = "is missing" if not files.exists else "is empty (0 bytes)"
    if marker is not None:
        reason = "missing" if not files.exists else "empty"
        held = f"outbox {marker.outbox_id} (schema {marker.schema_version}, created {marker.created_at})"
        text = f"the outbox {db} {what}, but {marker_path(db)} records {held} there: its orders are gone from it."
        return Refusal(reason, f"{text} The agent does not replace it with an empty one by itself. {_action(db)}")
    if files.wal_size > 0:
        # SQLite deletes the WAL of an empty database on open: the last commits would go with it.
        text = f"the outbox {db} {what}, but its write-ahead log {db}-wal ({files.wal_size} bytes) is still there."
        return Refusal("missing" if not files.exists else "empty", f"{text} {_action(db)}")
    return None


def check_database(marker: Marker | None, found: Database, db: Path) -> Refusal | None:
    """Refuse a schema-less outbox the marker says existed, or one whose id is not the marker's (another box's)."""
    if marker is None:
        return None
    if found.schema_version == 0:
        text = f"the outbox {db} holds no outbox tables, but {marker_path(db)} records outbox {marker.outbox_id}"
        return Refusal("empty", f"{text} there. {_action(db)}")
    if found.outbox_id is not None and found.outbox_id != marker.outbox_id:
        text = (
            f"the outbox {db} is outbox {found.outbox_id}, but {marker_path(db)} records outbox {marker.outbox_id}:"
            " it was copied in from somewhere else (another venue's box, or an old copy)."
        )
        hint = (
            f" If this file is meant to be here, delete {marker_path(db)} and start again (it is adopted)."
            f" Otherwise put this box's own outbox back. Or, to start empty, run `{INIT_COMMAND}`."
        )
        return Refusal("foreign", text + hint)
    return None


def files_found(db: Path) -> Files:
    """Return whether the outbox file exists, its size and its WAL's size."""
    try:
        size, exists = db.stat().st_size, True
    except FileNotFoundError:
        size, exists = 0, False
    wal = Path(f"{db}-wal")
    try:
        wal_size = wal.stat().st_size
    except FileNotFoundError:
        wal_size = 0
    return Files(exists=exists, size=size, wal_size=wal_size)


def database_found(conn: sqlite3.Connection) -> Database:
    """Return the schema version and outbox id of an open database without creating anything."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "schema_version" not in tables:
        return Database(0, None)
    version = int(conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0)
    outbox_id = None
    if "kv" in tables:
        row = conn.execute("SELECT value FROM kv WHERE key = ?", (OUTBOX_ID_KEY,)).fetchone()
        outbox_id = str(row[0]) if row else None
    return Database(version, outbox_id)


def read_marker(path: Path) -> Marker | None:
    """Return the marker, None when there is none; raise ValueError when it cannot be read."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw)
        return Marker(str(data["outbox_id"]), int(data["schema_version"]), str(data["created_at"]))
    except (ValueError, KeyError, TypeError) as exc:
        msg = f"the outbox marker {path} cannot be read ({exc})"
        raise ValueError(msg) from exc


def write_marker(path: Path, marker: Marker) -> None:
    """Write the marker atomically: a temporary file, fsync, rename over the old one, fsync the directory."""
    body = {
        "outbox_id": marker.outbox_id,
        "schema_version": marker.schema_version,
        "created_at": marker.created_at,
        "about": (
            f"venue-agent: an outbox exists at {path.name.removesuffix('.marker')};"
            " do not delete (see docs/operations.md)"
        ),
    }
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(json.dumps(body, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # some file systems refuse fsync on a directory
            os.fsync(fd)
    finally:
        os.close(fd)


def diagnose(db: Path) -> Refusal | None:
    """Return why the agent would refuse the outbox at ``db`` (for ``venue-agent status``); opens it read-only."""
    try:
        marker = read_marker(marker_path(db))
    except ValueError as exc:
        return Refusal("marker", str(exc))
    files = files_found(db)
    refusal = check_files(marker, files, db)
    if refusal is not None or not files.exists:
        return refusal
    try:
        # As the outbox_readonly views open it: a reader that may not write the directory works with the agent stopped.
        from agent.outbox.readonly import connect

        conn = connect(db)
        try:
            found = database_found(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return Refusal("corrupt", damaged_text(db, str(exc)))
    return check_database(marker, found, db)
