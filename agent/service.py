"""The agent: opens the outbox, starts its loops and the intake server, and shuts them down in order."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Generator
from typing import Any

import structlog
import uvicorn

from agent import outbox_ops as ops
from agent.advertise import Advertiser
from agent.clock import Clock, SystemClock
from agent.config import Settings
from agent.dispatcher import Dispatcher
from agent.health import HealthReporter
from agent.intake import create_app
from agent.operations import Orders
from agent.outbox import Outbox
from agent.printing import PrintWorker
from agent.states import ErrorClass
from agent.webhooks import LightspeedWebhooks
from drivers.pos.base import Driver, Reauthorizable
from drivers.pos.registry import build_driver
from drivers.printers.base import Transport

log = structlog.get_logger("venue_agent.service")

DRAIN_SECONDS = 10.0
RETENTION_INTERVAL_SECONDS = 3600.0


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the agent."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Do nothing: the agent owns SIGTERM/SIGINT and stops the server itself."""
        yield


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
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._server: _Server | None = None
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
        # Orders that failed on credentials are tried once more after a restart: the technician may have
        # fixed the credentials; if not, they fail again and the alert is raised again.
        now = self.clock.now()
        await self.outbox.write(
            lambda c: ops.requeue_failed(c, ErrorClass.AUTH, now=now, reason="agent restarted: credentials retried")
        )
        for name, coro in (
            ("dispatcher", self.dispatcher.run_sender()),
            ("scheduler", self.dispatcher.run_scheduler()),
            ("prober", self.dispatcher.run_prober()),
            ("printer", self.printer.run()),
            ("printer-prober", self.printer.run_prober()),
            ("retention", self._retention()),
        ):
            self._tasks[name] = asyncio.create_task(coro, name=f"venue-agent {name}")
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
        )
        config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", http="httptools", timeout_graceful_shutdown=5
        )
        self._server = _Server(config)
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
        log.info(
            "agent_ready",
            listen=f"{intake.host}:{self.port}",
            driver=self.driver.name,
            venue=self.settings.venue.id,
            outbox=str(self.settings.storage.path),
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
        ready = self.ready.is_set() and self.outbox.is_open and all(not t.done() for t in self._tasks.values())
        return ready, await self.health.snapshot(ready=ready)

    def failed_task(self) -> asyncio.Task[Any] | None:
        """Return a loop that ended (it should never), if any."""
        return next((t for t in self._tasks.values() if t.done()), None)

    async def stop(self) -> None:
        """Stop taking orders, finish POS calls in flight (bounded), stop the loops, close the outbox."""
        log.info("agent_stopping")
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
        for name in ("dispatcher", "scheduler", "prober", "printer", "printer-prober", "retention"):
            task = self._tasks.pop(name, None)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        with contextlib.suppress(Exception):
            await self.outbox.event("agent_stopped")
        await self.driver.aclose()
        await self.outbox.close()
        log.info("agent_stopped")

    async def _retention(self) -> None:
        while True:
            try:
                await self.outbox.purge(self.settings.storage.retention_days)
            except Exception as exc:  # a failed purge must not stop the agent; the next round tries again
                log.warning("purge_failed", error=str(exc))
            await self.clock.sleep(RETENTION_INTERVAL_SECONDS)


async def run_agent(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT, then shut down in order; return the exit code."""
    agent = Agent(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await agent.start()
    except BaseException:
        await agent.stop()
        raise
    watcher = asyncio.create_task(stop.wait(), name="venue-agent stop signal")
    try:
        while not stop.is_set():
            failed = agent.failed_task()
            if failed is not None:
                log.error("agent_loop_died", task=failed.get_name(), error=repr(failed.exception()))
                await agent.stop()
                return 1
            await asyncio.wait({watcher}, timeout=1.0)
    finally:
        watcher.cancel()
    await agent.stop()
    return 0
