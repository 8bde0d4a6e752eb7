"""Watches the agent's components (intake, POS, each printer) and records every change of state as an event.

SPEC §8 publishes an event per component change and the health snapshot on any change of a component's state; the
states live in memory (the circuit breaker, the last printer status read), so they are read every
``CHECK_SECONDS`` and compared, rather than threading a callback through every component.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from agent.clock import Clock
from agent.errors import StorageError
from agent.outbox import Outbox

log = structlog.get_logger("venue_agent.components")

CHECK_SECONDS = 1.0

States = dict[str, str]


def changes(before: States, after: States) -> list[tuple[str, str | None, str | None]]:
    """Return ``(component, from, to)`` for every component whose state differs, in a stable order."""
    names = sorted(before.keys() | after.keys())
    return [(n, before.get(n), after.get(n)) for n in names if before.get(n) != after.get(n)]


class ComponentWatcher:
    """Reads component states each second; on a change writes ``component_changed`` events and sets ``changed``."""

    def __init__(self, *, read: Callable[[], States], outbox: Outbox, clock: Clock) -> None:
        self.read = read
        self.outbox = outbox
        self.clock = clock
        self.changed = asyncio.Event()
        self.states: States = {}

    async def run(self) -> None:
        """Watch until cancelled; the first reading is the baseline (no events)."""
        self.states = self.read()
        while True:
            await self.clock.sleep(CHECK_SECONDS)
            await self.check()

    async def check(self) -> None:
        """Compare the states with the last reading; record and announce what changed."""
        now = self.read()
        diff = changes(self.states, now)
        if not diff:
            return
        self.states = now
        for component, before, after in diff:
            log.info("component_changed", component=component, before=before, after=after)
            try:
                await self.outbox.event("component_changed", {"component": component, "from": before, "to": after})
            except StorageError as exc:
                log.warning("component_event_lost", component=component, error=str(exc))
        self.changed.set()
