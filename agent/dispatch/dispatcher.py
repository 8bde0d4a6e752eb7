"""The injection loop: claims due orders, sends them through the POS driver, applies the answers.

Three named tasks share one ``Dispatcher``: ``sender`` (claim and send, bounded concurrency, rate
limited), ``scheduler`` (pre-orders and retries coming due, confirm timeouts, the 24 h limit, fallback
tickets) and ``prober`` (POS readiness, the circuit breaker's probe). Each records its progress so the
watchdog can tell a wedged loop from an idle one.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog

from agent.dispatch import alerts
from agent.dispatch.backoff import next_attempt_at
from agent.dispatch.circuit import Circuit, CircuitState
from agent.dispatch.fallback import fallback_reason
from agent.dispatch.ratelimit import RateLimiter
from agent.domain.clock import Clock
from agent.domain.config import Settings
from agent.domain.errors import OrderConflict, StorageError
from agent.domain.states import ErrorClass, State
from agent.outbox import events, intake, print_jobs, snoozes, transitions
from agent.outbox.records import OrderRecord
from agent.outbox.store import Outbox
from drivers.pos.base import (
    Accepted,
    Driver,
    Injected,
    InjectRequest,
    InjectResult,
    Permanent,
    ReadinessState,
    Transient,
)

log = structlog.get_logger("venue_agent.dispatcher")

# The ``source`` a snooze row records, by driver name (SPEC §7.1 calls Lightspeed's "lightspeed").
SNOOZE_SOURCES = {"lightspeed_k": "lightspeed"}

MAX_WAIT_AFTER_DUE = timedelta(hours=24)
SCHEDULER_TICK_SECONDS = 1.0
# An idle loop (nothing on its way, nothing due sooner) sleeps this long at most: woken by new work, it still
# marks progress well within the watchdog's stale limit (daemon.WATCHDOG_STALE_FLOOR_SECONDS in agent/service).
IDLE_SECONDS = 30.0
PROBE_INTERVAL_SECONDS = 30.0
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


class Dispatcher:
    """Gets queued orders into the POS, or onto a fallback ticket, within bounded time."""

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

    # ---- sender ------------------------------------------------------------------------------

    async def run_sender(self) -> None:
        """Claim queued orders while the POS takes them and send them, at most ``max_in_flight`` at once."""
        while not self._stopping:
            self._mark("sender")
            self._wake.clear()
            free = self.max_in_flight - len(self._in_flight)
            wanted = 0 if self.pos.auth_required else self.circuit.orders_to_claim(free)
            if wanted > 0:
                try:
                    claimed = await self._claim(wanted)
                except StorageError as exc:
                    log.error("claim_failed", error=str(exc))
                    await asyncio.sleep(1.0)
                    continue
                for record in claimed:
                    task = asyncio.create_task(self._send(record), name=f"venue-agent send {record.id}")
                    self._in_flight.add(task)
                    task.add_done_callback(self._in_flight.discard)
                if len(claimed) == free and self.circuit.allows_orders():
                    continue
            # While the circuit is not closed, what may be claimed changes with time (the probe order): look again
            # every second. Closed, every change that frees work wakes the sender.
            idle = IDLE_SECONDS if self.circuit.state is CircuitState.CLOSED and not self.paused else 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=idle)

    async def _claim(self, limit: int) -> list[OrderRecord]:
        now = self.clock.now()
        if self.circuit.allows_orders():
            return await self.outbox.write(lambda c: transitions.claim(c, now=now, limit=limit, count_strike=True))
        probe = await self.outbox.write(lambda c: transitions.claim_probe(c, now=now))
        if probe is None:
            self.circuit.order_probe_unclaimed(now)
            return []
        self.circuit.order_probe_claimed()
        log.info("pos_circuit_probe_order", order_id=probe.id, attempts=probe.attempts)
        return [probe]

    async def drain(self, grace_seconds: float) -> int:
        """Stop claiming and wait for POS calls in flight (at most ``grace_seconds``); return how many were cut."""
        self._stopping = True
        self._wake.set()
        pending = self._in_flight | self._recording
        if pending:
            _, still = await asyncio.wait(pending, timeout=grace_seconds)
            for task in still:
                task.cancel()
            return len(still)
        return 0

    def _request(self, record: OrderRecord) -> InjectRequest:
        marked = record.fallback_at is not None and self.settings.fallback.after_print == "inject_marked"
        return InjectRequest(
            order=record.order,
            idempotency_key=record.idempotency_key,
            already_printed=marked,
            attempt=record.attempts,
        )

    async def _send(self, record: OrderRecord) -> None:
        await self.limiter.acquire()
        started = time.perf_counter()
        result = await self.driver.inject(self._request(record))
        self.pos.latency_ms = round((time.perf_counter() - started) * 1000, 1)
        # The POS took the order: its slot goes to the next order now, so the sender's next claim and this answer
        # (and the other answers that came meanwhile) share one commit instead of paying one each. A failure
        # keeps its slot until it is recorded, so the circuit counts it before anything more is claimed.
        task = asyncio.current_task()
        if isinstance(result, Injected | Accepted) and task is not None and task in self._in_flight:
            self._in_flight.discard(task)
            self._recording.add(task)
            task.add_done_callback(self._recording.discard)
            self._wake.set()
        while True:
            try:
                await self.apply(record, result)
            except OrderConflict as exc:  # cancelled or replaced meanwhile: the newer decision stands
                log.info("pos_result_discarded", order_id=record.id, state=exc.state, result=type(result).__name__)
            except StorageError as exc:
                # The answer cannot be recorded (disk full): keep trying while the agent runs. If it stops
                # first, the order is still in sending and is resent with the same key at the next start.
                log.error("pos_result_not_recorded", order_id=record.id, error=str(exc))
                if not self._stopping:
                    await asyncio.sleep(1.0)
                    continue
            break
        self._wake.set()

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

    # ---- prober ------------------------------------------------------------------------------

    async def run_prober(self) -> None:
        """Probe the POS: often while the circuit is open, every 30 s otherwise."""
        last_probe = -math.inf
        while not self._stopping:
            self._mark("prober")
            now = self.clock.now()
            routine = time.monotonic() - last_probe >= PROBE_INTERVAL_SECONDS
            if self.circuit.probe_due(now) or (self.circuit.state is CircuitState.CLOSED and routine):
                last_probe = time.monotonic()
                await self.probe_once()
            pause = 1.0  # the circuit's probe backoff is checked every second while it is not closed
            if self.circuit.state is CircuitState.CLOSED:
                pause = max(1.0, min(IDLE_SECONDS, last_probe + PROBE_INTERVAL_SECONDS - time.monotonic()))
            self._prober_wake.clear()
            await self._nap(pause, self._prober_wake)

    async def _nap(self, seconds: float, wake: asyncio.Event) -> None:
        """Sleep ``seconds`` of clock time, or until ``wake`` is set."""
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        waker = asyncio.ensure_future(wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in (sleeper, waker):
                future.cancel()

    async def readiness_pushed(self, *, ready: bool, detail: str, conditions: dict[str, bool]) -> str:
        """Apply a readiness the POS pushed (a notification), at once; return the circuit's state after it.

        NOT_READY opens the circuit (the kitchen gets due orders on paper at once, SPEC §6 rule (c)); READY closes
        it, as a READY probe would, so waiting orders go without waiting for the next probe. A pushed READY does
        not vouch for the agent's credentials: ``auth_required`` is left to a real probe or ``pos authorize``.
        """
        now = self.clock.now()
        self.pos.conditions = dict(conditions)
        if ready:
            self.pos.not_ready = False
            if self.circuit.record_success():
                log.info("pos_circuit_closed", detail=detail, source="notification")
                await self._pos_recovered()
            self._scheduler_wake.set()
            self._wake.set()
        else:
            self.pos.not_ready = True
            self.pos.last_error = detail
            if self.circuit.trip(now, detail):
                await self._pos_went_down(detail)
            self._scheduler_wake.set()
        return self.circuit.state.value

    async def probe_once(self) -> ReadinessState:
        """Probe the POS once and update the circuit, readiness and credentials state."""
        now = self.clock.now()
        was_open = self.circuit.state is not CircuitState.CLOSED
        if was_open:
            self.circuit.start_probe()
        await self.limiter.acquire()  # probes count towards the POS's rate limit too
        readiness = await self.driver.probe()
        self.pos.latency_ms = readiness.latency_ms
        self.pos.conditions = dict(readiness.conditions)
        if readiness.state is ReadinessState.READY:
            self.pos.not_ready = False
            if self.circuit.record_success():
                log.info("pos_circuit_closed", detail=readiness.detail)
                await self._pos_recovered()
            # Only a real readiness endpoint (one that reports conditions) vouches for our credentials.
            if self.pos.auth_required and readiness.conditions:
                await self.resume_after_auth("the POS accepts our credentials again")
            self._scheduler_wake.set()
            self._wake.set()
        elif readiness.state is ReadinessState.UNSUPPORTED:
            # No readiness check: only a real order can tell. Closed: nothing learnt; open: one order probes.
            self.pos.not_ready = False
            if was_open and self.pos.auth_required:  # no order may go out to probe with
                self.circuit.probe_failed(now, readiness.detail)
            elif was_open:
                self.circuit.readiness_unsupported()
                log.info("pos_circuit_probe_by_order", detail=readiness.detail)
                self._wake.set()
        elif readiness.state is ReadinessState.AUTH_REQUIRED:
            await self._auth_refused(readiness.detail or "the POS refused our credentials")
            if was_open:
                self.circuit.probe_failed(now, readiness.detail)
        else:
            self.pos.not_ready = readiness.state is ReadinessState.NOT_READY
            reason = readiness.detail or readiness.state.value
            self.pos.last_error = reason
            if was_open:
                self.circuit.probe_failed(now, reason)
            elif self.circuit.trip(now, reason):
                await self._pos_went_down(reason)
        return readiness.state
