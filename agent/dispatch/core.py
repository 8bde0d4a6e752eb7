"""What the dispatcher's three loops share: the POS's state, the circuit, and how a POS answer changes an order.

``Dispatcher`` (agent/dispatch/dispatcher.py) is this core plus its loops: the sender there, the scheduler in
agent/dispatch/scheduler.py and the prober in agent/dispatch/prober.py.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from agent.dispatch import alerts
from agent.dispatch.backoff import next_attempt_at
from agent.dispatch.circuit import Circuit, CircuitState
from agent.dispatch.ratelimit import RateLimiter
from agent.domain.clock import Clock
from agent.domain.config import Settings
from agent.domain.states import ErrorClass, State
from agent.outbox import events, intake, snoozes, transitions
from agent.outbox.records import OrderRecord
from agent.outbox.store import Outbox
from drivers.pos.base import (
    Accepted,
    Driver,
    Injected,
    InjectRequest,
    InjectResult,
    Permanent,
    Transient,
)

log = structlog.get_logger("venue_agent.dispatcher")

# The ``source`` a snooze row records, by driver name (the snoozes list calls Lightspeed's "lightspeed").
SNOOZE_SOURCES = {"lightspeed_k": "lightspeed"}
# An idle loop (nothing on its way, nothing due sooner) sleeps this long at most: woken by new work, it still
# marks progress well within the watchdog's stale limit (daemon.WATCHDOG_STALE_FLOOR_SECONDS in agent/service).
IDLE_SECONDS = 30.0
MAX_IN_FLIGHT = 32


@dataclass
class PosStatus:
    """What the agent knows about the POS right now (for health and `status`)."""

    driver: str
    auth_required: bool = False
    not_ready: bool = False
    latency_ms: float | None = None
    last_error: str | None = None
    conditions: dict[str, bool] = field(default_factory=dict)

    def state(self, circuit: Circuit) -> str:
        """Return ok | degraded | down | auth_required."""
        if self.auth_required:
            return "auth_required"
        if circuit.state is not CircuitState.CLOSED or self.not_ready:
            return "down"
        if circuit.failures:
            return "degraded"
        return "ok"


class DispatcherCore:
    """The state the sender, scheduler and prober share, and the one way a POS answer is applied to an order."""

    def __init__(
        self,
        *,
        outbox: Outbox,
        driver: Driver,
        settings: Settings,
        clock: Clock,
        rand: Callable[[], float] = random.random,
        limiter: RateLimiter | None = None,
        on_print_requested: Callable[[], None] = lambda: None,
    ) -> None:
        self.outbox = outbox
        self.driver = driver
        self.settings = settings
        self.clock = clock
        self.rand = rand
        self.limiter = limiter or RateLimiter(settings.pos.rate_limit_per_second)
        self.circuit = Circuit()
        self.pos = PosStatus(driver=driver.name)
        self.on_print_requested = on_print_requested
        self.max_in_flight = max(2, min(MAX_IN_FLIGHT, math.ceil(settings.pos.rate_limit_per_second * 2)))
        self.progress: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._scheduler_wake = asyncio.Event()
        self._prober_wake = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()  # waiting for the POS
        self._recording: set[asyncio.Task[None]] = set()  # the POS answered; the answer is being recorded
        self._stopping = False
        # The circuit closed: release every order that waited on it, not only those whose backoff ran out.
        self._release_retries = False

    # ---- signals from elsewhere --------------------------------------------------------------

    def wake(self) -> None:
        """Tell the sender that orders may be waiting (new intake, a change of state)."""
        self._wake.set()
        self._scheduler_wake.set()

    @property
    def paused(self) -> bool:
        """Return whether orders are held back (POS down or credentials refused)."""
        return self.pos.auth_required or not self.circuit.allows_orders()

    def _mark(self, loop_name: str) -> None:
        self.progress[loop_name] = time.monotonic()

    def _request(self, record: OrderRecord) -> InjectRequest:
        marked = record.fallback_at is not None and self.settings.fallback.after_print == "inject_marked"
        return InjectRequest(
            order=record.order,
            idempotency_key=record.idempotency_key,
            already_printed=marked,
            attempt=record.attempts,
        )

    # ---- applying a POS answer ---------------------------------------------------------------

    async def apply(self, record: OrderRecord, result: InjectResult) -> OrderRecord:
        """Apply one POS answer to an order (also used for two-phase confirmations)."""
        if isinstance(result, Injected):
            return await self._injected(record, result)
        if isinstance(result, Accepted):
            await self._pos_answered()
            updated = await self.outbox.transition(
                record.id,
                State.AWAITING_POS,
                event="awaiting_pos",
                expect=(State.SENDING,),
                pos_reference=result.pos_reference,
                sent_at=self.clock.now(),
                in_doubt=False,
            )
            log.info("order_awaiting_pos", order_id=record.id, pos_reference=result.pos_reference)
            return updated
        if isinstance(result, Transient):
            return await self._transient(record, result)
        return await self._permanent(record, result)

    async def _injected(self, record: OrderRecord, result: Injected) -> OrderRecord:
        await self._pos_answered()
        updated = await self.outbox.transition(
            record.id,
            State.INJECTED,
            event="injected",
            expect=(State.SENDING, State.AWAITING_POS, State.FAILED, State.QUEUED, State.RETRYING),
            pos_reference=result.pos_reference or record.pos_reference,
            injected_at=self.clock.now(),
            error_class=None,
            last_error=None,
            in_doubt=False,
            next_attempt_at=None,
            detail={"duplicate": result.duplicate, "attempts": record.attempts},
        )
        log.info(
            "order_injected",
            order_id=record.id,
            pos_reference=updated.pos_reference,
            attempts=record.attempts,
            duplicate=result.duplicate,
        )
        return updated

    async def _pos_answered(self) -> None:
        if self.circuit.record_success():
            log.info("pos_circuit_closed", detail="an order got an answer")
            await self._pos_recovered()

    async def _pos_recovered(self) -> None:
        self._release_retries = True
        await self.outbox.alert(
            "pos_recovered",
            "info",
            {
                "order": None,
                "reason": f"the {self.driver.name} POS takes orders again",
                "action": "Nothing to do: waiting orders are being sent in order.",
            },
        )
        self._scheduler_wake.set()
        self._wake.set()

    async def _transient(self, record: OrderRecord, result: Transient) -> OrderRecord:
        now = self.clock.now()
        self.pos.last_error = result.reason
        if result.status == 429:
            await self._pos_answered()  # a POS that rate-limits us is up: back off, but do not open the circuit
        elif self.circuit.record_failure(now, result.reason):
            await self._pos_went_down(result.reason)
        attempts_left = self.settings.injection.max_attempts - record.strikes
        if attempts_left <= 0:
            return await self._fail(
                record, ErrorClass.OUTAGE, f"{result.reason} (gave up after {record.strikes} attempts)"
            )
        retry_at = next_attempt_at(
            now=now,
            strike=record.strikes,
            base=self.settings.injection.backoff_base_seconds,
            cap=self.settings.injection.backoff_max_seconds,
            retry_after=result.retry_after,
            requested_at=record.order.requested_at,
            attempts_left=attempts_left,
            rand=self.rand,
        )
        updated = await self.outbox.transition(
            record.id,
            State.RETRYING,
            event="retrying",
            expect=(State.SENDING, State.AWAITING_POS),
            next_attempt_at=retry_at,
            last_error=result.reason,
            in_doubt=record.in_doubt or result.in_doubt,
            detail={"reason": result.reason, "status": result.status, "retry_at": retry_at.isoformat()},
        )
        log.warning(
            "order_retrying",
            order_id=record.id,
            reason=result.reason,
            strikes=record.strikes,
            retry_at=retry_at.isoformat(),
        )
        self._scheduler_wake.set()
        return updated

    async def _permanent(self, record: OrderRecord, result: Permanent) -> OrderRecord:
        if result.error_class is ErrorClass.AUTH:
            await self._auth_refused(result.reason)
            if self.circuit.order_probe_in_flight:  # credentials refused: the probe learnt nothing, stay open
                self.circuit.probe_failed(self.clock.now(), result.reason)
        else:
            await self._pos_answered()
        return await self._fail(record, result.error_class, result.reason, skus=result.skus)

    async def _fail(
        self, record: OrderRecord, error_class: ErrorClass, reason: str, *, skus: tuple[str, ...] = ()
    ) -> OrderRecord:
        now = self.clock.now()
        alert = alerts.order_failed(
            record.order, display_code=record.display_code, error_class=error_class, reason=reason
        )

        def change(c: Any) -> OrderRecord:
            updated = transitions.transition(
                c,
                record.id,
                State.FAILED,
                now=now,
                event="failed",
                expect=(State.SENDING, State.AWAITING_POS, State.RETRYING, State.QUEUED),
                error_class=error_class,
                last_error=reason,
                next_attempt_at=None,
                detail={"reason": reason, "skus": list(skus)} if skus else {"reason": reason},
            )
            events.add_alert(c, now, "order_failed", "critical", alert, order_id=record.id)
            if error_class is ErrorClass.UNAVAILABLE and skus:
                until = snoozes.snooze_until(now, self.settings.venue.tz)
                source = SNOOZE_SOURCES.get(self.driver.name, self.driver.name)
                snoozes.snooze(c, skus, until=until, source=source, reason=reason, now=now, order_id=record.id)
            return updated

        updated = await self.outbox.write(change)
        log.error("order_failed", order_id=record.id, error_class=error_class.value, reason=reason)
        self._scheduler_wake.set()
        return updated

    async def _pos_went_down(self, reason: str) -> None:
        log.error("pos_circuit_opened", reason=reason)
        self._prober_wake.set()  # an idle prober may sleep 30 s: the open circuit's probes start now
        await self.outbox.alert("pos_down", "critical", alerts.pos_down(self.driver.name, reason))
        self._scheduler_wake.set()

    async def _auth_refused(self, reason: str) -> None:
        if not self.pos.auth_required:
            self.pos.auth_required = True
            log.error("pos_auth_required", reason=reason)
            await self.outbox.alert("pos_auth_required", "critical", alerts.pos_auth_required(self.driver.name, reason))

    async def resume_after_auth(self, reason: str) -> int:
        """Resume injection after re-authorisation; orders that failed on credentials go back in the queue."""
        self.pos.auth_required = False
        now = self.clock.now()
        count = await self.outbox.write(lambda c: intake.requeue_failed(c, ErrorClass.AUTH, now=now, reason=reason))
        log.info("pos_auth_restored", requeued=count)
        self.wake()
        return count
