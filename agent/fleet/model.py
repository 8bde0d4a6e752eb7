"""The fleet as the console sees it: per-venue rows folded from agents' MQTT messages (docs/mqtt.md). Pure, no I/O."""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

KINDS = ("status", "health", "availability", "alerts", "events")
PENDING_STATES = ("held", "scheduled", "queued", "retrying", "awaiting_pos")
# Bounded per venue: a venue that raises an alert a second never grows the console without limit.
MAX_OPEN_ALERTS = 20
# Order states after which an alert about that order no longer needs anyone.
ORDER_DONE = frozenset({"injected", "cancelled", "skipped"})
ORDER_ALERTS = frozenset({"order_failed", "fallback_printed", "ticket_not_printed"})
PRINTER_ALERTS = frozenset({"printer_paper_out", "printer_paper_low", "printer_offline"})
POS_ALERTS = frozenset({"pos_down", "pos_auth_required"})

# What needs a human, most urgent first; the console sorts and filters by it.
NEEDS = ("offline", "not-accepting", "failed", "paper-out", "degraded", "alerts")
FILTERS = (*NEEDS, "attention", "ok")


@dataclass
class OpenAlert:
    """One alert the console holds open until what it reports is seen to be over (or the venue restarts)."""

    at: float
    name: str
    severity: str
    reason: str
    action: str
    order_id: str | None = None
    display_code: str | None = None
    printer: str | None = None


@dataclass
class VenueRow:
    """What the console knows about one venue, folded from its MQTT messages."""

    venue: str
    state: str = "unknown"
    since: str | None = None
    version: str | None = None
    boot_id: str | None = None
    seq: int | None = None
    last_seen: float | None = None
    # When the console saw the venue go offline: a Will carries the ``since`` of the connection it ends.
    offline_seen: float | None = None
    outbox: dict[str, int] = field(default_factory=dict)
    oldest_pending_age_s: float | None = None
    pos: dict[str, Any] = field(default_factory=dict)
    printers: dict[str, str] = field(default_factory=dict)
    disk_free_mb: float | None = None
    health_ts: str | None = None
    accepting: bool | None = None
    availability_reason: str | None = None
    availability_since: str | None = None
    availability_seq: int | None = None
    alerts: list[OpenAlert] = field(default_factory=list)
    # Counted from the venue's events since the console started: Prometheus counters (a restart is a reset).
    injected_total: int = 0
    failed_total: int = 0

    @property
    def pending(self) -> int:
        """Orders not yet in the POS or on paper (every non-final outbox state but failed)."""
        return sum(int(self.outbox.get(k, 0)) for k in PENDING_STATES)

    @property
    def failed(self) -> int:
        """Orders in the outbox's ``failed`` state: each needs a human."""
        return int(self.outbox.get("failed", 0))

    @property
    def open_alerts(self) -> int:
        """How many alerts are open."""
        return len(self.alerts)

    @property
    def printers_not_ok(self) -> list[str]:
        """``name:state`` of every printer that is not ``ok``."""
        return [f"{name}:{state}" for name, state in self.printers.items() if state != "ok"]

    @property
    def needs(self) -> tuple[str, ...]:
        """What about this venue needs a human (names from ``NEEDS``), most urgent first."""
        found = []
        if self.state == "offline":
            found.append("offline")
        if self.accepting is False:
            found.append("not-accepting")
        if self.failed or any(a.name == "order_failed" for a in self.alerts):
            found.append("failed")
        if "paper_out" in self.printers.values():
            found.append("paper-out")
        if self.pos.get("state", "ok") != "ok" or any(s not in ("ok", "paper_out") for s in self.printers.values()):
            found.append("degraded")
        if self.alerts:
            found.append("alerts")
        return tuple(found)


def sort_key(row: VenueRow) -> tuple[int, str]:
    """Offline first, then not accepting, failed orders, paper out, POS or printer degraded, open alerts, the rest.

    Within a group, by venue id: a row does not jump around while its state stays the same.
    """
    needs = row.needs
    return (NEEDS.index(needs[0]) if needs else len(NEEDS)), row.venue


def matches(row: VenueRow, states: tuple[str, ...] = (), venues: tuple[str, ...] = ()) -> bool:
    """Whether ``row`` passes the filters: any of ``states`` (names in FILTERS) and any glob of ``venues``."""
    if venues and not any(fnmatch.fnmatchcase(row.venue, pattern) for pattern in venues):
        return False
    if not states:
        return True
    needs = row.needs
    return any(
        (s in needs) or (s == "attention" and bool(needs)) or (s == "ok" and not needs and row.state == "online")
        for s in states
    )


class Fleet:
    """Per-venue rows folded from ``{prefix}/+/status|health|availability|alerts|events``; pure, no I/O."""

    def __init__(self, prefix: str = "venues") -> None:
        self.prefix = prefix.rstrip("/")
        self.venues: dict[str, VenueRow] = {}
        self.ignored = 0
        self.messages = 0
        # Set by the MQTT edge while it is subscribed; the model itself never does I/O.
        self.connected = False

    def apply(self, topic: str, payload: bytes | bytearray | str, *, now: float) -> str | None:
        """Fold one message received at ``now`` (epoch s); return its kind, or None when it was unusable (counted)."""
        parsed = self._parse_topic(topic)
        message = _decode(payload) if parsed is not None else None
        if parsed is None or message is None:
            self.ignored += 1
            return None
        self.messages += 1
        venue, kind = parsed
        row = self.venues.get(venue)
        if row is None:
            row = self.venues[venue] = VenueRow(venue)
        row.last_seen = now if row.last_seen is None else max(row.last_seen, now)
        if kind == "status":
            _status(row, message, now)
        elif kind == "health":
            _health(row, message)
        elif kind == "availability":
            _availability(row, message)
        elif kind == "alerts":
            _alert(row, message, now)
        else:
            _event(row, message)
        return kind

    def rows(self, states: tuple[str, ...] = (), venues: tuple[str, ...] = ()) -> list[VenueRow]:
        """Return the venues that pass the filters (see ``matches``), most in need of a human first."""
        return sorted((r for r in self.venues.values() if matches(r, states, venues)), key=sort_key)

    def counts(self) -> dict[str, int]:
        """Return how many venues are known, online, and in each of ``NEEDS``."""
        counts = {"venues": len(self.venues), "online": 0} | dict.fromkeys(NEEDS, 0)
        for row in self.venues.values():
            counts["online"] += row.state == "online"
            for need in row.needs:
                counts[need] += 1
        return counts

    def _parse_topic(self, topic: str) -> tuple[str, str] | None:
        head = self.prefix + "/"
        if not topic.startswith(head):
            return None
        parts = topic[len(head) :].split("/")
        if len(parts) != 2 or not parts[0] or parts[1] not in KINDS:
            return None
        return parts[0], parts[1]


def _status(row: VenueRow, message: dict[str, Any], now: float) -> None:
    state = message.get("state")
    if state not in ("online", "offline"):
        return
    boot_id = _str_or_none(message.get("boot_id"))
    seq = _int_or_none(message.get("seq"))
    same_boot = boot_id is not None and boot_id == row.boot_id
    if same_boot and seq is not None and row.seq is not None and seq < row.seq:
        return  # an older connection of this boot (a late Will or a stale birth)
    if state == "offline" and row.state == "online" and boot_id is not None and not same_boot:
        return  # a Will from an earlier boot delivered after the new birth
    if state == "online" and (boot_id != row.boot_id or seq != row.seq or row.state != "online"):
        row.alerts = []  # alerts are counted per connection: a new birth starts a clean slate
    if state == "offline" and row.state == "online":
        row.offline_seen = now
    elif state == "online":
        row.offline_seen = None
    row.state = state
    row.since = _str_or_none(message.get("since"))
    row.version = _str_or_none(message.get("version")) or row.version
    row.boot_id = boot_id if boot_id is not None else row.boot_id
    row.seq = seq


def _health(row: VenueRow, message: dict[str, Any]) -> None:
    outbox = message.get("outbox")
    if isinstance(outbox, dict):
        row.outbox = {str(k): v for k, v in outbox.items() if isinstance(v, int)}
    age = message.get("oldest_pending_age_s")
    row.oldest_pending_age_s = float(age) if isinstance(age, int | float) else None
    pos = message.get("pos")
    row.pos = dict(pos) if isinstance(pos, dict) else {}
    printers = message.get("printers")
    if isinstance(printers, list):
        row.printers = {str(p.get("name", "?")): str(p.get("state", "?")) for p in printers if isinstance(p, dict)}
    disk = message.get("disk_free_mb")
    row.disk_free_mb = float(disk) if isinstance(disk, int | float) else None
    row.health_ts = _str_or_none(message.get("ts"))
    row.version = _str_or_none(message.get("version")) or row.version
    # What health shows to be over closes the alerts that reported it.
    ok_printers = {name for name, state in row.printers.items() if state == "ok"}
    pos_ok = row.pos.get("state") == "ok"
    row.alerts = [
        a
        for a in row.alerts
        if not (a.name in PRINTER_ALERTS and a.printer in ok_printers) and not (a.name in POS_ALERTS and pos_ok)
    ]


def _availability(row: VenueRow, message: dict[str, Any]) -> None:
    accepting = message.get("accepting")
    if not isinstance(accepting, bool):
        return
    seq = _int_or_none(message.get("seq"))
    since = _str_or_none(message.get("since"))
    # An older message is ignored; a restarted agent starts its seq again, and says so with a new ``since``.
    if (
        seq is not None
        and row.availability_seq is not None
        and seq < row.availability_seq
        and since == row.availability_since
    ):
        return
    row.accepting = accepting
    row.availability_reason = _str_or_none(message.get("reason"))
    row.availability_since = since
    row.availability_seq = seq


def _alert(row: VenueRow, message: dict[str, Any], now: float) -> None:
    order = message.get("order")
    order = order if isinstance(order, dict) else {}
    alert = OpenAlert(
        at=epoch(message.get("ts")) or now,
        name=_str_or_none(message.get("alert")) or "?",
        severity=_str_or_none(message.get("severity")) or "?",
        reason=_str_or_none(message.get("reason")) or "",
        action=_str_or_none(message.get("action")) or "",
        order_id=_str_or_none(order.get("id")),
        display_code=_str_or_none(order.get("display_code")),
        printer=_str_or_none(message.get("printer")),
    )
    row.alerts = sorted([*row.alerts, alert], key=lambda a: a.at)[-MAX_OPEN_ALERTS:]


def _event(row: VenueRow, message: dict[str, Any]) -> None:
    state = message.get("state")
    kind = message.get("type")
    if state == "injected" and kind == "injected":
        row.injected_total += 1
    elif state == "failed" and kind == "failed":
        row.failed_total += 1
    order_id = message.get("order_id")
    if isinstance(order_id, str) and isinstance(state, str):
        # An order that left ``failed`` (re-submitted, cancelled, injected) no longer needs the human its alert
        # asked for; a fallback ticket's alert stays until the order is in the POS or finished with.
        row.alerts = [
            a
            for a in row.alerts
            if not (
                a.order_id == order_id
                and a.name in ORDER_ALERTS
                and (state in ORDER_DONE or (a.name == "order_failed" and state != "failed"))
            )
        ]
    elif kind in ("printer_recovered", "printers_recovered"):
        detail = message.get("detail")
        printer = detail.get("printer") if isinstance(detail, dict) else None
        row.alerts = [a for a in row.alerts if not (a.name in PRINTER_ALERTS and a.printer == printer)]


def _decode(payload: bytes | bytearray | str) -> dict[str, Any] | None:
    try:
        value = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _str_or_none(value: object) -> str | None:
    return str(value) if value is not None else None


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def state_since(row: VenueRow) -> float | None:
    """When the venue entered its current state (epoch s): its ``since``, or when the console saw it go offline."""
    since = epoch(row.since)
    if row.offline_seen is not None and (since is None or row.offline_seen > since):
        return row.offline_seen
    return since


def epoch(value: object) -> float | None:
    """Return an ISO 8601 time as epoch seconds (naive means UTC); None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
