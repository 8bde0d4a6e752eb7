"""Order life cycle (docs/order-flow.md): the states, the error classes, and which transitions are legal.

Pure code: deciding a state is a function of the order, the settings and the time; the outbox applies
the decision in one transaction together with its event row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from agent.domain.models import Order, PaymentStatus


class State(StrEnum):
    """Where an order is in the outbox."""

    HELD = "held"  # unpaid and hold_unpaid: waits for payment, never printed
    SCHEDULED = "scheduled"  # pre-order: waits until requested_at - buffer_minutes
    QUEUED = "queued"  # due: the dispatcher takes it next
    SENDING = "sending"  # a POS call is in flight (in doubt after a crash)
    AWAITING_POS = "awaiting_pos"  # a two-phase POS accepted it and has not confirmed yet
    INJECTED = "injected"  # in the POS
    RETRYING = "retrying"  # transient failure; next_attempt_at says when
    FAILED = "failed"  # needs a human; error_class says why
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # fallback printed and after_print = "skip"


class ErrorClass(StrEnum):
    """Why an order failed: the ``error_class`` of a failed order."""

    OUTAGE = "outage"
    AUTH = "auth"
    MENU = "menu"
    UNAVAILABLE = "unavailable"
    REJECTED = "rejected"
    UNCONFIRMED = "unconfirmed"


PENDING = frozenset({State.HELD, State.SCHEDULED, State.QUEUED, State.SENDING, State.AWAITING_POS, State.RETRYING})
"""States of an order that is neither in the POS nor finished with."""

TERMINAL = frozenset({State.INJECTED, State.CANCELLED, State.SKIPPED})
"""States nothing moves an order out of automatically."""

NOT_IN_POS = frozenset({State.HELD, State.SCHEDULED, State.QUEUED, State.RETRYING, State.FAILED, State.SKIPPED})
"""States in which the order can still be replaced or cancelled: the POS does not have it."""

TRANSITIONS: dict[State, frozenset[State]] = {
    State.HELD: frozenset({State.SCHEDULED, State.QUEUED, State.CANCELLED, State.HELD}),
    State.SCHEDULED: frozenset({State.QUEUED, State.CANCELLED, State.HELD, State.SCHEDULED, State.SKIPPED}),
    State.QUEUED: frozenset(
        {
            State.SENDING,
            State.CANCELLED,
            State.HELD,
            State.SCHEDULED,
            State.QUEUED,
            State.SKIPPED,
            State.FAILED,
            State.INJECTED,
        }
    ),
    State.SENDING: frozenset(
        {State.AWAITING_POS, State.INJECTED, State.RETRYING, State.FAILED, State.QUEUED, State.SKIPPED}
    ),
    State.AWAITING_POS: frozenset({State.INJECTED, State.FAILED, State.RETRYING}),
    State.RETRYING: frozenset(
        {
            State.QUEUED,
            State.CANCELLED,
            State.HELD,
            State.SCHEDULED,
            State.FAILED,
            State.SKIPPED,
            State.RETRYING,
            State.INJECTED,
        }
    ),
    State.FAILED: frozenset(
        {State.QUEUED, State.CANCELLED, State.INJECTED, State.HELD, State.SCHEDULED, State.SKIPPED}
    ),
    State.SKIPPED: frozenset({State.QUEUED, State.CANCELLED, State.HELD, State.SCHEDULED}),
    State.INJECTED: frozenset(),
    State.CANCELLED: frozenset(),
}
"""Legal moves. A two-phase confirmation (a Lightspeed SUCCESS notification) makes an order injected from
wherever it waits: awaiting_pos, failed (late), or queued/retrying (the POS's first answer was lost)."""


def can_move(source: State, target: State) -> bool:
    """Return whether the life cycle allows ``source`` -> ``target``."""
    return target in TRANSITIONS[source]


@dataclass(frozen=True)
class Placement:
    """Where a newly received (or replaced, or paid) order starts, and when it becomes due."""

    state: State
    due_at: datetime


def place(order: Order, *, now: datetime, hold_unpaid: bool, buffered: bool, buffer_minutes: int) -> Placement:
    """Decide the first state of an order: held if unpaid, scheduled if a buffered pre-order, else queued."""
    due_at = now
    if order.requested_at is not None and buffered:
        due_at = max(now, order.requested_at - timedelta(minutes=buffer_minutes))
    if hold_unpaid and order.payment.status is PaymentStatus.PENDING:
        return Placement(State.HELD, due_at)
    if due_at > now:
        return Placement(State.SCHEDULED, due_at)
    return Placement(State.QUEUED, due_at)
