"""Reads the running agent's POS, printers and storage, and keeps the published availability (docs/mqtt.md).

The rule and its debounce are pure (agent/domain/availability.py); this is the edge that reads their inputs from
memory every ``CHECK_SECONDS``, keeps ``seq`` in the outbox's key-value store so it survives restarts, records
each change as an ``availability_changed`` event and wakes the MQTT reporter.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import structlog

from agent.dispatch.dispatcher import Dispatcher
from agent.domain.availability import Availability, Debouncer, Inputs, decide
from agent.domain.clock import Clock
from agent.domain.config import Settings
from agent.domain.errors import StorageError
from agent.outbox.store import Outbox
from agent.printing.worker import PrintWorker
from agent.service.components import CHECK_SECONDS as COMPONENTS_CHECK_SECONDS
from agent.service.components import disk_state

log = structlog.get_logger("venue_agent.availability")

# Reading the inputs is a few attribute reads and one statvfs, on the component watcher's beat so both share one
# wake-up: an idle kitchen wakes the box at most twice a second (docs/benchmarks.md).
CHECK_SECONDS = COMPONENTS_CHECK_SECONDS
KV_KEY = "availability"


def read_inputs(*, settings: Settings, dispatcher: Dispatcher, printer: PrintWorker, outbox: Outbox) -> Inputs:
    """Return what the rule reads now: the POS state, the fallback printers' last states, the storage."""
    states = printer.states
    return Inputs(
        pos_state=dispatcher.pos.state(dispatcher.circuit),
        fallback_enabled=settings.fallback.enabled,
        printers={p.name: states.get(p.name, "unknown") for p in settings.fallback_printers()},
        disk_full=disk_state(outbox.disk_free_bytes(), outbox.min_free_mb) == "full",
        storage_open=outbox.is_open,
    )


class AvailabilityWatcher:
    """Keeps ``current`` (the published value) up to date; ``changed`` is set whenever it changes."""

    def __init__(self, *, read: Callable[[], Inputs], outbox: Outbox, clock: Clock, debounce_seconds: float) -> None:
        self.read = read
        self.outbox = outbox
        self.clock = clock
        self.debouncer = Debouncer(debounce_seconds)
        self.changed = asyncio.Event()

    @property
    def current(self) -> Availability | None:
        """Return the value published last, or None before the first reading."""
        return self.debouncer.current

    def payload(self) -> dict[str, Any] | None:
        """Return the ``P/availability`` payload of the published value, or None before the first reading."""
        current = self.debouncer.current
        return current.as_dict() if current is not None else None

    async def start(self) -> None:
        """Restore the value published before a restart (for its ``seq``), then take the first reading."""
        stored = await self.outbox.kv_get(KV_KEY)
        if stored is not None:
            try:
                self.debouncer.current = Availability.from_dict(json.loads(stored))
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("availability_not_restored", error=str(exc))
        await self.check()

    async def run(self) -> None:
        """Read and decide every ``CHECK_SECONDS`` until cancelled."""
        while True:
            await self.clock.sleep(CHECK_SECONDS - asyncio.get_running_loop().time() % CHECK_SECONDS)
            try:
                await self.check()
            except Exception as exc:  # deciding must not end the agent (failed_task): log it, look again next time
                log.error("availability_check_failed", exc_info=exc)

    async def check(self) -> Availability | None:
        """Read the inputs once; when the published value changes, store it, record it and announce it."""
        before = self.debouncer.current
        verdict = decide(self.read())
        value = self.debouncer.observe(verdict, self.clock.now())
        if value is None:
            return None
        self.changed.set()
        log.info(
            "availability_changed",
            accepting=value.accepting,
            reason=value.reason,
            detail=value.detail,
            seq=value.seq,
            was=None if before is None else before.accepting,
        )
        payload = value.as_dict()
        try:
            await self.outbox.kv_put(KV_KEY, json.dumps(payload, separators=(",", ":")))
            await self.outbox.event("availability_changed", payload)
        except StorageError as exc:
            # Published anyway: the platform must hear of it; only seq's continuity after a restart is at risk.
            log.warning("availability_not_stored", error=str(exc))
        return value
