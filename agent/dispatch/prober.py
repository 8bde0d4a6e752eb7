"""The dispatcher's prober loop: the POS's readiness, the circuit breaker's probes, readiness the POS pushes."""

from __future__ import annotations

import asyncio
import math
import time

import structlog

from agent.dispatch.circuit import CircuitState
from agent.dispatch.core import IDLE_SECONDS, DispatcherCore
from drivers.pos.base import (
    ReadinessState,
)

log = structlog.get_logger("venue_agent.dispatcher")

PROBE_INTERVAL_SECONDS = 30.0


class Prober(DispatcherCore):
    """The ``prober`` task, and readiness the POS pushes in a notification."""

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

        NOT_READY opens the circuit (the kitchen gets due orders on paper at once, docs/order-flow.md); READY closes
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
