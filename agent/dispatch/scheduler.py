"""The dispatcher's scheduler loop: pre-orders and retries coming due, confirm timeouts, the 24 h limit, fallbacks."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import structlog

from agent.dispatch import alerts
from agent.dispatch.circuit import CircuitState
from agent.dispatch.core import IDLE_SECONDS, DispatcherCore
from agent.dispatch.fallback import fallback_reason
from agent.domain.errors import OrderConflict, StorageError
from agent.domain.states import ErrorClass, State
from agent.outbox import events, print_jobs, transitions
from agent.outbox.records import OrderRecord

log = structlog.get_logger("venue_agent.dispatcher")

MAX_WAIT_AFTER_DUE = timedelta(hours=24)
SCHEDULER_TICK_SECONDS = 1.0


class Scheduler(DispatcherCore):
    """The ``scheduler`` task: one round of duties, then asleep until the next is due or it is woken."""

    # ---- scheduler ---------------------------------------------------------------------------

    async def run_scheduler(self) -> None:
        """Once a second while orders are on their way, else when the next one is due, or when woken."""
        while not self._stopping:
            self._mark("scheduler")
            self._scheduler_wake.clear()
            pause = SCHEDULER_TICK_SECONDS
            try:
                await self.tick()
                pause = await self._scheduler_pause()
            except StorageError as exc:  # a full disk must not end the loop: the next tick tries again
                log.error("scheduler_tick_failed", error=str(exc))
            sleeper = asyncio.ensure_future(self.clock.sleep(pause))
            waker = asyncio.ensure_future(self._scheduler_wake.wait())
            try:
                await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for future in (sleeper, waker):
                    future.cancel()

    async def _scheduler_pause(self) -> float:
        """Return how long the scheduler may sleep: a second while anything is in motion, else until the next due."""
        if self.paused or self.pos.not_ready or self.circuit.state is not CircuitState.CLOSED:
            return SCHEDULER_TICK_SECONDS
        busy, next_due = await self.outbox.idle_until()
        if busy:
            return SCHEDULER_TICK_SECONDS
        if next_due is None:
            return IDLE_SECONDS
        return min(IDLE_SECONDS, max(0.01, (next_due - self.clock.now()).total_seconds()))

    async def tick(self) -> None:
        """Run one round of the scheduler's duties."""
        now = self.clock.now()
        release, self._release_retries = self._release_retries and not self.paused, False
        moved = await self.outbox.write(
            lambda c: transitions.promote(c, now=now, retries_too=not self.paused, all_retries=release)
        )
        if moved:
            self._wake.set()
        await self._check_awaiting()
        overdue = await self.outbox.write(lambda c: transitions.fail_overdue(c, now=now, max_wait=MAX_WAIT_AFTER_DUE))
        for record in overdue:
            await self.outbox.alert(
                "order_failed",
                "critical",
                alerts.order_failed(
                    record.order,
                    display_code=record.display_code,
                    error_class=ErrorClass.OUTAGE,
                    reason=record.last_error or "not in the POS after 24 h",
                ),
                order_id=record.id,
            )
        await self._fallbacks()

    async def _check_awaiting(self) -> None:
        now = self.clock.now()
        timeout = timedelta(seconds=self.settings.injection.confirm_timeout_seconds)
        for record in await self.outbox.orders_in((State.AWAITING_POS,), limit=200):
            # Each poll is bounded by the POS timeout; marking progress per order keeps a long round over a
            # slow POS from looking like a wedged scheduler to the systemd watchdog.
            self._mark("scheduler")
            result = await self.driver.confirmation(self._request(record))
            try:
                if result is not None:
                    await self.apply(record, result)
                elif record.sent_at is not None and now - record.sent_at >= timeout:
                    await self._fail(
                        record,
                        ErrorClass.UNCONFIRMED,
                        f"the POS accepted the order but did not confirm it within {int(timeout.total_seconds())} s",
                    )
            except OrderConflict:
                continue

    async def _fallbacks(self) -> None:
        fb = self.settings.fallback
        if not fb.enabled:
            return
        now = self.clock.now()
        not_ready = self.paused or self.pos.not_ready
        candidates = await self.outbox.read(
            lambda c: transitions.fallback_candidates(
                c,
                now=now,
                print_after_seconds=fb.print_after_seconds,
                pos_not_ready=not_ready and fb.print_when_pos_not_ready,
            )
        )
        requested = 0
        for record in candidates:
            reason = fallback_reason(
                record,
                now=now,
                enabled=fb.enabled,
                print_after_seconds=fb.print_after_seconds,
                pos_not_ready=not_ready,
                print_when_pos_not_ready=fb.print_when_pos_not_ready,
            )
            if reason is None:
                continue
            payload = alerts.fallback_printed(
                record.order, display_code=record.display_code, reason=reason, after_print=fb.after_print
            )

            def change(c: Any, r: OrderRecord = record, why: str = reason, p: dict[str, Any] = payload) -> bool:
                done = print_jobs.request_fallback(c, r.id, now=now, reason=why, skip=fb.after_print == "skip")
                if done:
                    events.add_alert(c, now, "fallback_printed", "warning", p, order_id=r.id)
                return done

            if await self.outbox.write(change):
                requested += 1
                log.warning("fallback_ticket_requested", order_id=record.id, reason=reason)
        if requested:
            self.on_print_requested()
