"""Rows of the outbox as typed, immutable records, and the one timestamp format stored in it."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from agent.domain.models import Order
from agent.domain.states import ErrorClass, State


def ts(when: datetime) -> str:
    """Return the stored form of an aware time: UTC, fixed width, so text order is time order."""
    if when.tzinfo is None:
        msg = "naive datetimes are not stored; every time carries an offset"
        raise ValueError(msg)
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def parse_ts(text: str | None) -> datetime | None:
    """Return the aware time of a stored timestamp (None stays None)."""
    return datetime.fromisoformat(text) if text else None


@dataclass(frozen=True)
class OrderRecord:
    """An order as the outbox holds it: the order itself plus where it is in its life cycle."""

    id: str
    revision: int
    content_hash: str
    body: str
    display_code: str
    state: State
    error_class: ErrorClass | None
    last_error: str | None
    attempts: int
    strikes: int
    idempotency_key: str
    pos_reference: str | None
    received_at: datetime
    due_at: datetime
    next_attempt_at: datetime | None
    sent_at: datetime | None
    fallback_at: datetime | None
    injected_at: datetime | None
    updated_at: datetime
    in_doubt: bool

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> OrderRecord:
        """Build a record from an ``orders`` row."""
        return cls(
            id=row["id"],
            revision=row["revision"],
            content_hash=row["content_hash"],
            body=row["body"],
            display_code=row["display_code"],
            state=State(row["state"]),
            error_class=ErrorClass(row["error_class"]) if row["error_class"] else None,
            last_error=row["last_error"],
            attempts=row["attempts"],
            strikes=row["strikes"],
            idempotency_key=row["idempotency_key"],
            pos_reference=row["pos_reference"],
            received_at=_required(row["received_at"]),
            due_at=_required(row["due_at"]),
            next_attempt_at=parse_ts(row["next_attempt_at"]),
            sent_at=parse_ts(row["sent_at"]),
            fallback_at=parse_ts(row["fallback_at"]),
            injected_at=parse_ts(row["injected_at"]),
            updated_at=_required(row["updated_at"]),
            in_doubt=bool(row["in_doubt"]),
        )

    @cached_property
    def order(self) -> Order:
        """Return the stored order (validated when it was received)."""
        return Order.model_validate_json(self.body)

    def summary(self) -> dict[str, Any]:
        """Return the JSON view of this order's life cycle (without the order body)."""
        return {
            "order_id": self.id,
            "state": self.state.value,
            "revision": self.revision,
            "display_code": self.display_code,
            "attempts": self.attempts,
            "error_class": self.error_class.value if self.error_class else None,
            "last_error": self.last_error,
            "idempotency_key": self.idempotency_key,
            "pos_reference": self.pos_reference,
            "received_at": self.received_at.isoformat(),
            "due_at": self.due_at.isoformat(),
            "next_attempt_at": self.next_attempt_at.isoformat() if self.next_attempt_at else None,
            "fallback_printed_at": self.fallback_at.isoformat() if self.fallback_at else None,
            "injected_at": self.injected_at.isoformat() if self.injected_at else None,
            "updated_at": self.updated_at.isoformat(),
        }


def _required(text: str) -> datetime:
    value = parse_ts(text)
    assert value is not None
    return value


@dataclass(frozen=True)
class EventRecord:
    """One row of the audit log: something that happened, to an order or to a component."""

    seq: int
    ts: datetime
    type: str
    order_id: str | None
    state: str | None
    error_class: str | None
    detail: dict[str, Any]

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> EventRecord:
        """Build a record from an ``events`` row."""
        return cls(
            seq=row["seq"],
            ts=_required(row["ts"]),
            type=row["type"],
            order_id=row["order_id"],
            state=row["state"],
            error_class=row["error_class"],
            detail=json.loads(row["detail"]) if row["detail"] else {},
        )

    def as_dict(self) -> dict[str, Any]:
        """Return the event as ``P/events`` publishes it (docs/mqtt.md)."""
        return {
            "seq": self.seq,
            "ts": self.ts.isoformat(),
            "type": self.type,
            "order_id": self.order_id,
            "state": self.state,
            "error_class": self.error_class,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class PrintJob:
    """A durable request to print one ticket for one order."""

    id: int
    order_id: str
    kind: str
    reprint_no: int
    state: str
    printer: str | None
    attempts: int
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime
    printed_at: datetime | None
    part: int | None = None
    parts: int | None = None
    items: tuple[int, ...] | None = None
    printers: tuple[str, ...] | None = None
    in_doubt: bool = False
    ticket: str | None = None
    confirmation: str | None = None

    @property
    def routed(self) -> bool:
        """True once the job has been split by kitchen routing (or found to need one ticket)."""
        return self.parts is not None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> PrintJob:
        """Build a record from a ``print_jobs`` row."""
        return cls(
            id=row["id"],
            order_id=row["order_id"],
            kind=row["kind"],
            reprint_no=row["reprint_no"],
            state=row["state"],
            printer=row["printer"],
            attempts=row["attempts"],
            last_error=row["last_error"],
            created_at=_required(row["created_at"]),
            next_attempt_at=_required(row["next_attempt_at"]),
            printed_at=parse_ts(row["printed_at"]),
            part=row["part"],
            parts=row["parts"],
            items=None if row["items"] is None else tuple(json.loads(row["items"])),
            printers=None if row["printers"] is None else tuple(json.loads(row["printers"])),
            in_doubt=bool(row["in_doubt"]),
            ticket=row["ticket"] if "ticket" in row.keys() else None,  # noqa: SIM118 - sqlite3.Row has no __contains__
            confirmation=row["confirmation"] if "confirmation" in row.keys() else None,  # noqa: SIM118
        )

    def as_dict(self) -> dict[str, Any]:
        """Return the JSON view of this print job."""
        return {
            "job_id": self.id,
            "kind": self.kind,
            "reprint_no": self.reprint_no,
            "state": self.state,
            "printer": self.printer,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "created_at": self.created_at.isoformat(),
            "printed_at": self.printed_at.isoformat() if self.printed_at else None,
            # Printed on the printer's own word that the paper came out (confirmed), or on its status only.
            "confirmation": None
            if self.confirmation is None
            else "confirmed"
            if self.confirmation in ("process_id", "transmit_status")
            else "unconfirmed",
            "confirmed_by": self.confirmation,
            "ticket": json.loads(self.ticket) if self.ticket else None,
        }


def order_listing(record: OrderRecord) -> dict[str, Any]:
    """Return one line of ``GET /v1/orders``: the life-cycle summary plus the order's essentials."""
    order = record.order
    return {
        **record.summary(),
        "customer": order.customer.name if order.customer else None,
        "fulfillment": order.fulfillment.type.value,
        "requested_at": order.requested_at.isoformat() if order.requested_at else None,
        "total": order.total,
    }


def order_detail(record: OrderRecord, jobs: list[PrintJob], events: list[EventRecord]) -> dict[str, Any]:
    """Return ``GET /v1/orders/{id}``: the summary, the order body, its tickets and its history."""
    return {
        **record.summary(),
        "order": json.loads(record.body),
        "tickets": [j.as_dict() for j in jobs],
        "events": [e.as_dict() for e in events],
    }
