"""When an order needs a fallback kitchen ticket (rules a-c of docs/order-flow.md). Pure code."""

from __future__ import annotations

from datetime import datetime, timedelta

from agent.domain.states import State
from agent.outbox.records import OrderRecord

# Orders a fallback ticket can be for: due, not in the POS, not on hold, not cancelled.
# Awaiting_pos is left out on purpose: the POS has accepted it, so a ticket now would make the dish
# twice; the confirm timeout turns it into failed/unconfirmed, and rule (b) prints it then.
# Sending is left out too: the request in flight was built without the ALREADY PRINTED note, so the
# decision waits for its answer (at most pos.timeout_seconds).
ELIGIBLE = frozenset({State.QUEUED, State.RETRYING, State.FAILED})


def fallback_reason(
    record: OrderRecord,
    *,
    now: datetime,
    enabled: bool,
    print_after_seconds: float,
    pos_not_ready: bool,
    print_when_pos_not_ready: bool,
) -> str | None:
    """Return why this order needs its automatic fallback ticket now, or None if it does not."""
    if not enabled or record.fallback_at is not None or record.state not in ELIGIBLE:
        return None
    if record.due_at > now:
        return None
    if record.state is State.FAILED:
        return f"failed ({record.error_class.value if record.error_class else 'error'})"
    if pos_not_ready and print_when_pos_not_ready:
        return "pos_not_ready"
    if now - record.due_at >= timedelta(seconds=print_after_seconds):
        return f"not in the POS {int(print_after_seconds)} s after it became due"
    return None


def fallback_deadline(record: OrderRecord, *, print_after_seconds: float) -> datetime | None:
    """Return when rule (a) will fire for this order, or None if it cannot."""
    if record.fallback_at is not None or record.state not in ELIGIBLE:
        return None
    return record.due_at + timedelta(seconds=print_after_seconds)
