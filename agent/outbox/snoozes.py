"""Auto-snooze of sold-out items: until when, and the durable snooze rows.

An item the POS refuses as sold out or restricted is snoozed until 08:00 the next morning in the
venue's time zone (computed on the local calendar, so a DST change in the night does not move it),
or until the POS says it is back (a ``SALES_RESTRICTION_UPDATED`` NOT_RESTRICTED notification), or
until a person clears it. Later orders with a snoozed SKU are flagged on their kitchen ticket.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from agent.outbox.events import add_event
from agent.outbox.records import parse_ts, ts

REOPEN_AT = time(8, 0)


def snooze_until(now: datetime, tz: ZoneInfo) -> datetime:
    """Return 08:00 on the venue's next calendar day (the same day if it is before 08:00), in UTC."""
    local = now.astimezone(tz)
    day = local.date() if local.time() < REOPEN_AT else local.date() + timedelta(days=1)
    # Built from the wall-clock date and time in the zone (08:00 stays 08:00 across a DST change), then
    # returned in UTC: arithmetic between two datetimes sharing one zoneinfo ignores their offsets.
    return datetime.combine(day, REOPEN_AT, tzinfo=tz).astimezone(UTC)


@dataclass(frozen=True)
class Snooze:
    """One snoozed SKU: until when (None: until cleared), who said so, and why."""

    sku: str
    until: datetime | None
    source: str
    reason: str
    order_id: str | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Snooze:
        """Build a snooze from a ``snoozes`` row."""
        created = parse_ts(row["created_at"])
        assert created is not None
        return cls(row["sku"], parse_ts(row["until"]), row["source"], row["reason"], row["order_id"], created)


def snooze(
    conn: sqlite3.Connection,
    skus: Iterable[str],
    *,
    until: datetime | None,
    source: str,
    reason: str,
    now: datetime,
    order_id: str | None = None,
) -> list[str]:
    """Snooze each SKU (a later snooze replaces an earlier one); record a ``snoozed`` event; return the SKUs."""
    done = sorted(set(skus))
    for sku in done:
        conn.execute(
            "INSERT INTO snoozes (sku, until, source, reason, order_id, created_at) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (sku) DO UPDATE SET until = excluded.until, source = excluded.source,"
            " reason = excluded.reason, order_id = excluded.order_id, created_at = excluded.created_at",
            (sku, None if until is None else ts(until), source, reason, order_id, ts(now)),
        )
    if done:
        detail = {"skus": done, "until": None if until is None else until.isoformat(), "source": source}
        add_event(conn, now, "snoozed", order_id=order_id, detail=detail)
    return done


def clear(conn: sqlite3.Connection, skus: Iterable[str] | None, *, now: datetime, source: str) -> list[str]:
    """Clear the given SKUs' snoozes (all when ``skus`` is None); record an ``unsnoozed`` event; return them."""
    if skus is None:
        cleared = [row["sku"] for row in conn.execute("SELECT sku FROM snoozes ORDER BY sku")]
    else:
        wanted = sorted(set(skus))
        cleared = [s for s in wanted if conn.execute("SELECT 1 FROM snoozes WHERE sku = ?", (s,)).fetchone()]
    for sku in cleared:
        conn.execute("DELETE FROM snoozes WHERE sku = ?", (sku,))
    if cleared:
        add_event(conn, now, "unsnoozed", detail={"skus": cleared, "source": source})
    return cleared


def active(conn: sqlite3.Connection, *, now: datetime) -> list[Snooze]:
    """Return the snoozes still in force at ``now``, by SKU."""
    rows = conn.execute("SELECT * FROM snoozes WHERE until IS NULL OR until > ? ORDER BY sku", (ts(now),))
    return [Snooze.from_row(r) for r in rows]
