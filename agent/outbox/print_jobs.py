"""Print-job writes: requesting fallback and reprint tickets, routing, the printing/printed/in-doubt marks, recovery."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime

from agent.domain.routing import TicketPart
from agent.domain.states import State
from agent.outbox.events import add_event
from agent.outbox.records import PrintJob, ts
from agent.outbox.transitions import require, transition


def add_print_job(conn: sqlite3.Connection, order_id: str, kind: str, *, now: datetime, reprint_no: int = 0) -> int:
    """Record a durable request to print a ticket; return the job id."""
    cursor = conn.execute(
        "INSERT INTO print_jobs (order_id, kind, reprint_no, created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?)",
        (order_id, kind, reprint_no, ts(now), ts(now)),
    )
    add_event(conn, now, "print_requested", order_id=order_id, detail={"kind": kind, "reprint_no": reprint_no})
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def request_fallback(conn: sqlite3.Connection, order_id: str, *, now: datetime, reason: str, skip: bool) -> bool:
    """Record the one automatic fallback ticket of an order (False if it already has one)."""
    current = require(conn, order_id)
    if current.fallback_at is not None:
        return False
    conn.execute("UPDATE orders SET fallback_at = ?, updated_at = ? WHERE id = ?", (ts(now), ts(now), order_id))
    add_print_job(conn, order_id, "fallback", now=now)
    add_event(conn, now, "fallback_requested", order_id=order_id, state=current.state, detail={"reason": reason})
    if skip and current.state in (State.QUEUED, State.RETRYING, State.SCHEDULED):
        transition(
            conn,
            order_id,
            State.SKIPPED,
            now=now,
            event="skipped",
            detail={"reason": "fallback ticket printed and after_print = skip"},
        )
    return True


def request_reprint(conn: sqlite3.Connection, order_id: str, *, now: datetime) -> int:
    """Record a manual reprint, numbered from 1; return its number."""
    require(conn, order_id)
    # Kitchen routing may split one reprint into several rows; they share the number.
    row = conn.execute(
        "SELECT COALESCE(MAX(reprint_no), 0) FROM print_jobs WHERE order_id = ? AND kind = 'reprint'", (order_id,)
    ).fetchone()
    number = int(row[0]) + 1
    add_print_job(conn, order_id, "reprint", now=now, reprint_no=number)
    return number


def finish_print_job(
    conn: sqlite3.Connection,
    job_id: int,
    *,
    now: datetime,
    printer: str | None,
    error: str | None,
    retry_at: datetime | None,
    ticket: str | None = None,
    confirmation: str | None = None,
) -> PrintJob:
    """Mark a print job printed (error None), or note the failure and when to try again.

    A printed job keeps what its ticket said (``ticket``, JSON) and how the printer confirmed it.
    """
    row = conn.execute("SELECT * FROM print_jobs WHERE id = ?", (job_id,)).fetchone()
    job = PrintJob.from_row(row)
    if error is None:
        conn.execute(
            "UPDATE print_jobs SET state = 'printed', printer = ?, attempts = attempts + 1, printed_at = ?,"
            " last_error = NULL, ticket = ?, confirmation = ? WHERE id = ?",
            (printer, ts(now), ticket, confirmation, job_id),
        )
        detail = {"kind": job.kind, "printer": printer, "confirmation": confirmation}
        add_event(conn, now, "printed", order_id=job.order_id, detail=detail)
    else:
        conn.execute(
            "UPDATE print_jobs SET state = 'pending', attempts = attempts + 1, last_error = ?, next_attempt_at = ?"
            " WHERE id = ?",
            (error, ts(retry_at or now), job_id),
        )
        add_event(conn, now, "print_failed", order_id=job.order_id, detail={"kind": job.kind, "error": error})
    return PrintJob.from_row(conn.execute("SELECT * FROM print_jobs WHERE id = ?", (job_id,)).fetchone())


def copies_printed(conn: sqlite3.Connection, order_id: str, part: int | None) -> int:
    """Return how many tickets of an order (of routing ``part``) may be on paper so far, cancellations not counted."""
    # A job printed in doubt counts twice: the attempt before it may be on paper too.
    row = conn.execute(
        "SELECT COALESCE(SUM(CASE WHEN in_doubt THEN 2 ELSE 1 END), 0) FROM print_jobs"
        " WHERE order_id = ? AND state = 'printed' AND kind != 'cancelled' AND COALESCE(part, 1) = ?",
        (order_id, part or 1),
    ).fetchone()
    return int(row[0])


def route_print_job(conn: sqlite3.Connection, job_id: int, parts: Sequence[TicketPart]) -> list[PrintJob]:
    """Give a job its kitchen routing: the first part stays in the row, each further part gets its own row."""
    job = PrintJob.from_row(conn.execute("SELECT * FROM print_jobs WHERE id = ?", (job_id,)).fetchone())
    ids = [job_id]
    for _ in parts[1:]:
        cursor = conn.execute(
            "INSERT INTO print_jobs (order_id, kind, reprint_no, created_at, next_attempt_at, in_doubt)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (job.order_id, job.kind, job.reprint_no, ts(job.created_at), ts(job.next_attempt_at), int(job.in_doubt)),
        )
        assert cursor.lastrowid is not None
        ids.append(cursor.lastrowid)
    for row_id, part in zip(ids, parts, strict=True):
        conn.execute(
            "UPDATE print_jobs SET part = ?, parts = ?, items = ?, printers = ? WHERE id = ?",
            (
                part.part,
                part.parts,
                None if part.items is None else json.dumps(list(part.items)),
                json.dumps(list(part.printers)),
                row_id,
            ),
        )
    marks = ", ".join("?" * len(ids))
    rows = conn.execute(f"SELECT * FROM print_jobs WHERE id IN ({marks}) ORDER BY id", ids)  # noqa: S608
    return [PrintJob.from_row(r) for r in rows]


def start_print_job(conn: sqlite3.Connection, *, job_id: int, printer: str) -> None:
    """Note that a job's bytes are about to go to ``printer``: after a crash from here it is in doubt."""
    conn.execute("UPDATE print_jobs SET state = 'printing', printer = ? WHERE id = ?", (printer, job_id))


def unconfirmed_print_job(
    conn: sqlite3.Connection,
    *,
    job_id: int,
    printer: str,
    detail: str,
    now: datetime,
    event: str = "print_unconfirmed",
) -> PrintJob:
    """Mark a job in doubt (its next copy a reprint): ``printer`` took the bytes unconfirmed or stopped mid-job."""
    conn.execute("UPDATE print_jobs SET in_doubt = 1 WHERE id = ?", (job_id,))
    job = PrintJob.from_row(conn.execute("SELECT * FROM print_jobs WHERE id = ?", (job_id,)).fetchone())
    add_event(
        conn,
        now,
        event,
        order_id=job.order_id,
        detail={"kind": job.kind, "printer": printer, "error": detail},
    )
    return job


def recover_print_jobs(conn: sqlite3.Connection, *, now: datetime) -> list[int]:
    """Put jobs a crash caught while printing back to pending, marked in doubt; return their ids."""
    rows = conn.execute("SELECT id, order_id, printer FROM print_jobs WHERE state = 'printing'").fetchall()
    for row in rows:
        conn.execute(
            "UPDATE print_jobs SET state = 'pending', in_doubt = 1, next_attempt_at = ? WHERE id = ?",
            (ts(now), row["id"]),
        )
        add_event(conn, now, "print_in_doubt", order_id=row["order_id"], detail={"printer": row["printer"]})
    return [row["id"] for row in rows]


def retry_print_jobs_now(conn: sqlite3.Connection, *, now: datetime) -> int:
    """Make every pending job waiting out a retry delay due now (a printer came back); return how many."""
    cursor = conn.execute(
        "UPDATE print_jobs SET next_attempt_at = ? WHERE state = 'pending' AND next_attempt_at > ?", (ts(now), ts(now))
    )
    return cursor.rowcount
