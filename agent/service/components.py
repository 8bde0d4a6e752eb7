"""Watches the agent's components (intake, POS, disk, each printer) and records every change of state as an event.

Each change of a component's state is an event and republishes the health snapshot (docs/mqtt.md); the states
live in memory (the circuit breaker, the last printer status read), so they are read every ``CHECK_SECONDS`` and
compared, rather than threading a callback through every component.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from agent.dispatch import alerts
from agent.domain.clock import Clock
from agent.domain.errors import StorageError
from agent.outbox.store import Outbox

log = structlog.get_logger("venue_agent.components")

# Every 2 s, on the even second: an idle box wakes for this, so it is as rare as a change can wait (a printer's or
# the POS's state is known sooner where it matters: the worker and the dispatcher act on it at once).
CHECK_SECONDS = 2.0

States = dict[str, str]
# Below this much more than storage.min_free_mb (or twice it, if more), the disk is "low" and ops is told.
DISK_LOW_MARGIN_MB = 100


def disk_state(free_bytes: int, min_free_mb: int) -> str:
    """Return ``full`` below ``min_free_mb`` (intake refuses orders), ``low`` near it, else ``ok``."""
    free_mb = free_bytes / 1_048_576
    if free_mb < min_free_mb:
        return "full"
    if free_mb < max(2 * min_free_mb, min_free_mb + DISK_LOW_MARGIN_MB):
        return "low"
    return "ok"


def changes(before: States, after: States) -> list[tuple[str, str | None, str | None]]:
    """Return ``(component, from, to)`` for every component whose state differs, in a stable order."""
    names = sorted(before.keys() | after.keys())
    return [(n, before.get(n), after.get(n)) for n in names if before.get(n) != after.get(n)]


class ComponentWatcher:
    """Reads component states each second; on a change writes ``component_changed`` events and sets ``changed``.

    The disk becoming ``low`` or ``full`` also raises a ``disk_low`` alert (once per step down, not when it
    recovers from full to low).
    """

    def __init__(self, *, read: Callable[[], States], outbox: Outbox, clock: Clock) -> None:
        self.read = read
        self.outbox = outbox
        self.clock = clock
        self.changed = asyncio.Event()
        self.states: States = {}

    async def run(self) -> None:
        """Watch until cancelled; the first reading is the baseline (no events, but a disk_low alert if it is)."""
        self.states = self.read()
        if self.states.get("disk") in ("low", "full"):
            try:
                await self._disk_alert(full=self.states["disk"] == "full")
            except StorageError as exc:
                log.warning("component_event_lost", component="disk", error=str(exc))
        while True:
            # On the whole second of the loop's clock, with the agent's other periodic loops: one wake-up for all.
            await self.clock.sleep(CHECK_SECONDS - asyncio.get_running_loop().time() % CHECK_SECONDS)
            try:
                await self.check()
            except Exception as exc:  # watching must not end the agent (failed_task): log it, look again next time
                log.error("component_check_failed", exc_info=exc)

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
                if component == "disk" and after in ("low", "full") and not (before == "full" and after == "low"):
                    await self._disk_alert(full=after == "full")
            except StorageError as exc:
                log.warning("component_event_lost", component=component, error=str(exc))
        self.changed.set()

    async def _disk_alert(self, *, full: bool) -> None:
        free_mb = self.outbox.disk_free_bytes() / 1_048_576
        payload = alerts.disk_low(
            free_mb=free_mb, min_free_mb=self.outbox.min_free_mb, full=full, path=str(self.outbox.path)
        )
        await self.outbox.alert("disk_low", "critical" if full else "warning", payload)
