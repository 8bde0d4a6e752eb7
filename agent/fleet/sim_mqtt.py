"""``fleet-sim``'s MQTT edge: one connection per simulated venue, each with its own Will, like real agents.

One connection per venue is what makes the Wills honest: when a venue "loses its internet" its socket is cut
without a DISCONNECT and the broker itself publishes that venue's retained ``offline`` status, exactly as it does
for a real agent. All venues share one event loop and one ticker that advances every venue once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.fleet.sim import Publish, Rates, SimVenue
from agent.fleet.sim_commands import SimCommands

log = structlog.get_logger("venue_agent.fleet")

TICK_SECONDS = 1.0
KEEPALIVE_SECONDS = 30
SESSION_EXPIRY_SECONDS = 86_400
RETRY_SECONDS = (1.0, 5.0)
CLOSE_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class SimOptions:
    """What to simulate and where: venue ids, rates, the broker and its credentials."""

    host: str
    port: int
    venues: tuple[str, ...]
    prefix: str = "venues"
    rates: Rates = field(default_factory=Rates)
    seed: int = 1
    secret: str | None = None
    # venue id -> password; the username is the venue id (the per-venue ACL of config/mosquitto).
    passwords: dict[str, str] | None = None
    connects_per_second: float = 200.0


class FleetSim:
    """Runs every simulated venue over its own MQTT connection until cancelled; counts what it publishes."""

    def __init__(self, options: SimOptions, *, clock: Callable[[], float] = time.time) -> None:
        self.options = options
        self.clock = clock
        rng = random.Random(options.seed)
        now = clock()
        self.venues = {v: SimVenue(v, random.Random(rng.random()), options.rates, started=now) for v in options.venues}
        self.commands = {v: SimCommands(venue, options.secret) for v, venue in self.venues.items()}
        self.queues: dict[str, asyncio.Queue[Publish]] = {v: asyncio.Queue() for v in options.venues}
        self.connected: set[str] = set()
        self.published: Counter[str] = Counter()
        # (venue, event type) -> how many the broker acknowledged.
        self.events: Counter[tuple[str, str]] = Counter()
        self.commands_answered = 0
        # The latest retained body of each (venue, kind) the broker acknowledged: what a console should show.
        self.retained: dict[tuple[str, str], dict[str, object]] = {}
        self.frozen = False
        self._drops: dict[str, asyncio.Event] = {v: asyncio.Event() for v in options.venues}
        self._closing = asyncio.Event()

    async def run(self) -> None:
        """Connect every venue (paced), tick them, keep them connected; return after ``close()``."""
        tasks = [asyncio.create_task(self._ticker(), name="fleet-sim ticker")]
        for i, venue in enumerate(self.venues):
            tasks.append(asyncio.create_task(self._venue(venue, i / self.options.connects_per_second), name=venue))
        try:
            await self._closing.wait()
            await asyncio.gather(*tasks[1:], return_exceptions=True)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        """Ask every venue to publish its ``offline`` status and disconnect, as an agent does on a clean stop."""
        self._closing.set()

    def drop(self, venue: str, seconds: float) -> None:
        """Cut ``venue``'s connection without a DISCONNECT (the broker publishes its Will); back after ``seconds``."""
        self.venues[venue].offline_until = self.clock() + seconds
        self._drops[venue].set()

    def enqueue(self, venue: str, messages: list[Publish]) -> None:
        """Queue messages for ``venue`` (published in order once it is connected; events and alerts are kept)."""
        for message in messages:
            if venue in self.connected or message.kind in ("events", "alerts"):
                self.queues[venue].put_nowait(message)

    # ---- the ticker ------------------------------------------------------------------------------

    async def _ticker(self) -> None:
        while not self._closing.is_set():
            if not self.frozen:
                now = self.clock()
                for name, venue in self.venues.items():
                    if name in self.connected and venue.wants_offline(now):
                        self._drops[name].set()
                        continue
                    try:
                        self.enqueue(name, venue.tick(now))
                    except Exception as exc:  # one venue's bug must not stop the others
                        log.error("fleet_sim_tick_failed", venue=name, exc_info=exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), TICK_SECONDS)

    # ---- one venue's connection ------------------------------------------------------------------

    async def _venue(self, name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        venue = self.venues[name]
        while not self._closing.is_set():
            wait = venue.offline_until - self.clock()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), wait)
                continue
            try:
                await self._session(name, venue)
            except aiomqtt.MqttError as exc:
                log.debug("fleet_sim_disconnected", venue=name, reason=str(exc))
            finally:
                self.connected.discard(name)
            if not self._closing.is_set() and venue.offline_until <= self.clock():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), random.uniform(*RETRY_SECONDS))

    def _client(self, name: str, venue: SimVenue) -> aiomqtt.Client:
        options = self.options
        prefix = f"{options.prefix}/{name}"
        will = aiomqtt.Will(f"{prefix}/status", _json(venue.begin(self.clock())), qos=1, retain=True)
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = SESSION_EXPIRY_SECONDS
        password = options.passwords.get(name) if options.passwords else None
        return aiomqtt.Client(
            options.host,
            options.port,
            identifier=f"venue-agent-{name}",
            protocol=aiomqtt.ProtocolVersion.V5,
            username=name if options.passwords else None,
            password=password,
            keepalive=KEEPALIVE_SECONDS,
            will=will,
            clean_start=False,
            properties=properties,
            timeout=10,
        )

    async def _session(self, name: str, venue: SimVenue) -> None:
        prefix = f"{self.options.prefix}/{name}"
        drop = self._drops[name]
        drop.clear()
        client = self._client(name, venue)
        async with client:
            for message in venue.birth(self.clock()):
                await self._publish(client, name, message)
            await client.subscribe(f"{prefix}/cmd/+", qos=1)
            self.connected.add(name)
            tasks = {
                asyncio.create_task(self._forward(client, name), name=f"{name} forward"),
                asyncio.create_task(self._answer(client, name), name=f"{name} commands"),
                asyncio.create_task(drop.wait(), name=f"{name} drop"),
                asyncio.create_task(self._closing.wait(), name=f"{name} closing"),
            }
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            self.connected.discard(name)
            if drop.is_set():
                _cut(client)
                raise aiomqtt.MqttError("connection cut (simulated)")
            if self._closing.is_set():
                with contextlib.suppress(TimeoutError, aiomqtt.MqttError):
                    async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                        await self._publish(client, name, Publish("status", venue.status("offline"), retain=True))
                return
            for task in done:
                task.result()

    async def _forward(self, client: aiomqtt.Client, name: str) -> None:
        queue = self.queues[name]
        while True:
            message = await queue.get()
            await self._publish(client, name, message)

    async def _publish(self, client: aiomqtt.Client, name: str, message: Publish) -> None:
        topic = f"{self.options.prefix}/{name}/{message.kind}"
        await client.publish(topic, _json(message.payload), qos=1, retain=message.retain)
        self.published[message.kind] += 1
        if message.kind == "events":
            self.events[(name, str(message.payload.get("type")))] += 1
        if message.retain:
            self.retained[(name, message.kind)] = message.payload

    async def _answer(self, client: aiomqtt.Client, name: str) -> None:
        head = f"{self.options.prefix}/{name}/cmd/"
        async for message in client.messages:
            topic = message.topic.value
            if not topic.startswith(head) or "/" in topic[len(head) :] or not isinstance(message.payload, bytes):
                continue
            reply, extra = self.commands[name].handle(topic[len(head) :], message.payload, self.clock())
            self.enqueue(name, extra)
            response = getattr(message.properties, "ResponseTopic", None)
            correlation = getattr(message.properties, "CorrelationData", None)
            props = None
            if response and correlation is not None:
                props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                props.CorrelationData = correlation
            body = json.dumps(reply, separators=(",", ":"), default=str)
            await client.publish(response or f"{topic}/reply", body, qos=1, retain=False, properties=props)
            self.commands_answered += 1


def _cut(client: aiomqtt.Client) -> None:
    """Shut the connection's socket down without a DISCONNECT packet, as a lost link or a power cut would."""
    sock = client._client.socket()  # aiomqtt has no public way to drop a connection uncleanly
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _json(body: dict[str, object]) -> str:
    return json.dumps(body, separators=(",", ":"), default=str)
