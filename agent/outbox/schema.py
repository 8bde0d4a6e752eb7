"""The outbox schema and its migrations, applied in order from the ``schema_version`` table."""

from __future__ import annotations

import sqlite3

MIGRATIONS: tuple[str, ...] = (
    # 1: orders, their audit log, alerts, print jobs and a key/value table (POS tokens).
    """
    CREATE TABLE orders (
        id TEXT PRIMARY KEY,
        revision INTEGER NOT NULL DEFAULT 1,
        content_hash TEXT NOT NULL,
        body TEXT NOT NULL,
        display_code TEXT NOT NULL,
        state TEXT NOT NULL,
        error_class TEXT,
        last_error TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        strikes INTEGER NOT NULL DEFAULT 0,
        idempotency_key TEXT NOT NULL,
        pos_reference TEXT,
        received_at TEXT NOT NULL,
        due_at TEXT NOT NULL,
        next_attempt_at TEXT,
        sent_at TEXT,
        fallback_at TEXT,
        injected_at TEXT,
        updated_at TEXT NOT NULL,
        in_doubt INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX orders_by_state_due ON orders (state, due_at);
    CREATE INDEX orders_by_received ON orders (received_at);
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        ts TEXT NOT NULL,
        type TEXT NOT NULL,
        order_id TEXT,
        state TEXT,
        error_class TEXT,
        detail TEXT,
        published INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX events_by_order ON events (order_id, seq);
    CREATE INDEX events_unpublished ON events (published, seq);
    CREATE TABLE alerts (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        ts TEXT NOT NULL,
        alert TEXT NOT NULL,
        severity TEXT NOT NULL,
        order_id TEXT,
        payload TEXT NOT NULL,
        published INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE print_jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        order_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        reprint_no INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'pending',
        printer TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        created_at TEXT NOT NULL,
        next_attempt_at TEXT NOT NULL,
        printed_at TEXT
    );
    CREATE INDEX print_jobs_by_state ON print_jobs (state, next_attempt_at);
    CREATE INDEX print_jobs_by_order ON print_jobs (order_id);
    CREATE TABLE kv (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    """,
    # 2: health reads the last injection time; without an index that scans every order.
    """
    CREATE INDEX orders_by_injected ON orders (injected_at);
    """,
    # 3: kitchen routing splits a job into one ticket per printer ("1 of N"); a job caught by a crash
    # while its bytes were on the way is printed again marked as a possible duplicate.
    """
    ALTER TABLE print_jobs ADD COLUMN part INTEGER;
    ALTER TABLE print_jobs ADD COLUMN parts INTEGER;
    ALTER TABLE print_jobs ADD COLUMN items TEXT;
    ALTER TABLE print_jobs ADD COLUMN printers TEXT;
    ALTER TABLE print_jobs ADD COLUMN in_doubt INTEGER NOT NULL DEFAULT 0;
    """,
    # 4: SKUs the POS reported sold out or restricted, until a time (auto-snooze, docs/lightspeed-k.md).
    """
    CREATE TABLE snoozes (
        sku TEXT PRIMARY KEY,
        until TEXT,
        source TEXT NOT NULL,
        reason TEXT NOT NULL,
        order_id TEXT,
        created_at TEXT NOT NULL
    );
    """,
    # 5: signatures of MQTT commands already run, until they expire: a replay is refused across a restart too.
    """
    CREATE TABLE command_signatures (
        sig TEXT PRIMARY KEY,
        expires_at REAL NOT NULL
    );
    """,
    # 6: what each printed copy said (copy number, late, backup station, sold-out flags) so a preview shows
    # exactly the paper, and how the printer confirmed it (paper = the printer said the job came out).
    """
    ALTER TABLE print_jobs ADD COLUMN ticket TEXT;
    ALTER TABLE print_jobs ADD COLUMN confirmation TEXT;
    """,
    # 7: `orders list --state X` (newest first) walked the received_at index over every order (a month: 0.6 s).
    """
    CREATE INDEX orders_by_state_received ON orders (state, received_at);
    """,
    # 8: the retention purge's slice (finished orders by updated_at) scanned every order once per slice, holding
    # intake's commits for tens of milliseconds on a month of orders; the claim sorted each due time's orders by
    # received_at in a temporary B-tree. One index each instead; the new claim index covers the old one's prefix.
    """
    CREATE INDEX orders_by_state_updated ON orders (state, updated_at);
    CREATE INDEX orders_by_state_due_received ON orders (state, due_at, received_at);
    DROP INDEX orders_by_state_due;
    """,
)


def current_version(conn: sqlite3.Connection) -> int:
    """Return the schema version of an open database (0 for a new file)."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(conn: sqlite3.Connection) -> int:
    """Apply every migration the database lacks, each in its own transaction; return the new version."""
    version = current_version(conn)
    if version > len(MIGRATIONS):
        msg = f"the outbox is at schema version {version}, newer than this agent knows ({len(MIGRATIONS)})"
        raise RuntimeError(msg)
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)
