"""Order writes asked from outside: submit and replace at intake, payment, cancel, re-submission."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent.domain.errors import OrderConflict
from agent.domain.models import Order
from agent.domain.states import NOT_IN_POS, ErrorClass, Placement, State
from agent.outbox.events import add_event
from agent.outbox.print_jobs import add_print_job
from agent.outbox.records import OrderRecord, ts
from agent.outbox.transitions import fetch, require, transition

# Failures the POS decided on: a re-submission after one goes under a new idempotency key.
FRESH_KEY_AFTER = frozenset({ErrorClass.MENU, ErrorClass.UNAVAILABLE, ErrorClass.REJECTED})


@dataclass(frozen=True)
class SubmitResult:
    """What the intake answers: the order's id and state, and whether it had been received before."""

    order_id: str
    state: State
    duplicate: bool


def submit(
    conn: sqlite3.Connection,
    order: Order,
    placement: Placement,
    *,
    key: str,
    now: datetime,
    digest: str | None = None,
    body: str | None = None,
) -> SubmitResult:
    """Insert a new order, or recognise a duplicate; raise OrderConflict for the same id with other content.

    ``digest`` and ``body`` (the order's content hash and JSON) may come computed, off the writer's thread.
    """
    digest = digest or order.content_hash()
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
            body or order.model_dump_json(),
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
    current = require(conn, order.id)
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


def mark_paid(
    conn: sqlite3.Connection,
    order_id: str,
    payment: dict[str, Any],
    *,
    now: datetime,
    place_again: Callable[[Order], Placement],
) -> OrderRecord:
    """Record the payment of an order; a held order then moves on to scheduled or queued."""
    current = require(conn, order_id)
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
    current = require(conn, order_id)
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
    current = require(conn, order_id)
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


def requeue_failed(conn: sqlite3.Connection, error_class: ErrorClass, *, now: datetime, reason: str) -> int:
    """Put every order that failed with ``error_class`` back in the queue, attempts reset."""
    rows = conn.execute(
        "SELECT id FROM orders WHERE state = 'failed' AND error_class = ?", (error_class.value,)
    ).fetchall()
    for row in rows:
        resubmit(conn, row["id"], now=now, reason=reason)
    return len(rows)
