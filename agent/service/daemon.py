"""``venue-agent run`` as a process: signals, systemd readiness, STATUS= lines and the loop watchdog, the exit code."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from typing import Any

import structlog

from agent.domain.config import Settings
from agent.service.logs import flush_suppressed
from agent.service.sdnotify import Notifier, Watchdog, watchdog_interval
from agent.service.service import Agent

log = structlog.get_logger("venue_agent.service")

STATUS_INTERVAL_SECONDS = 10.0
# How long a watched loop may go without marking progress before the systemd watchdog is withheld. Every
# watched loop marks progress at least every 30 s while idle (dispatcher.IDLE_SECONDS, worker.IDLE_SECONDS):
# the sender, scheduler, prober and print worker sleep until their next due time or until woken, 30 s at most
# (1 s while the circuit is not closed or work is in motion), so idle waiting already counts as progress and
# nothing needs wrapping. What can legitimately hold a round is
# bounded I/O: a POS probe (a Lightspeed token refresh plus the probe: about 2 x [pos] timeout_seconds), the
# scheduler's confirmation polls (one POS call per order awaiting confirmation, one after the other) and a
# print round (connect 3 s + write 10 s per printer tried per job). Hence a generous floor, raised with the
# POS timeout. The restart comes stale_after + WatchdogSec after a loop wedges.
WATCHDOG_STALE_FLOOR_SECONDS = 120.0
WATCHDOG_STALE_POS_TIMEOUTS = 4


def watchdog_stale_after(settings: Settings) -> float:
    """Return how many seconds without progress make a loop count as wedged (see WATCHDOG_STALE_FLOOR_SECONDS)."""
    return max(WATCHDOG_STALE_FLOOR_SECONDS, WATCHDOG_STALE_POS_TIMEOUTS * settings.pos.timeout_seconds)


def loop_watchdog(agent: Agent, notifier: Notifier, interval: float) -> Watchdog:
    """Return a watchdog over the agent's sender, scheduler, prober and print loops."""
    # A loop that has not marked yet counts from now: the watchdog starts after Agent.start().
    started = time.monotonic()
    progress = agent.dispatcher.progress

    def dispatcher_loop(name: str) -> Callable[[], float]:
        return lambda: progress.get(name, started)

    probes: dict[str, Callable[[], float]] = {
        "sender": dispatcher_loop("sender"),
        "scheduler": dispatcher_loop("scheduler"),
        "prober": dispatcher_loop("prober"),
        "printer": lambda: agent.printer.progress or started,
    }
    return Watchdog(notifier, interval, probes, watchdog_stale_after(agent.settings))


def status_line(ready: bool, snapshot: dict[str, Any]) -> str:
    """Return a short, technician-readable summary of a health snapshot for ``systemctl status``."""
    outbox: dict[str, int] = snapshot.get("outbox", {})
    labels = (
        ("queued", "queued"),
        ("sending", "sending"),
        ("retrying", "retrying"),
        ("awaiting_pos", "awaiting POS"),
        ("scheduled", "scheduled"),
        ("held", "held"),
        ("failed", "failed"),
    )
    counts = ", ".join(f"{outbox[key]} {label}" for key, label in labels if outbox.get(key)) or "0 queued"
    pos = snapshot.get("pos", {})
    printers = ", ".join(f"{p['name']} {p['state']}" for p in snapshot.get("printers", [])) or "none"
    line = f"{counts}; POS {pos.get('state', 'unknown')} ({pos.get('driver', '?')}); printers: {printers}"
    return line if ready else f"not ready; {line}"


async def report_status(agent: Agent, notifier: Notifier, watchdog: Watchdog | None) -> None:
    """Send a STATUS= line from a health snapshot now and every STATUS_INTERVAL_SECONDS, until cancelled."""
    while True:
        try:
            ready, snapshot = await agent.health_check()
            text = status_line(ready, snapshot)
            if watchdog is not None and watchdog.stale:
                # Keep the watchdog's verdict visible: this line replaces its STATUS= every round.
                text = f"stuck: {', '.join(watchdog.stale)}; {text}"
            notifier.status(text)
        except Exception as exc:  # the status line is a courtesy: it must never end the agent
            log.warning("sd_status_failed", error=str(exc))
        await sleep_aligned(STATUS_INTERVAL_SECONDS)


async def flush_log_summaries() -> None:
    """Write the ``log_suppressed`` summaries of ended windows every STATUS_INTERVAL_SECONDS, until cancelled."""
    while True:
        await sleep_aligned(STATUS_INTERVAL_SECONDS)
        flush_suppressed()


async def sleep_aligned(period: float) -> None:
    """Sleep until the next multiple of ``period`` on the loop's clock, so periodic loops share their wake-ups."""
    await asyncio.sleep(period - asyncio.get_running_loop().time() % period)


async def _cancel_in_order(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    tasks.clear()


async def run_agent(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT, then shut down in order; return the exit code.

    Under systemd (``$NOTIFY_SOCKET``): READY=1 once started, STATUS= lines, WATCHDOG=1 while the loops make
    progress (``$WATCHDOG_USEC``), STOPPING=1 when shutdown begins.
    """
    agent = Agent(settings)
    notifier = Notifier.from_env()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await agent.start()
    except BaseException as exc:
        notifier.status(f"failed to start: {exc}")
        await agent.stop()
        raise
    notifier.ready()
    interval = watchdog_interval()
    watchdog = loop_watchdog(agent, notifier, interval) if interval is not None else None
    # Cancelled in this order at shutdown: the watchdog first (the loops stop during agent.stop()).
    helpers: list[asyncio.Task[None]] = []
    if watchdog is not None:
        helpers.append(asyncio.create_task(watchdog.run(), name="venue-agent watchdog"))
    helpers.append(asyncio.create_task(report_status(agent, notifier, watchdog), name="venue-agent status"))
    helpers.append(asyncio.create_task(flush_log_summaries(), name="venue-agent log summaries"))
    watcher = asyncio.create_task(stop.wait(), name="venue-agent stop signal")
    try:
        while not stop.is_set():
            failed = agent.failed_task()
            if failed is not None:
                log.error("agent_loop_died", task=failed.get_name(), error=repr(failed.exception()))
                notifier.stopping()
                notifier.status(f"stopping: the {failed.get_name()} loop died")
                await _cancel_in_order(helpers)
                await agent.stop()
                return 1
            # Woken by the stop or by a loop ending, never by a timer: an idle agent stays asleep.
            await asyncio.wait({watcher, *agent.loops()}, return_when=asyncio.FIRST_COMPLETED)
        notifier.stopping()
        notifier.status("stopping: finishing POS calls")
        await _cancel_in_order(helpers)
        await agent.stop()
        return 0
    finally:
        watcher.cancel()
        await _cancel_in_order(helpers)
        notifier.close()
