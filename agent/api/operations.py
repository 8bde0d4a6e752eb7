"""What can be done to orders, once, for every channel: the HTTP API, the CLI and (later) MQTT commands."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, ValidationError

from agent.dispatch.dispatcher import Dispatcher
from agent.domain.config import Settings
from agent.domain.errors import FieldError, OrderInvalid, OrderNotFound
from agent.domain.models import Money, Order, Text, field_errors, parse_order
from agent.domain.states import Placement, State, place
from agent.outbox import intake, print_jobs, snoozes
from agent.outbox.intake import SubmitResult
from agent.outbox.records import OrderRecord, order_detail, order_listing
from agent.outbox.store import Outbox
from agent.printing.worker import PrintWorker

log = structlog.get_logger("venue_agent.orders")


class PaymentUpdate(BaseModel):
    """The body of ``POST /v1/orders/{id}/payment``."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    status: Literal["paid"]
    # The order's own field types, so a payment that is accepted here is valid once merged into the order.
    method: Text | None = None
    amount: Money | None = None


@dataclass
class Orders:
    """The order operations, wired to the outbox, the dispatcher and the print worker."""

    settings: Settings
    outbox: Outbox
    dispatcher: Dispatcher
    printer: PrintWorker

    def base_key(self, order_id: str) -> str:
        """Return the idempotency key of an order's first revision (stable across every attempt)."""
        return f"{self.settings.venue.id}:{order_id}"

    def placement(self, order: Order) -> Placement:
        """Decide where an order starts, by the injection settings."""
        inj = self.settings.injection
        return place(
            order,
            now=self.outbox.clock.now(),
            hold_unpaid=inj.hold_unpaid,
            buffered=inj.preorders == "buffered",
            buffer_minutes=inj.buffer_minutes,
        )

    def parse(self, data: object) -> Order:
        """Validate a decoded payload as an order for this venue (raises OrderInvalid)."""
        return parse_order(data, venue_id=self.settings.venue.id, currency=self.settings.venue.currency)

    async def submit(self, data: object) -> SubmitResult:
        """Validate and store a new order durably, then wake the dispatcher."""
        order = self.parse(data)
        result = await self.outbox.submit(order, self.placement(order), key=self.base_key(order.id))
        if result.duplicate:
            log.info("order_duplicate", order_id=order.id, state=result.state.value)
        else:
            log.info(
                "order_received",
                order_id=order.id,
                state=result.state.value,
                source=order.source,
                fulfillment=order.fulfillment.type.value,
                preorder=order.is_preorder,
            )
            self.dispatcher.wake()
        return result

    async def replace(self, order_id: str, data: object) -> OrderRecord:
        """Replace an order the POS does not have yet (a reprint follows if it was printed)."""
        order = self.parse(data)
        if order.id != order_id:
            raise OrderInvalid([FieldError(("id",), f"must equal the id in the URL ({order_id!r})")])
        if await self.outbox.get(order_id) is None:
            raise OrderNotFound(order_id)
        record, reprint = await self.outbox.replace(order, self.placement(order), base_key=self.base_key(order_id))
        log.info("order_modified", order_id=order_id, state=record.state.value, revision=record.revision)
        self.dispatcher.wake()
        if reprint:
            self.printer.wake()
        return record

    async def pay(self, order_id: str, data: object) -> OrderRecord:
        """Mark an order paid; a held order then proceeds."""
        try:
            update = PaymentUpdate.model_validate(data)
        except ValidationError as exc:
            raise OrderInvalid(field_errors(exc)) from None
        payment = update.model_dump(exclude_none=True)
        now = self.outbox.clock.now()
        record = await self.outbox.write(
            lambda c: intake.mark_paid(c, order_id, payment, now=now, place_again=self.placement)
        )
        log.info("order_paid", order_id=order_id, state=record.state.value)
        self.dispatcher.wake()
        return record

    async def cancel(self, order_id: str) -> OrderRecord:
        """Cancel an order the POS does not have."""
        now = self.outbox.clock.now()
        record = await self.outbox.write(lambda c: intake.cancel(c, order_id, now=now))
        log.info("order_cancelled", order_id=order_id)
        self.printer.wake()
        return record

    async def resubmit(self, order_id: str) -> OrderRecord:
        """Queue a failed order again, attempts reset."""
        now = self.outbox.clock.now()
        record = await self.outbox.write(lambda c: intake.resubmit(c, order_id, now=now))
        log.info("order_resubmitted", order_id=order_id)
        self.dispatcher.wake()
        return record

    async def reprint(self, order_id: str) -> int:
        """Print the ticket again, marked REPRINT n; return n."""
        now = self.outbox.clock.now()
        number = await self.outbox.write(lambda c: print_jobs.request_reprint(c, order_id, now=now))
        log.info("order_reprint_requested", order_id=order_id, reprint_no=number)
        self.printer.wake()
        return number

    async def detail(self, order_id: str) -> dict[str, Any]:
        """Return the order, its state, attempts, errors, POS reference, tickets and history."""
        record = await self.outbox.get(order_id)
        if record is None:
            raise OrderNotFound(order_id)
        return order_detail(record, await self.outbox.print_jobs(order_id), await self.outbox.history(order_id))

    async def list(self, *, state: State | None, limit: int) -> list[dict[str, Any]]:
        """Return orders newest first with their life-cycle summary and the essentials of the order."""
        return [order_listing(r) for r in await self.outbox.list_orders(state=state, limit=limit)]

    async def clear_snoozes(self, skus: Sequence[str] | None) -> Sequence[str]:
        """Release the snoozed SKUs (all with None); return those that were snoozed."""
        now = self.outbox.clock.now()
        cleared = await self.outbox.write(lambda c: snoozes.clear(c, skus, now=now, source="technician"))
        if cleared:
            log.info("snoozes_cleared", skus=cleared)
        return cleared


__all__ = ["Orders", "PaymentUpdate", "State"]
