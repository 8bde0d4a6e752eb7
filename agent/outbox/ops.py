"""The outbox's writes as plain functions on a ``sqlite3.Connection`` inside an open transaction.

Each function is one logical change: the row update and its audit event together. The outbox runs
a batch of them in one transaction (group commit); a function that raises has its savepoint rolled
back and leaves the rest of the batch alone.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from agent.domain.errors import OrderConflict, OrderNotFound
from agent.domain.models import Order
from agent.domain.routing import TicketPart
from agent.domain.states import NOT_IN_POS, ErrorClass, Placement, State, can_move
from agent.outbox.records import OrderRecord, PrintJob, ts

# Failures the POS decided on: a re-submission after one goes under a new idempotency key.
FRESH_KEY_AFTER = frozenset({ErrorClass.MENU, ErrorClass.UNAVAILABLE, ErrorClass.REJECTED})


@dataclass(frozen=True)
class SubmitResult:
    """What the intake answers: the order's id and state, and whether it had been received before."""

    order_id: str
    state: State
    duplicate: bool


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


def fetch(conn: sqlite3.Connection, order_id: str) -> OrderRecord | None:
    """Return one order record, or None."""
    row = conn.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
    return OrderRecord.from_row(row) if row else None


def _require(conn: sqlite3.Connection, order_id: str) -> OrderRecord:
    record = fetch(conn, order_id)
    if record is None:
        raise OrderNotFound(order_id)
    return record


def submit(conn: sqlite3.Connection, order: Order, placement: Placement, *, key: str, now: datetime) -> SubmitResult:
    """Insert a new order, or recognise a duplicate; raise OrderConflict for the same id with other content."""
    digest = order.content_hash()
    row = conn.execute("SELECT content_hash, state FROM orders WHERE id = ?", (order.id,)).fetchone()
    if row is not None:
        if row["content_hash"] == digest:
            return SubmitResult(order.id, State(row["state"]), duplicate=True)
        raise OrderConflict(
            "an order with this id exists with different content: use PUT /v1/orders/{id} to replace it",
            state=row["state"],
        )
    stamp = ts(now)
    conn.execute(
        "INSERT INTO orders (id, content_hash, body, display_code, state, idempotency_key, received_at, due_at,"
        " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            order.id,
            digest,
            order.model_dump_json(),
            order.display_code or "",
            placement.state.value,
            key,
            stamp,
            ts(placement.due_at),
            stamp,
        ),
    )
    add_event(
        conn,
        now,
        "received",
        order_id=order.id,
        state=placement.state,
        detail={"due_at": placement.due_at.isoformat()},
    )
    return SubmitResult(order.id, placement.state, duplicate=False)


def replace(
    conn: sqlite3.Connection, order: Order, placement: Placement, *, base_key: str, now: datetime
) -> tuple[OrderRecord, bool]:
    """Replace an order the POS does not have yet; return the new record and whether a reprint is due.

    The new revision gets its own idempotency key (``<base>:r<n>``) so a POS that deduplicates by key
    takes the new content instead of answering with the old order.
    """
    current = _require(conn, order.id)
    key = f"{base_key}:r{current.revision + 1}"
    digest = order.content_hash()
    if current.content_hash == digest:
        return current, False
    if current.state not in NOT_IN_POS:
        raise OrderConflict(_why_not_replaceable(current.state), state=current.state.value)
    conn.execute(
        "UPDATE orders SET revision = revision + 1, content_hash = ?, body = ?, display_code = ?, state = ?,"
        " error_class = NULL, last_error = NULL, attempts = 0, strikes = 0, idempotency_key = ?, due_at = ?,"
        " next_attempt_at = NULL, in_doubt = 0, updated_at = ? WHERE id = ?",
        (
            digest,
            order.model_dump_json(),
            order.display_code or "",
            placement.state.value,
            key,
            ts(placement.due_at),
            ts(now),
            order.id,
        ),
    )
    add_event(
        conn,
        now,
        "modified",
        order_id=order.id,
        state=placement.state,
        detail={"revision": current.revision + 1},
    )
    reprint = current.fallback_at is not None
    if reprint:
        add_print_job(conn, order.id, "modified", now=now)
    updated = fetch(conn, order.id)
    assert updated is not None
    return updated, reprint


def _why_not_replaceable(state: State) -> str:
    if state in (State.INJECTED, State.AWAITING_POS):
        return "already in the POS: modify it on the POS"
    if state is State.SENDING:
        return "being sent to the POS right now: try again in a few seconds"
    return f"the order is {state.value} and can no longer be changed"


def transition(
    conn: sqlite3.Connection,
    order_id: str,
    to: State,
    *,
    now: datetime,
    event: str,
    expect: Iterable[State] | None = None,
    detail: dict[str, Any] | None = None,
    **fields: Any,
) -> OrderRecord:
    """Move one order to ``to`` (setting ``fields``) and log the event; OrderConflict if not allowed."""
    found = conn.execute("SELECT state FROM orders WHERE id = ?", (order_id,)).fetchone()
    if found is None:
        raise OrderNotFound(order_id)
    state = State(found[0])
    allowed = frozenset(expect) if expect is not None else None
    if (allowed is not None and state not in allowed) or not can_move(state, to):
        raise OrderConflict(f"the order is {state.value}", state=state.value)
    columns = {"state": to.value, "updated_at": ts(now)}
    for name, value in fields.items():
        if isinstance(value, datetime):
            value = ts(value)
        elif isinstance(value, State | ErrorClass):
            value = value.value
        elif isinstance(value, bool):
            value = int(value)
        columns[name] = value
    assignments = ", ".join(f"{name} = ?" for name in columns)
    sql = f"UPDATE orders SET {assignments} WHERE id = ? RETURNING *"  # noqa: S608
    (row,) = conn.execute(sql, (*columns.values(), order_id)).fetchall()
    error_class = fields.get("error_class")
    add_event(
        conn,
        now,
        event,
        order_id=order_id,
        state=to,
        error_class=ErrorClass(error_class) if error_class else None,
        detail=detail,
    )
    return OrderRecord.from_row(row)


def claim(conn: sqlite3.Connection, *, now: datetime, limit: int, count_strike: bool) -> list[OrderRecord]:
    """Move up to ``limit`` queued orders, oldest due first, to ``sending`` and return them.

    Due pre-orders and retries are queued first in the same transaction, so orders that waited on an
    open circuit go before newer ones.
    """
    promote(conn, now=now, retries_too=True)
    stamp = ts(now)
    # One statement moves the whole claim (queued -> sending is always allowed); events follow in claim order.
    rows = conn.execute(
        "UPDATE orders SET state = 'sending', updated_at = ?, attempts = attempts + 1, strikes = strikes + ?,"
        " sent_at = ? WHERE id IN (SELECT id FROM orders WHERE state = 'queued' ORDER BY due_at, received_at"
        " LIMIT ?) RETURNING *",
        (stamp, 1 if count_strike else 0, stamp, limit),
    ).fetchall()
    claimed = sorted((OrderRecord.from_row(r) for r in rows), key=lambda r: (r.due_at, r.received_at))
    for record in claimed:
        add_event(conn, now, "sending", order_id=record.id, state=State.SENDING)
    return claimed


def claim_probe(conn: sqlite3.Connection, *, now: datetime) -> OrderRecord | None:
    """Move the oldest due waiting order (queued, or retrying whatever its wait) to ``sending`` as the circuit's probe.

    The probe spends no strike: the POS is not believed up while the circuit is open (SPEC §6). The other
    retries stay ``retrying``.
    """
    promote(conn, now=now, retries_too=False)
    row = conn.execute(
        "SELECT id, state FROM orders WHERE state IN ('queued', 'retrying') ORDER BY due_at, received_at LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    if row["state"] == State.RETRYING.value:
        transition(conn, row["id"], State.QUEUED, now=now, event="queued", detail={"reason": "circuit_probe"})
    return transition(
        conn,
        row["id"],
        State.SENDING,
        now=now,
        event="sending",
        expect=(State.QUEUED,),
        detail={"reason": "circuit_probe"},
        attempts=_col(conn, row["id"], "attempts") + 1,
        sent_at=now,
    )


def _col(conn: sqlite3.Connection, order_id: str, column: str) -> int:
    row = conn.execute(f"SELECT {column} FROM orders WHERE id = ?", (order_id,)).fetchone()  # noqa: S608
    return int(row[0])


def promote(conn: sqlite3.Connection, *, now: datetime, retries_too: bool, all_retries: bool = False) -> int:
    """Queue the pre-orders and retries whose time has come (``all_retries``: every retry); return how many moved."""
    moved = 0
    stamp = ts(now)
    rows = conn.execute(
        "SELECT id FROM orders WHERE state = 'scheduled' AND due_at <= ? ORDER BY due_at", (stamp,)
    ).fetchall()
    for row in rows:
        transition(conn, row["id"], State.QUEUED, now=now, event="queued", detail={"reason": "due"})
        moved += 1
    if retries_too:
        rows = conn.execute(
            "SELECT id FROM orders WHERE state = 'retrying' AND (next_attempt_at IS NULL OR next_attempt_at <= ? OR ?)"
            " ORDER BY due_at",
            (stamp, int(all_retries)),
        ).fetchall()
        for row in rows:
            transition(conn, row["id"], State.QUEUED, now=now, event="queued", detail={"reason": "retry"})
            moved += 1
    return moved


def recover_in_doubt(conn: sqlite3.Connection, *, now: datetime) -> list[str]:
    """Requeue orders found in ``sending`` at start-up: resent later with the same idempotency key."""
    rows = conn.execute("SELECT id FROM orders WHERE state = 'sending'").fetchall()
    for row in rows:
        transition(
            conn,
            row["id"],
            State.QUEUED,
            now=now,
            event="recovered_in_doubt",
            in_doubt=True,
            detail={
                "reason": "the agent stopped while this order was being sent; resending with the same idempotency key"
            },
        )
    return [row["id"] for row in rows]


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
    current = _require(conn, order_id)
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
    _require(conn, order_id)
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


def kv_put(conn: sqlite3.Connection, key: str, value: str, *, now: datetime) -> None:
    """Store a value under a key (POS tokens, breaker state)."""
    conn.execute(
        "INSERT INTO kv (key, value, updated_at) VALUES (?, ?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        (key, value, ts(now)),
    )


def purge(conn: sqlite3.Connection, *, before: datetime, limit: int | None = None) -> int:
    """Delete finished orders last changed before ``before`` (at most ``limit``) with their events and jobs.

    Return how many orders were deleted.
    """
    sql = "SELECT id FROM orders WHERE state IN ('injected', 'cancelled', 'skipped') AND updated_at < ?"
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


def fail_overdue(conn: sqlite3.Connection, *, now: datetime, max_wait: timedelta) -> list[OrderRecord]:
    """Fail (class outage) every order still not in the POS ``max_wait`` after it became due."""
    rows = conn.execute(
        "SELECT id FROM orders WHERE state IN ('queued', 'retrying') AND due_at <= ?", (ts(now - max_wait),)
    ).fetchall()
    return [
        transition(
            conn,
            r["id"],
            State.FAILED,
            now=now,
            event="failed",
            error_class=ErrorClass.OUTAGE,
            last_error=f"not in the POS {int(max_wait.total_seconds() // 3600)} h after it became due",
        )
        for r in rows
    ]


def fallback_candidates(
    conn: sqlite3.Connection, *, now: datetime, print_after_seconds: float, pos_not_ready: bool
) -> list[OrderRecord]:
    """Return orders that may need their automatic fallback ticket now (the rules decide, this narrows)."""
    stamp = ts(now)
    waited = ts(now - timedelta(seconds=print_after_seconds))
    rows = conn.execute(
        "SELECT * FROM orders WHERE fallback_at IS NULL AND due_at <= ? AND ("
        " state = 'failed'"
        " OR (state IN ('queued', 'retrying') AND (? OR due_at <= ?)))"
        " ORDER BY due_at LIMIT 500",
        (stamp, int(pos_not_ready), waited),
    ).fetchall()
    return [OrderRecord.from_row(r) for r in rows]


def requeue_failed(conn: sqlite3.Connection, error_class: ErrorClass, *, now: datetime, reason: str) -> int:
    """Put every order that failed with ``error_class`` back in the queue, attempts reset."""
    rows = conn.execute(
        "SELECT id FROM orders WHERE state = 'failed' AND error_class = ?", (error_class.value,)
    ).fetchall()
    for row in rows:
        resubmit(conn, row["id"], now=now, reason=reason)
    return len(rows)


def mark_paid(
    conn: sqlite3.Connection,
    order_id: str,
    payment: dict[str, Any],
    *,
    now: datetime,
    place_again: Callable[[Order], Placement],
) -> OrderRecord:
    """Record the payment of an order; a held order then moves on to scheduled or queued."""
    current = _require(conn, order_id)
    if current.state in (State.CANCELLED,):
        raise OrderConflict("the order is cancelled", state=current.state.value)
    body = json.loads(current.body)
    body["payment"] = {**body["payment"], **payment}
    order = Order.model_validate(body)
    conn.execute(
        "UPDATE orders SET body = ?, updated_at = ? WHERE id = ?", (order.model_dump_json(), ts(now), order_id)
    )
    add_event(
        conn,
        now,
        "paid",
        order_id=order_id,
        state=current.state,
        detail={"method": payment.get("method"), "amount": payment.get("amount")},
    )
    if current.state is State.HELD:
        placement = place_again(order)
        target = placement.state if placement.state is not State.HELD else State.QUEUED
        return transition(
            conn, order_id, target, now=now, event=target.value, due_at=placement.due_at, detail={"reason": "paid"}
        )
    updated = fetch(conn, order_id)
    assert updated is not None
    return updated


def cancel(conn: sqlite3.Connection, order_id: str, *, now: datetime) -> OrderRecord:
    """Cancel an order the POS does not have; a kitchen that got a fallback ticket gets a CANCELLED one."""
    current = _require(conn, order_id)
    if current.state is State.CANCELLED:
        return current
    if current.state not in NOT_IN_POS:
        if current.state is State.SENDING:
            raise OrderConflict(
                "being sent to the POS right now: try again in a few seconds", state=current.state.value
            )
        raise OrderConflict("already in the POS: cancel it on the POS", state=current.state.value)
    updated = transition(conn, order_id, State.CANCELLED, now=now, event="cancelled", next_attempt_at=None)
    printed = conn.execute(
        "SELECT COUNT(*) FROM print_jobs WHERE order_id = ? AND kind IN ('fallback', 'reprint', 'modified')",
        (order_id,),
    ).fetchone()[0]
    if printed:
        add_print_job(conn, order_id, "cancelled", now=now)
    return updated


def resubmit(
    conn: sqlite3.Connection, order_id: str, *, now: datetime, reason: str = "re-submitted by staff"
) -> OrderRecord:
    """Send a failed (or skipped) order to the queue again with its attempts reset."""
    current = _require(conn, order_id)
    if current.state not in (State.FAILED, State.SKIPPED):
        raise OrderConflict(
            f"only failed or skipped orders can be re-submitted; this one is {current.state.value}",
            state=current.state.value,
        )
    key = current.idempotency_key
    if current.error_class in FRESH_KEY_AFTER:
        # The POS said no to this key; a POS that remembers keys (Lightspeed's thirdPartyReference) would
        # answer a resend with "already used" and never process it. A failure that may have reached the POS
        # (outage, unconfirmed) keeps its key, so a resend cannot make the order twice.
        count = conn.execute(
            "SELECT COUNT(*) FROM events WHERE order_id = ? AND type = 'resubmitted'", (order_id,)
        ).fetchone()[0]
        key = f"{re.sub(r':s[0-9]+$', '', key)}:s{int(count) + 1}"
    return transition(
        conn,
        order_id,
        State.QUEUED,
        now=now,
        event="resubmitted",
        attempts=0,
        strikes=0,
        error_class=None,
        last_error=None,
        next_attempt_at=None,
        due_at=now,
        idempotency_key=key,
        detail={"reason": reason, "idempotency_key": key},
    )
