"""One simulated venue for ``fleet-sim``: orders, faults and what a real agent would publish about them. Pure code.

A ``SimVenue`` is advanced by ``tick(now)`` with a seeded ``random.Random``; it returns the messages a real agent
would publish (docs/mqtt.md), built with the agent's own alert texts, and answers commands as ``agent.mqtt.commands``
does. Its orders are not durable, and its health, availability and events are those of a simplified agent: orders
are received, then injected, failed, retried while the POS is down, or printed as fallback tickets.
"""

from __future__ import annotations

import random
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent import __version__
from agent.dispatch import alerts
from agent.domain.availability import OK, POS_DOWN_PRINTING_FALLBACK
from agent.domain.models import Order
from agent.domain.states import ErrorClass

OUTBOX_STATES = ("held", "scheduled", "queued", "retrying", "awaiting_pos", "failed")
PENDING = frozenset({"queued", "retrying"})
KEEP_ORDERS = 200
PRINTERS = ("kitchen", "bar")
MENU = (
    ("Margherita", "PZ-MARG", 950),
    ("Fries", "SD-FRY", 350),
    ("Lemonade", "DR-LEM", 300),
    ("Tiramisu", "DS-TIR", 550),
)
NAMES = ("Sam Reed", "Ana Silva", "Jo Park", "Lee Wong", "Max Berg", "Priya Shah")


@dataclass(frozen=True)
class Rates:
    """How often things happen at one venue (per hour) and how long they last (seconds, low and high)."""

    health_interval: float = 30.0
    orders_per_hour: float = 12.0
    inject_seconds: tuple[float, float] = (0.5, 3.0)
    fail_ratio: float = 0.02
    offline_per_hour: float = 0.1
    offline_seconds: tuple[float, float] = (30.0, 300.0)
    paper_out_per_hour: float = 0.1
    paper_out_seconds: tuple[float, float] = (120.0, 900.0)
    pos_down_per_hour: float = 0.05
    pos_down_seconds: tuple[float, float] = (60.0, 600.0)
    print_after_seconds: float = 60.0
    debounce_seconds: float = 30.0


@dataclass(frozen=True)
class Publish:
    """One message to publish under the venue's prefix: ``kind`` is the last topic level."""

    kind: str
    payload: dict[str, Any]
    retain: bool = False


@dataclass
class SimOrder:
    """An order as the simulated outbox holds it."""

    order: Order
    state: str
    received: float
    due: float
    error_class: str | None = None
    printed: bool = False
    reprints: int = 0


def iso(epoch: float) -> str:
    """Return ``epoch`` as ISO 8601 UTC with microseconds, as the agent writes times."""
    return datetime.fromtimestamp(epoch, UTC).isoformat()


@dataclass
class SimVenue:
    """A light simulated agent; every method takes the time, so tests drive it without sleeping."""

    venue: str
    rng: random.Random
    rates: Rates
    started: float
    boot_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    births: int = 0
    since: str = ""
    pos_state: str = "ok"
    pos_until: float = 0.0
    printers: dict[str, str] = field(default_factory=lambda: dict.fromkeys(PRINTERS, "ok"))
    printer_until: dict[str, float] = field(default_factory=dict)
    orders: OrderedDict[str, SimOrder] = field(default_factory=OrderedDict)
    offline_until: float = 0.0
    health_seq: int = 0
    event_seq: int = 0
    next_health: float = 0.0
    last_tick: float | None = None
    last_injected: float | None = None
    accepting: bool = True
    availability_seq: int = 0
    availability_since: str = ""
    candidate: tuple[bool, float] | None = None
    order_no: int = 0

    # ---- connection ------------------------------------------------------------------------------

    def status(self, state: str) -> dict[str, Any]:
        """Return the ``P/status`` body, as the reporter builds it (the Will is ``status('offline')``)."""
        return {
            "state": state,
            "since": self.since,
            "version": __version__,
            "boot_id": self.boot_id,
            "seq": self.births,
        }

    def begin(self, now: float) -> dict[str, Any]:
        """Start a connection attempt at ``now``; return the Will (the retained ``offline`` status) to connect with."""
        self.births += 1
        self.since = iso(now)
        return self.status("offline")

    def birth(self, now: float) -> list[Publish]:
        """Return what an agent publishes right after CONNACK: birth, availability, health."""
        if not self.availability_since:
            self.availability_since = iso(now)
            self.availability_seq = 1
            # Real agents started at different times: their health falls anywhere in the interval, not in step.
            self.next_health = now + self.rng.uniform(0, self.rates.health_interval)
        else:
            self.next_health = now + self.rates.health_interval
        return [
            Publish("status", self.status("online"), retain=True),
            Publish("availability", self.availability(), retain=True),
            self.health(now),
        ]

    def wants_offline(self, now: float) -> bool:
        """Whether the connection should drop now (a venue losing its internet); sets how long it stays away."""
        if self.rng.random() < _chance(self.rates.offline_per_hour, self._dt(now)):
            self.offline_until = now + self.rng.uniform(*self.rates.offline_seconds)
            return True
        return False

    # ---- time passes -----------------------------------------------------------------------------

    def tick(self, now: float) -> list[Publish]:
        """Advance to ``now``: faults start and end, orders arrive and move; return what to publish."""
        dt = self._dt(now)
        self.last_tick = now
        out: list[Publish] = []
        changed = self._faults(now, dt, out)
        if self.rng.random() < _chance(self.rates.orders_per_hour, dt):
            self._new_order(now, out)
        self._progress(now, out)
        self._availability(now, out)
        if changed or now >= self.next_health:
            out.append(self.health(now))
            self.next_health = now + self.rates.health_interval
        return out

    def _dt(self, now: float) -> float:
        return 0.0 if self.last_tick is None else max(0.0, now - self.last_tick)

    def _faults(self, now: float, dt: float, out: list[Publish]) -> bool:
        changed = False
        for name, state in self.printers.items():
            if state == "ok" and self.rng.random() < _chance(self.rates.paper_out_per_hour, dt):
                self.set_printer(
                    name, "paper_out", now, out, until=now + self.rng.uniform(*self.rates.paper_out_seconds)
                )
                changed = True
            elif state != "ok" and now >= self.printer_until.get(name, 0.0):
                self.set_printer(name, "ok", now, out)
                changed = True
        if self.pos_state == "ok" and self.rng.random() < _chance(self.rates.pos_down_per_hour, dt):
            self.set_pos("down", now, out, until=now + self.rng.uniform(*self.rates.pos_down_seconds))
            changed = True
        elif self.pos_state != "ok" and now >= self.pos_until:
            self.set_pos("ok", now, out)
            changed = True
        return changed

    def set_printer(self, name: str, state: str, now: float, out: list[Publish], *, until: float = 0.0) -> None:
        """Put printer ``name`` in ``state`` (until ``until``), with the agent's alert or recovery event."""
        before = self.printers[name]
        self.printers[name] = state
        self.printer_until[name] = until
        if state == "ok":
            out.append(self.event(now, "printer_recovered", detail={"printer": name}))
            return
        out.append(
            self.event(now, "component_changed", detail={"component": f"printer:{name}", "from": before, "to": state})
        )
        others = [p for p, s in self.printers.items() if s == "ok" and p != name]
        payload = alerts.printer_problem(name, state, "out of paper", covered_by=others[0] if others else None)
        severity = "warning" if others else "critical"
        out.extend(self.alert(now, alerts.printer_alert_name(state), severity, payload))

    def set_pos(self, state: str, now: float, out: list[Publish], *, until: float = 0.0) -> None:
        """Put the POS link in ``state`` (until ``until``), with the agent's alert or event."""
        before, self.pos_state, self.pos_until = self.pos_state, state, until
        out.append(self.event(now, "component_changed", detail={"component": "pos", "from": before, "to": state}))
        if state == "down":
            out.extend(self.alert(now, "pos_down", "critical", alerts.pos_down("square", "connection refused")))
        elif state == "auth_required":
            payload = alerts.pos_auth_required("square", "401 Unauthorized")
            out.extend(self.alert(now, "pos_auth_required", "critical", payload))

    # ---- orders ----------------------------------------------------------------------------------

    def _new_order(self, now: float, out: list[Publish]) -> None:
        self.order_no += 1
        order_id = f"ord_{self.venue}_{self.boot_id[:4]}_{self.order_no}"
        items = self.rng.sample(MENU, self.rng.randint(1, 3))
        total = sum(price for _, _, price in items)
        order = Order.model_validate(
            {
                "schema_version": 1,
                "id": order_id,
                "venue_id": self.venue,
                "source": "web",
                "display_code": f"W{self.order_no:04d}",
                "created_at": iso(now),
                "fulfillment": {"type": "pickup"},
                "customer": {"name": self.rng.choice(NAMES)},
                "items": [{"name": n, "sku": s, "quantity": 1, "unit_price": p} for n, s, p in items],
                "payment": {"status": "paid", "method": "card", "amount": total, "currency": "GBP"},
                "total": total,
            }
        )
        due = now + self.rng.uniform(*self.rates.inject_seconds)
        self.orders[order_id] = SimOrder(order, "queued", now, due)
        while len(self.orders) > KEEP_ORDERS:
            self.orders.popitem(last=False)
        out.append(self.event(now, "received", order_id, "queued", detail={"due_at": iso(now)}))

    def _progress(self, now: float, out: list[Publish]) -> None:
        for order_id, o in self.orders.items():
            if o.state not in PENDING or now < o.due:
                continue
            code = o.order.display_code or order_id
            if self.pos_state != "ok":
                if o.state == "queued":
                    o.state = "retrying"
                    out.append(self.event(now, "retrying", order_id, "retrying", "outage", {"error": "POS down"}))
                o.due = now + 5.0
                if not o.printed and now - o.received >= self.rates.print_after_seconds and self._printer_ok():
                    o.printed = True
                    out.append(self.event(now, "printed", order_id, detail={"kind": "fallback", "reprint_no": 0}))
                    payload = alerts.fallback_printed(
                        o.order,
                        display_code=code,
                        reason="the POS did not take it in time",
                        after_print="inject_marked",
                    )
                    out.extend(self.alert(now, "fallback_printed", "warning", payload, order_id))
            elif self.rng.random() < self.rates.fail_ratio:
                o.state, o.error_class = "failed", ErrorClass.REJECTED.value
                out.append(self.event(now, "failed", order_id, "failed", o.error_class, {"error": "tax rate missing"}))
                payload = alerts.order_failed(
                    o.order, display_code=code, error_class=ErrorClass.REJECTED, reason="POS refused: tax rate missing"
                )
                out.extend(self.alert(now, "order_failed", "critical", payload, order_id))
            else:
                o.state = "injected"
                self.last_injected = now
                out.append(
                    self.event(now, "injected", order_id, "injected", detail={"pos_order_id": f"pos-{order_id}"})
                )

    def _printer_ok(self) -> bool:
        return any(s == "ok" for s in self.printers.values())

    # ---- availability ----------------------------------------------------------------------------

    def can_take_orders(self) -> bool:
        """Whether an order taken now could reach the POS or paper (``P/availability``, docs/availability.md)."""
        return self.pos_state == "ok" or self._printer_ok()

    def availability(self) -> dict[str, Any]:
        """Return the retained ``P/availability`` body."""
        if self.accepting:
            reason = OK if self.pos_state == "ok" else POS_DOWN_PRINTING_FALLBACK
        else:
            reason = f"pos_{self.pos_state}_and_no_printer"
        return {
            "accepting": self.accepting,
            "reason": reason,
            "since": self.availability_since,
            "seq": self.availability_seq,
        }

    def _availability(self, now: float, out: list[Publish]) -> None:
        """Publish a pause once it has lasted ``debounce_seconds`` (since = when it began), a resume at once."""
        value = self.can_take_orders()
        if value == self.accepting:
            self.candidate = None
            return
        if self.candidate is None or self.candidate[0] != value:
            self.candidate = (value, now)
        if value or now - self.candidate[1] >= self.rates.debounce_seconds:
            self.accepting, self.availability_since, self.candidate = value, iso(self.candidate[1]), None
            self.availability_seq += 1
            out.append(Publish("availability", self.availability(), retain=True))

    # ---- reports ---------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Return the outbox counts by state, as health reports them."""
        counts = dict.fromkeys(OUTBOX_STATES, 0)
        for o in self.orders.values():
            if o.state in counts:
                counts[o.state] += 1
        return counts

    def health(self, now: float) -> Publish:
        """Return the retained ``P/health`` message (its ``seq`` grows by one)."""
        self.health_seq += 1
        pending = [o.received for o in self.orders.values() if o.state in PENDING]
        body = {
            "ts": iso(now),
            "ready": True,
            "uptime_s": round(now - self.started, 1),
            "version": __version__,
            "outbox": self.counts() | {"sending": 0},
            "oldest_pending_age_s": round(now - min(pending), 1) if pending else None,
            "last_injected_at": iso(self.last_injected) if self.last_injected else None,
            "pos": {
                "driver": "square",
                "state": self.pos_state,
                "latency_ms": 180 if self.pos_state == "ok" else None,
                "circuit": "closed" if self.pos_state == "ok" else "open",
                "last_error": None if self.pos_state == "ok" else "connection refused",
                "conditions": [],
            },
            "printers": [
                {
                    "name": n,
                    "state": s,
                    "detail": None if s == "ok" else "out of paper",
                    "confirmation": "confirmed",
                    "confirmed_by": "dle_eot",
                }
                for n, s in self.printers.items()
            ],
            "disk_free_mb": 5120.0,
            "db_size_mb": 1.25,
            "storage": {
                "outbox_id": self.venue,
                "integrity": "ok",
                "integrity_checked_at": None,
                "integrity_detail": None,
            },
            "rss_mb": 61.0,
            "seq": self.health_seq,
        }
        return Publish("health", body, retain=True)

    def event(
        self,
        now: float,
        kind: str,
        order_id: str | None = None,
        state: str | None = None,
        error_class: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> Publish:
        """Return one ``P/events`` message (its ``seq`` grows by one, like the outbox's events table)."""
        self.event_seq += 1
        body = {
            "seq": self.event_seq,
            "ts": iso(now),
            "type": kind,
            "order_id": order_id,
            "state": state,
            "error_class": error_class,
            "detail": detail,
        }
        return Publish("events", body)

    def alert(
        self, now: float, name: str, severity: str, payload: dict[str, Any], order_id: str | None = None
    ) -> list[Publish]:
        """Return the alert and the ``alert`` event the agent records with it (events are forwarded first)."""
        event = self.event(now, "alert", order_id, detail={"alert": name, "severity": severity})
        return [event, Publish("alerts", {"ts": iso(now), "alert": name, "severity": severity, **payload})]


def _chance(per_hour: float, dt: float) -> float:
    """Return the probability that an event happening ``per_hour`` times an hour happens within ``dt`` seconds."""
    return per_hour * dt / 3600.0
