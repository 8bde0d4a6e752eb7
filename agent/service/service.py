"""The agent: opens the outbox, starts its loops and the intake server, and shuts them down in order."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
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
from drivers.pos.base import Driver, Reauthorizable
from drivers.pos.registry import build_driver
from drivers.printers.base import Transport

log = structlog.get_logger("venue_agent.service")

DRAIN_SECONDS = 10.0
RETENTION_INTERVAL_SECONDS = 3600.0
# PRAGMA quick_check reads the whole file (about a second per 100 MB on an SD card) in a thread of its own.
INTEGRITY_CHECK_SECONDS = 6 * 3600.0
# The agent's loops, cancelled in this order at shutdown once the POS calls in flight are done.
LOOPS = ("dispatcher", "scheduler", "prober", "printer", "printer-prober", "retention", "integrity", "availability")


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
