"""Moving orders between states: the checked transition, claims for the dispatcher, promotion, recovery, overdue."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from agent.domain.errors import OrderConflict, OrderNotFound
from agent.domain.states import ErrorClass, State, can_move
from agent.outbox.events import add_event, add_events
from agent.outbox.records import OrderRecord, ts


def fetch(conn: sqlite3.Connection, order_id: str) -> OrderRecord | None:
    """Return one order record, or None."""
    row = conn.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
    return OrderRecord.from_row(row) if row else None


def require(conn: sqlite3.Connection, order_id: str) -> OrderRecord:
    """Return one order record; raise OrderNotFound if there is none."""
    record = fetch(conn, order_id)
    if record is None:
        raise OrderNotFound(order_id)
    return record


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
    sources = _sources(to, None if expect is None else frozenset(expect))
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
    # The allowed source states go into the UPDATE itself: one statement on the usual path, a read only to say why not.
    marks = ",".join("?" * len(sources))
    sql = f"UPDATE orders SET {assignments} WHERE id = ? AND state IN ({marks}) RETURNING *"  # noqa: S608
    rows = conn.execute(sql, (*columns.values(), order_id, *sources)).fetchall()
    if not rows:
        found = conn.execute("SELECT state FROM orders WHERE id = ?", (order_id,)).fetchone()
        if found is None:
            raise OrderNotFound(order_id)
        raise OrderConflict(f"the order is {found[0]}", state=found[0])
    (row,) = rows
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


@functools.cache
def _sources(to: State, expect: frozenset[State] | None) -> tuple[str, ...]:
    """Return the states an order may move to ``to`` from (within ``expect`` when given), as stored."""
    return tuple(s.value for s in State if can_move(s, to) and (expect is None or s in expect))


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
    add_events(conn, now, "sending", [record.id for record in claimed], state=State.SENDING)
    return claimed


def claim_probe(conn: sqlite3.Connection, *, now: datetime) -> OrderRecord | None:
    """Move the oldest due waiting order (queued, or retrying whatever its wait) to ``sending`` as the circuit's probe.

    The probe spends no strike: the POS is not believed up while the circuit is open (docs/order-flow.md). The other
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
