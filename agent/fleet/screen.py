"""The console's screen: the fleet as a fixed-width table with each open alert's action, or as JSON. Pure code."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from agent.fleet.model import NEEDS, Fleet, OpenAlert, VenueRow, state_since

COLUMNS = (
    ("VENUE", 20),
    ("STATE", 8),
    ("ACCEPT", 6),
    ("FOR", 5),
    ("SEEN", 5),
    ("PEND/FAIL", 9),
    ("OLDEST", 6),
    ("POS", 22),
    ("PRINTERS", 20),
    ("ALERTS", 0),  # the last column is not cut
)


def age(seconds: float | None) -> str:
    """Return ``seconds`` as one short unit (``42s``, ``3m``, ``2h``, ``1d``); ``-`` for None."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _cell(text: str, width: int) -> str:
    return text if width == 0 or len(text) <= width else text[: width - 1] + "~"


def _accept(row: VenueRow) -> str:
    return "-" if row.accepting is None else "yes" if row.accepting else "NO"


def _row_line(row: VenueRow, now: float) -> str:
    since = state_since(row)
    pos_state = str(row.pos.get("state", "-"))
    if row.pos.get("circuit") not in (None, "closed"):
        pos_state += f"/{row.pos['circuit']}"
    alerts = f"{row.open_alerts}" if row.alerts else "-"
    if row.alerts:
        alerts += " " + ",".join(f"{a.name}({age(now - a.at)})" for a in reversed(row.alerts[-3:]))
    cells = (
        row.venue,
        row.state,
        _accept(row),
        age(None if since is None else now - since),
        age(None if row.last_seen is None else now - row.last_seen),
        f"{row.pending}/{row.failed}" if row.outbox else "-",
        age(row.oldest_pending_age_s),
        pos_state,
        ",".join(row.printers_not_ok) or ("ok" if row.health_ts else "-"),
        alerts,
    )
    return " ".join(f"{_cell(text, width):<{width}}" for text, (_, width) in zip(cells, COLUMNS, strict=True)).rstrip()


def _alert_line(alert: OpenAlert, now: float) -> str:
    what = alert.reason
    if alert.display_code:
        what = f"#{alert.display_code} {what}"
    return f"    ! {alert.name} {age(now - alert.at)} ago: {what} -> {alert.action}"


def render_table(rows: list[VenueRow], now: float, *, width: int = 0) -> str:
    """Return ``rows`` as a table, one line per venue, each open alert beneath it with its action; ages to ``now``.

    ``width`` > 0 cuts every line to that many characters (a terminal); 0 keeps them whole.
    """
    lines = [" ".join(f"{name:<{w}}" for name, w in COLUMNS).rstrip()]
    for row in rows:
        lines.append(_row_line(row, now))
        lines.extend(_alert_line(a, now) for a in reversed(row.alerts))
    if width > 0:
        lines = [_cell(line, width) for line in lines]
    return "\n".join(lines)


def render_summary(fleet: Fleet, now: float, *, shown: int) -> str:
    """Return one line: how many venues, how many need what, how many rows are shown, and the time."""
    counts = fleet.counts()
    needs = ", ".join(f"{counts[n]} {n}" for n in NEEDS)
    stamp = datetime.fromtimestamp(now, UTC).strftime("%H:%M:%SZ")
    return f"{counts['venues']} venues, {counts['online']} online; {needs}; showing {shown}; {stamp}"


def render_screen(
    fleet: Fleet,
    now: float,
    *,
    states: tuple[str, ...] = (),
    venues: tuple[str, ...] = (),
    height: int = 0,
    width: int = 0,
) -> str:
    """Return the summary line and the table of the filtered venues; ``height`` > 0 cuts it to that many lines."""
    rows = fleet.rows(states, venues)
    table = render_table(rows, now, width=width).splitlines()
    head = render_summary(fleet, now, shown=len(rows))
    if height > 0 and len(table) + 1 > height:
        table = [*table[: max(1, height - 2)], "... more below: narrow with --state or --venue"]
    return "\n".join([_cell(head, width) if width else head, *table])


def as_json(rows: list[VenueRow]) -> list[dict[str, Any]]:
    """Return one JSON-ready dict per venue, in the given order, with absolute (ISO 8601 UTC) times."""
    return [
        {
            "venue": row.venue,
            "state": row.state,
            "since": row.since,
            "version": row.version,
            "boot_id": row.boot_id,
            "seq": row.seq,
            "last_seen": _iso(row.last_seen),
            "needs": list(row.needs),
            "accepting": row.accepting,
            "availability_reason": row.availability_reason,
            "availability_since": row.availability_since,
            "outbox": row.outbox,
            "pending": row.pending,
            "oldest_pending_age_s": row.oldest_pending_age_s,
            "pos": row.pos,
            "printers": row.printers,
            "printers_not_ok": row.printers_not_ok,
            "disk_free_mb": row.disk_free_mb,
            "health_ts": row.health_ts,
            "injected_seen": row.injected_total,
            "failed_seen": row.failed_total,
            "open_alerts": [
                {
                    "alert": a.name,
                    "ts": _iso(a.at),
                    "severity": a.severity,
                    "order_id": a.order_id,
                    "display_code": a.display_code,
                    "printer": a.printer,
                    "reason": a.reason,
                    "action": a.action,
                }
                for a in reversed(row.alerts)
            ],
        }
        for row in rows
    ]
