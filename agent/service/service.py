"""The agent: opens the outbox, starts its loops and the intake server, and shuts them down in order."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import structlog

from agent.api.intake import create_app
from agent.api.operations import Orders
from agent.api.server import IntakeServer, build_server
from agent.api.webhooks import LightspeedWebhooks
from agent.dispatch import alerts
from agent.dispatch.dispatcher import Dispatcher
from agent.domain.clock import Clock, SystemClock
from agent.domain.config import Settings
from agent.domain.states import ErrorClass
from agent.mqtt.commands import MqttControl
from agent.mqtt.reporter import MqttReporter
from agent.outbox.intake import requeue_failed
from agent.outbox.store import Outbox
from agent.printing.worker import PrintWorker
from agent.service.advertise import Advertiser
from agent.service.availability import AvailabilityWatcher, read_inputs
from agent.service.components import ComponentWatcher, disk_state
from agent.service.descriptors import connection_cap, raise_nofile_limit
from agent.service.health import HealthReporter
from agent.service.logs import flush_suppressed
from agent.service.sdnotify import Notifier, Watchdog, watchdog_interval
from drivers.pos.base import Driver, Reauthorizable
from drivers.pos.registry import build_driver
from drivers.printers.base import Transport

log = structlog.get_logger("venue_agent.service")

DRAIN_SECONDS = 10.0
RETENTION_INTERVAL_SECONDS = 3600.0
# PRAGMA quick_check reads the whole file (about a second per 100 MB on an SD card) in a thread of its own.
INTEGRITY_CHECK_SECONDS = 6 * 3600.0
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
# The agent's loops, cancelled in this order at shutdown once the POS calls in flight are done.
LOOPS = ("dispatcher", "scheduler", "prober", "printer", "printer-prober", "retention", "integrity", "availability")
WATCHDOG_STALE_POS_TIMEOUTS = 4


class Agent:
    """Everything that runs in ``venue-agent run``, in one object so tests can run it in-process."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        driver: Driver | None = None,
        transports: dict[str, Transport] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.outbox = Outbox(settings.storage.path, clock=self.clock, min_free_mb=settings.storage.min_free_mb)
        self.driver = driver or build_driver(settings, store=self.outbox)
        self.printer = PrintWorker(outbox=self.outbox, settings=settings, clock=self.clock, transports=transports)
        self.dispatcher = Dispatcher(
            outbox=self.outbox,
            driver=self.driver,
            settings=settings,
            clock=self.clock,
            on_print_requested=self.printer.wake,
        )
        self.orders = Orders(settings=settings, outbox=self.outbox, dispatcher=self.dispatcher, printer=self.printer)
        self.health = HealthReporter(outbox=self.outbox, dispatcher=self.dispatcher, printer=self.printer)
        self.webhooks = LightspeedWebhooks(
            outbox=self.outbox, dispatcher=self.dispatcher, settings=settings, clock=self.clock
        )
        self.components = ComponentWatcher(read=self.component_states, outbox=self.outbox, clock=self.clock)
        self.availability = AvailabilityWatcher(
            read=functools.partial(
                read_inputs, settings=settings, dispatcher=self.dispatcher, printer=self.printer, outbox=self.outbox
            ),
            outbox=self.outbox,
            clock=self.clock,
            debounce_seconds=settings.availability.debounce_seconds,
        )
        self.mqtt: MqttReporter | None = None
        if settings.mqtt.enabled:
            secret = settings.mqtt.command_hmac_secret
            control = MqttControl(
                prefix=f"{settings.mqtt.topic_prefix}/{settings.venue.id}",
                venue=settings.venue.id,
                orders=self.orders,
                outbox=self.outbox,
                clock=self.clock,
                health=self._health_snapshot,
                webhooks=self.webhooks if settings.pos.driver == "lightspeed_k" else None,
                secret=secret.get_secret_value() if secret else None,
                print_test=self.printer.print_test,
            )
            self.mqtt = MqttReporter(
                settings=settings,
                outbox=self.outbox,
                health=self._health_snapshot,
                clock=self.clock,
                control=control,
                changed=self.components.changed,
                availability=self.availability.payload,
                availability_changed=self.availability.changed,
            )
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._server: IntakeServer | None = None
        self.advertiser: Advertiser | None = None
        self.ready = asyncio.Event()
        self.port: int | None = None

    async def start(self) -> None:
        """Open the outbox, recover in-doubt orders, start the loops, then listen; ready when all are up."""
        await self.outbox.open()
        await self.outbox.recover()
        await self.printer.recover()
        await self.printer.prepare()
        await self.outbox.event("agent_started", {"driver": self.driver.name})
        # Before the reporter and the intake start: both serve the value from their first moment.
        await self.availability.start()
        # Orders that failed on credentials are tried once more after a restart: the technician may have
        # fixed the credentials; if not, they fail again and the alert is raised again.
        now = self.clock.now()
        await self.outbox.write(
            lambda c: requeue_failed(c, ErrorClass.AUTH, now=now, reason="agent restarted: credentials retried")
        )
        for name, coro in (
            ("dispatcher", self.dispatcher.run_sender()),
            ("scheduler", self.dispatcher.run_scheduler()),
            ("prober", self.dispatcher.run_prober()),
            ("printer", self.printer.run()),
            ("printer-prober", self.printer.run_prober()),
            ("retention", self._retention()),
            ("integrity", self._integrity()),
            ("availability", self.availability.run()),
        ):
            self._tasks[name] = asyncio.create_task(coro, name=f"venue-agent {name}")
        if self.mqtt is not None:
            # Reports from the outbox on its own: nothing in the order path awaits the broker.
            self._tasks["mqtt"] = asyncio.create_task(self.mqtt.run(), name="venue-agent mqtt")
        intake = self.settings.intake
        token = intake.token.get_secret_value() if intake.token else None
        lightspeed = self.settings.pos.lightspeed_k
        credentials = None
        if lightspeed is not None and lightspeed.webhook_username and lightspeed.webhook_password:
            credentials = (lightspeed.webhook_username, lightspeed.webhook_password.get_secret_value())
        app = create_app(
            orders=self.orders,
            health=self.health_check,
            token=token,
            max_body_bytes=intake.max_body_kb * 1024,
            webhooks=self.webhooks if self.settings.pos.driver == "lightspeed_k" else None,
            webhook_credentials=credentials,
            authorize=self.authorize if isinstance(self.driver, Reauthorizable) else None,
            availability=self.availability.payload,
        )
        soft, _ = raise_nofile_limit()
        cap = connection_cap(intake.max_connections, soft)
        if cap < intake.max_connections:
            log.warning("intake_connections_capped", max_connections=intake.max_connections, cap=cap, fd_limit=soft)
        self._server = build_server(
            app,
            max_connections=cap,
            idle_timeout=intake.idle_timeout_seconds,
            request_timeout=intake.request_timeout_seconds,
        )
        family = socket.AF_INET6 if ":" in intake.host else socket.AF_INET
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only then (else ~40 ms delayed-ACK stalls).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((intake.host, intake.port))
        self.port = sock.getsockname()[1]
        self._tasks["intake"] = asyncio.create_task(self._server.serve(sockets=[sock]), name="venue-agent intake")
        while not self._server.started:
            if self._tasks["intake"].done():
                await self._tasks["intake"]
                msg = f"the intake server stopped while starting on {intake.listen}"
                raise RuntimeError(msg)
            await asyncio.sleep(0.01)
        discovery = self.settings.discovery
        if discovery.enabled and discovery.advertise:
            # Announced after listening, with the bound port (listen may say :0).
            self.advertiser = Advertiser(venue_id=self.settings.venue.id, host=intake.host, port=self.port)
            await self.advertiser.start()
        self.ready.set()
        # After ready, so its baseline is the running agent and the start itself is not a change.
        self._tasks["components"] = asyncio.create_task(self.components.run(), name="venue-agent components")
        log.info(
            "agent_ready",
            listen=f"{intake.host}:{self.port}",
            driver=self.driver.name,
            venue=self.settings.venue.id,
            outbox=str(self.settings.storage.path),
            fd_limit=soft,
            max_connections=cap,
        )

    async def authorize(self, refresh_token: str) -> int:
        """Give the driver a new refresh token and resume injection; return how many orders were requeued."""
        if not isinstance(self.driver, Reauthorizable):
            msg = f"the {self.driver.name!r} driver takes no refresh token"
            raise TypeError(msg)
        await self.driver.authorize(refresh_token)
        await self.outbox.event("pos_authorized", {"driver": self.driver.name})
        return await self.dispatcher.resume_after_auth("POS re-authorised (venue-agent pos authorize)")

    async def health_check(self) -> tuple[bool, dict[str, Any]]:
        """Return (ready, snapshot): ready means the outbox is open and every loop is running."""
        ready = self._is_ready()
        return ready, await self.health.snapshot(ready=ready)

    def _is_ready(self) -> bool:
        return self.ready.is_set() and self.outbox.is_open and all(not t.done() for t in self._tasks.values())

    async def _health_snapshot(self) -> dict[str, Any]:
        return (await self.health_check())[1]

    def component_states(self) -> dict[str, str]:
        """Return each component's state: ``intake`` (ready/not_ready), ``pos``, ``disk`` and ``printer:<name>``."""
        states = {
            "intake": "ready" if self._is_ready() else "not_ready",
            "pos": self.dispatcher.pos.state(self.dispatcher.circuit),
            "disk": disk_state(self.outbox.disk_free_bytes(), self.outbox.min_free_mb),
            "outbox": self.outbox.integrity.state,
        }
        return states | {f"printer:{p['name']}": p["state"] for p in self.printer.health()}

    def loops(self) -> list[asyncio.Task[Any]]:
        """Return the agent's running loops (each should run until the agent stops)."""
        return list(self._tasks.values())

    def failed_task(self) -> asyncio.Task[Any] | None:
        """Return a loop that ended (it should never), if any."""
        return next((t for t in self._tasks.values() if t.done()), None)

    async def stop(self) -> None:
        """Stop taking orders, finish POS calls in flight (bounded), stop the loops, close the outbox."""
        log.info("agent_stopping")
        components = self._tasks.pop("components", None)
        if components is not None:
            components.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await components
        self.ready.clear()
        if self.advertiser is not None:
            await self.advertiser.stop()
        if self._server is not None:
            self._server.should_exit = True
            intake = self._tasks.pop("intake", None)
            if intake is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(intake, timeout=6)
        cut = await self.dispatcher.drain(DRAIN_SECONDS)
        if cut:
            log.warning("pos_calls_cut_at_shutdown", count=cut)
        for name in LOOPS:
            task = self._tasks.pop(name, None)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        with contextlib.suppress(Exception):
            await self.outbox.event("agent_stopped")
        mqtt = self._tasks.pop("mqtt", None)
        if mqtt is not None and self.mqtt is not None:
            # Forwards what is left and publishes the retained offline status before disconnecting (bounded).
            await self.mqtt.close()
            mqtt.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await mqtt
        await self.driver.aclose()
        await self.outbox.close()
        log.info("agent_stopped")

    async def _retention(self) -> None:
        while True:
            try:
                await self.outbox.purge(self.settings.storage.retention_days, forwarding=self.settings.mqtt.enabled)
            except Exception as exc:  # a failed purge must not stop the agent; the next round tries again
                log.warning("purge_failed", error=str(exc))
            await self.clock.sleep(RETENTION_INTERVAL_SECONDS)

    async def _integrity(self) -> None:
        # The check at start ran in Outbox.open(); this one repeats it while the agent runs.
        while True:
            await self.clock.sleep(INTEGRITY_CHECK_SECONDS)
            before = self.outbox.integrity.state
            try:
                result = await self.outbox.check_integrity()
            except Exception as exc:  # a failed check must not stop the agent; the next round tries again
                log.warning("outbox_integrity_check_failed", error=str(exc))
                continue
            if result.ok:
                log.info("outbox_integrity_ok", path=str(self.outbox.path))
                continue
            log.error("outbox_integrity_failed", path=str(self.outbox.path), detail=result.detail)
            if before != "failed":
                with contextlib.suppress(Exception):
                    payload = alerts.outbox_damaged(path=str(self.outbox.path), detail=result.detail or "")
                    await self.outbox.alert("outbox_integrity_failed", "critical", payload)


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
