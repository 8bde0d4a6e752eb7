"""Lightspeed K-Series notifications (docs/lightspeed-k.md): one handler for the HTTP webhook and the MQTT relay.

An order the POS accepted waits in ``awaiting_pos`` until a notification says SUCCESS (injected, with the
POS's account id as reference) or FAILURE (failed, classified from the reason; a sold-out item is
snoozed). A notification for an order this agent does not know is logged and ignored; a replay of one
already applied changes nothing. ``SALES_RESTRICTION_UPDATED`` (type ITEM) notifications snooze or release
SKUs of this venue's business location; another location's are logged and ignored (one webhook endpoint may
serve several locations). ``ONLINE_ORDER_READINESS`` (type ORDER_API) notifications update the circuit at once:
NOT_READY opens it, READY closes it; one older than the last applied (``lastUpdatedAt``) is ignored.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from agent.dispatch.dispatcher import Dispatcher
from agent.domain.clock import Clock
from agent.domain.config import Settings
from agent.domain.states import State
from agent.outbox import snoozes
from agent.outbox.records import OrderRecord
from agent.outbox.store import Outbox
from drivers.pos.base import Injected, Permanent
from drivers.pos.errors import NotificationInvalid
from drivers.pos.lightspeed_mapping import third_party_reference
from drivers.pos.lightspeed_notifications import (
    classify_readiness,
    classify_restriction,
    classify_webhook,
    notification_type,
)

log = structlog.get_logger("venue_agent.webhooks")

# States in which a confirmation can still change the order; anything else has been decided already.
_OPEN = (State.SENDING, State.AWAITING_POS)


class WebhookInvalid(ValueError):
    """The body is not a K-Series notification this agent understands."""


@dataclass(frozen=True)
class WebhookResult:
    """What a notification did: ``applied``, ``duplicate``, ``ignored``, ``snoozed`` or ``readiness``, and to which
    order (for ``readiness``, ``state`` is the circuit's state after it)."""

    status: str
    order_id: str | None = None
    state: str | None = None

    def as_json(self) -> dict[str, Any]:
        """Return the answer body for the webhook caller (and the MQTT command reply)."""
        return {"status": self.status, "order_id": self.order_id, "state": self.state}


class LightspeedWebhooks:
    """Applies K-Series notifications to the outbox through the dispatcher."""

    def __init__(self, *, outbox: Outbox, dispatcher: Dispatcher, settings: Settings, clock: Clock) -> None:
        self.outbox = outbox
        self.dispatcher = dispatcher
        self.settings = settings
        self.clock = clock
        location = settings.pos.lightspeed_k.business_location_id if settings.pos.lightspeed_k else None
        self.business_location_id = location
        self._readiness_as_of: datetime | None = None

    async def handle(self, payload: object) -> WebhookResult:
        """Apply one notification; raise ``WebhookInvalid`` for a body that is not one."""
        if isinstance(payload, list):
            return await self._restriction(payload)
        try:
            kind = notification_type(payload)
        except NotificationInvalid as exc:
            raise WebhookInvalid(str(exc)) from None
        if kind in ("ITEM", "SALES_RESTRICTION_UPDATED"):
            return await self._restriction(payload)
        if kind == "ORDER_API":
            return await self._readiness(payload)
        if kind != "ORDER":
            # Payment and other notifications carry nothing the agent acts on; answering 200 stops redelivery.
            log.info("webhook_ignored", type=kind)
            return WebhookResult("ignored")
        if not isinstance(payload, dict):
            raise WebhookInvalid("expected one notification object")
        try:
            outcome = classify_webhook(payload)
        except NotificationInvalid as exc:
            raise WebhookInvalid(str(exc)) from None
        record = await self._find(outcome.third_party_reference)
        if record is None:
            log.warning("webhook_unknown_reference", reference=outcome.third_party_reference, status=outcome.status)
            return WebhookResult("ignored")
        # Classified again with the order's SKUs, so a sold-out reason can name the item to snooze.
        outcome = classify_webhook(payload, tuple(_skus(record)))
        if outcome.status == "SUCCESS":
            if record.state is State.INJECTED:
                return WebhookResult("duplicate", record.id, record.state.value)
            if record.state not in (*_OPEN, State.FAILED, State.QUEUED, State.RETRYING):
                log.warning("webhook_success_for_closed_order", order_id=record.id, state=record.state.value)
                return WebhookResult("ignored", record.id, record.state.value)
            # The POS has the order: a late SUCCESS after the confirm timeout, or one for an order whose first
            # answer was lost and that waits for a resend, still makes it injected.
            updated = await self.dispatcher.apply(record, Injected(pos_reference=outcome.pos_reference))
            log.info("webhook_applied", order_id=record.id, status="SUCCESS", pos_reference=outcome.pos_reference)
            return WebhookResult("applied", record.id, updated.state.value)
        if outcome.status == "FAILURE":
            if record.state not in _OPEN:
                return WebhookResult("duplicate", record.id, record.state.value)
            assert outcome.error_class is not None
            result = Permanent(outcome.error_class, outcome.reason, skus=tuple(outcome.skus))
            updated = await self.dispatcher.apply(record, result)
            log.warning("webhook_applied", order_id=record.id, status="FAILURE", reason=outcome.reason)
            return WebhookResult("applied", record.id, updated.state.value)
        log.info("webhook_ignored", order_id=record.id, status=outcome.status)
        return WebhookResult("ignored", record.id, record.state.value)

    async def _restriction(self, payload: object) -> WebhookResult:
        try:
            changes = classify_restriction(payload)
        except NotificationInvalid as exc:
            raise WebhookInvalid(str(exc)) from None
        now = self.clock.now()
        ours = [c for c in changes if c.business_location_id in (None, self.business_location_id)]
        others = [c for c in changes if c not in ours]
        if others:
            # Another venue's stock (a webhook endpoint shared by several locations): not ours to snooze.
            log.info(
                "webhook_other_location",
                type="ITEM",
                skus=[c.sku for c in others],
                business_location_ids=sorted({c.business_location_id for c in others if c.business_location_id}),
                ours=self.business_location_id,
            )
        if not ours:
            return WebhookResult("ignored")
        restricted = [c.sku for c in ours if c.unavailable]
        released = [c.sku for c in ours if not c.unavailable]
        until = snoozes.snooze_until(now, self.settings.venue.tz)

        def apply(c: sqlite3.Connection) -> None:
            snoozes.snooze(c, restricted, until=until, source="lightspeed", reason="restricted in the POS", now=now)
            if released:
                snoozes.clear(c, released, now=now, source="lightspeed")

        await self.outbox.write(apply)
        log.info("webhook_restrictions", restricted=restricted, released=released)
        return WebhookResult("snoozed")

    async def _readiness(self, payload: object) -> WebhookResult:
        try:
            notice = classify_readiness(payload)
        except NotificationInvalid as exc:
            raise WebhookInvalid(str(exc)) from None
        if notice.business_location_id not in (None, self.business_location_id):
            log.info(
                "webhook_other_location",
                type="ORDER_API",
                business_location_id=notice.business_location_id,
                ours=self.business_location_id,
            )
            return WebhookResult("ignored")
        as_of = notice.last_updated_at
        if as_of is not None and self._readiness_as_of is not None and as_of < self._readiness_as_of:
            # Delivered out of order: a newer readiness was already applied.
            log.info("webhook_readiness_stale", last_updated_at=as_of.isoformat(), ready=notice.ready)
            return WebhookResult("ignored")
        if as_of is not None:
            self._readiness_as_of = as_of
        state = await self.dispatcher.readiness_pushed(
            ready=notice.ready, detail=notice.detail, conditions=notice.conditions
        )
        log.info("webhook_readiness", ready=notice.ready, detail=notice.detail, circuit=state)
        return WebhookResult("readiness", state=state)

    async def _find(self, reference: str) -> OrderRecord | None:
        def query(c: sqlite3.Connection) -> OrderRecord | None:
            row = c.execute("SELECT * FROM orders WHERE idempotency_key = ?", (reference,)).fetchone()
            if row is not None:
                return OrderRecord.from_row(row)
            # A key longer than 48 characters was shortened; look among the orders a notification can concern.
            marks = ", ".join("?" * 4)
            states = (State.SENDING.value, State.AWAITING_POS.value, State.FAILED.value, State.INJECTED.value)
            for candidate in c.execute(
                f"SELECT * FROM orders WHERE state IN ({marks}) ORDER BY received_at DESC LIMIT 5000",  # noqa: S608
                states,
            ):
                if third_party_reference(candidate["idempotency_key"]) == reference:
                    return OrderRecord.from_row(candidate)
            return None

        return await self.outbox.read(query)


def _skus(record: OrderRecord) -> list[str]:
    found: list[str] = []
    for item in record.order.items:
        if item.sku:
            found.append(item.sku)
        stack = list(item.modifiers)
        while stack:
            modifier = stack.pop()
            if modifier.sku:
                found.append(modifier.sku)
            stack.extend(modifier.modifiers)
    return found
