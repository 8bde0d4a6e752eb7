"""The injection loop: claims due orders, sends them through the POS driver, applies the answers.

Three named tasks share one ``Dispatcher``: ``sender`` (claim and send, bounded concurrency, rate
limited), ``scheduler`` (pre-orders and retries coming due, confirm timeouts, the 24 h limit, fallback
tickets) and ``prober`` (POS readiness, the circuit breaker's probe). Each records its progress so the
watchdog can tell a wedged loop from an idle one.

The sender is here; the shared state and the handling of POS answers in agent/dispatch/core.py, the scheduler
in agent/dispatch/scheduler.py and the prober in agent/dispatch/prober.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from agent.dispatch.circuit import CircuitState
from agent.dispatch.core import IDLE_SECONDS
from agent.dispatch.prober import Prober
from agent.dispatch.scheduler import Scheduler
from agent.domain.errors import OrderConflict, StorageError
from agent.outbox import transitions
from agent.outbox.records import OrderRecord
from drivers.pos.base import (
    Accepted,
    Injected,
)

log = structlog.get_logger("venue_agent.dispatcher")


class Dispatcher(Scheduler, Prober):
    """Gets queued orders into the POS, or onto a fallback ticket, within bounded time."""

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
