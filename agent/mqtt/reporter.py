"""The MQTT reporter (docs/mqtt.md): presence, health and store-and-forward of events and alerts to the ops console.

Nothing in the order path awaits this module: the outbox is the durability layer, and this reporter only reads
unpublished rows from it and marks them published after the broker acknowledged them (QoS 1 PUBACK).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sqlite3
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, Literal

import aiomqtt
import structlog
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent import __version__
from agent.domain.clock import Clock
from agent.domain.config import Settings
from agent.mqtt.commands import HealthFn, MqttControl
from agent.outbox.records import EventRecord
from agent.outbox.store import Outbox

log = structlog.get_logger("venue_agent.mqtt")

BACKOFF_INITIAL_SECONDS = 1.0
# Low enough that a venue is back on the console within seconds of the broker; the jitter (half to all of the
# delay) spreads hundreds of venues reconnecting to a restarted broker.
BACKOFF_MAX_SECONDS = 15.0
POLL_SECONDS = 1.0
BATCH_SIZE = 500
KEEPALIVE_SECONDS = 30
CLOSE_TIMEOUT_SECONDS = 3.0
# The broker keeps the session (subscriptions, QoS 1 orders and commands) this long while the agent is away.
SESSION_EXPIRY_SECONDS = 86_400
# CONNACK to an MQTT 5 CONNECT from a broker that speaks only 3.1.1: return code 1, which paho reports as reason
# 132 "Unsupported protocol version".
UNSUPPORTED_PROTOCOL = (1, 132)

Table = Literal["events", "alerts"]
AvailabilityFn = Callable[[], dict[str, Any] | None]


class MqttReporter:
    """Keeps one MQTT connection to the ops broker (reconnecting with capped backoff) and reports over it."""

    def __init__(
        self,
        *,
        settings: Settings,
        outbox: Outbox,
        health: HealthFn,
        clock: Clock,
        control: MqttControl | None = None,
        changed: asyncio.Event | None = None,
        availability: AvailabilityFn | None = None,
        availability_changed: asyncio.Event | None = None,
    ) -> None:
        self.settings = settings
        self.changed = changed
        self.availability = availability
        self.availability_changed = availability_changed or asyncio.Event()
        self.control = control
        self.outbox = outbox
        self.health = health
        self.clock = clock
        self.prefix = f"{settings.mqtt.topic_prefix}/{settings.venue.id}"
        self.boot_id = str(uuid.uuid4())
        self.births = 0
        self.protocol = aiomqtt.ProtocolVersion.V5
        self.published = {"events": 0, "alerts": 0}
        self.refused = 0
        self._closing = asyncio.Event()
        self._closed = asyncio.Event()
        self._since = ""

    # ---- public ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, report and reconnect forever; return only by cancellation (after close(), it idles)."""
        delay = BACKOFF_INITIAL_SECONDS
        failing = False
        while not self._closing.is_set():
            try:
                async with self._client() as client:
                    await self._publish_status(client, "online")
                    if self.control is not None:
                        for topic in self.control.topics:
                            await client.subscribe(topic, qos=1)
                    log.info("mqtt_connected", host=self.settings.mqtt.host, seq=self.births)
                    delay, failing = BACKOFF_INITIAL_SECONDS, False
                    await self._connected(client)
                    # Only close() ends a session without an error: say goodbye before the context disconnects.
                    await self._goodbye(client)
            except MqttConnectError as exc:
                if self._fall_back(exc):
                    continue
                failing = self._log_failure(failing, str(exc))
            except aiomqtt.MqttError as exc:
                failing = self._log_failure(failing, str(exc))
            except Exception as exc:  # a bug or a storage error must not end the agent: report, back off, retry
                log.warning("mqtt_reporter_error", error=repr(exc))
                failing = True
            if self._closing.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, BACKOFF_MAX_SECONDS)
        self._closed.set()
        await asyncio.Event().wait()  # closed: idle until the owner cancels this task

    async def close(self) -> None:
        """Publish the retained ``offline`` status (when connected), then disconnect; bounded in time."""
        self._closing.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), timeout=CLOSE_TIMEOUT_SECONDS + 1)

    # ---- the connection ----------------------------------------------------------------------

    def _client(self) -> aiomqtt.Client:
        mqtt = self.settings.mqtt
        assert mqtt.host is not None
        assert mqtt.port is not None
        self.births += 1
        self._since = self.clock.now().isoformat()
        tls = None
        if mqtt.tls:
            tls = aiomqtt.TLSParameters(
                ca_certs=str(mqtt.ca_file) if mqtt.ca_file else None,
                certfile=str(mqtt.cert_file) if mqtt.cert_file else None,
                keyfile=str(mqtt.key_file) if mqtt.key_file else None,
            )
        will = aiomqtt.Will(f"{self.prefix}/status", self._status("offline"), qos=1, retain=True)
        # A persistent session from the very first connect: orders sent while the agent was away are delivered.
        # On 3.1.1 the session lasts as long as the broker keeps sessions (mosquitto: persistent_client_expiration).
        session: dict[str, Any] = {"clean_session": False}
        if self.protocol is aiomqtt.ProtocolVersion.V5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = SESSION_EXPIRY_SECONDS
            session = {"clean_start": False, "properties": properties}
        client = aiomqtt.Client(
            mqtt.host,
            mqtt.port,
            identifier=f"venue-agent-{self.settings.venue.id}",
            protocol=self.protocol,
            username=mqtt.username,
            password=mqtt.password.get_secret_value() if mqtt.password else None,
            tls_params=tls,
            keepalive=KEEPALIVE_SECONDS,
            will=will,
            **session,
        )
        # aiomqtt 2.5 has no public manual acknowledgement: this is the one place that reaches its paho client.
        # With it, paho sends no PUBACK on receipt; _watch acks each message after its order is committed.
        client._client.manual_ack_set(True)
        return client

    def _fall_back(self, exc: MqttConnectError) -> bool:
        """Switch to MQTT 3.1.1 (for the life of the process) when the broker refused 5; return whether it did."""
        if self.protocol is not aiomqtt.ProtocolVersion.V5 or exc.rc not in UNSUPPORTED_PROTOCOL:
            return False
        self.protocol = aiomqtt.ProtocolVersion.V311
        log.warning("mqtt_protocol_fallback", host=self.settings.mqtt.host, protocol="3.1.1", reason=str(exc))
        return True

    def _log_failure(self, failing: bool, reason: str) -> bool:
        if failing:
            log.debug("mqtt_unavailable", host=self.settings.mqtt.host, reason=reason)
        else:
            log.warning("mqtt_unavailable", host=self.settings.mqtt.host, reason=reason)
        return True

    async def _connected(self, client: aiomqtt.Client) -> None:
        """Report until the connection drops (raises MqttError) or close() is called (returns)."""
        loops: dict[str, Coroutine[Any, Any, None]] = {
            "watch": self._watch(client),
            "health": self._health_loop(client),
            "forward": self._forward_loop(client),
            "availability": self._availability_loop(client),
            "closing": self._wait_closing(),
        }
        tasks = [asyncio.create_task(coro, name=f"venue-agent mqtt {name}") for name, coro in loops.items()]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()  # re-raise the MqttError that ended the session

    async def _wait_closing(self) -> None:
        await self._closing.wait()

    async def _watch(self, client: aiomqtt.Client) -> None:
        """Handle commands and orders one at a time; raise MqttError as soon as the connection drops.

        Each message is PUBACKed only after it was handled (an order: committed and its answer published), so a
        message cut off by a crash or a drop is redelivered by the broker (persistent session); a redelivered order
        is a duplicate, a no-op. One message's error is logged and counted and never ends the session.
        """
        async for message in client.messages:
            await self._handle(client, message)
            # Not on cancellation or a dropped connection: the broker redelivers what was not acked.
            client._client.ack(message.mid, message.qos)  # manual ack, see _client

    async def _handle(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        """Run one message and publish its answer; raise only MqttError (the connection dropped)."""
        if self.control is None or not isinstance(message.payload, bytes):
            return
        props = message.properties
        try:
            answer = await self.control.handle(
                message.topic.value,
                message.payload,
                response_topic=getattr(props, "ResponseTopic", None),
                correlation=getattr(props, "CorrelationData", None),
            )
        except Exception as exc:  # one message's failure never ends the session (it held other orders)
            self.refused += 1
            log.error("mqtt_message_failed", topic=message.topic.value, refused=self.refused, exc_info=exc)
            return
        if answer is None:
            return
        reply_props = None
        if answer.correlation is not None:
            reply_props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            reply_props.CorrelationData = answer.correlation
        body = json.dumps(answer.payload, separators=(",", ":"), default=str)
        await client.publish(answer.topic, body, qos=1, retain=False, properties=reply_props)

    async def _goodbye(self, client: aiomqtt.Client) -> None:
        """Forward what is left (bounded), then publish the retained ``offline`` status."""
        with contextlib.suppress(TimeoutError, aiomqtt.MqttError):
            async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                await self._forward(client, "events")
                await self._forward(client, "alerts")
                await self._publish_status(client, "offline")
                log.info("mqtt_offline_published")

    # ---- presence and health -----------------------------------------------------------------

    def _status(self, state: str) -> str:
        body = {"state": state, "since": self._since, "version": __version__, "boot_id": self.boot_id}
        return json.dumps(body | {"seq": self.births}, separators=(",", ":"))

    async def _publish_status(self, client: aiomqtt.Client, state: str) -> None:
        if state == "offline":
            self._since = self.clock.now().isoformat()
        await client.publish(f"{self.prefix}/status", self._status(state), qos=1, retain=True)

    async def _health_loop(self, client: aiomqtt.Client) -> None:
        """Publish the retained health every ``health_interval_seconds``, and at once when a component changes."""
        while True:
            if self.changed is not None:
                self.changed.clear()
            payload = json.dumps(await self.health(), separators=(",", ":"), default=str)
            await client.publish(f"{self.prefix}/health", payload, qos=1, retain=True)
            await self._until_due_or_changed(self.settings.mqtt.health_interval_seconds)

    async def _until_due_or_changed(self, seconds: float) -> None:
        interval = asyncio.create_task(self.clock.sleep(seconds), name="venue-agent mqtt health interval")
        waits: set[asyncio.Task[Any]] = {interval}
        if self.changed is not None:
            waits.add(asyncio.create_task(self.changed.wait(), name="venue-agent mqtt health change"))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def _availability_loop(self, client: aiomqtt.Client) -> None:
        """Publish the retained availability on every connect, then each time it changes (docs/mqtt.md)."""
        while True:
            # Cleared before reading: a change landing during the publish sets it again and is not missed.
            self.availability_changed.clear()
            value = self.availability() if self.availability is not None else None
            if value is not None:
                payload = json.dumps(value, separators=(",", ":"))
                await client.publish(f"{self.prefix}/availability", payload, qos=1, retain=True)
            await self.availability_changed.wait()

    # ---- store-and-forward -------------------------------------------------------------------

    async def _forward_loop(self, client: aiomqtt.Client) -> None:
        while True:
            sent = await self._forward(client, "events") + await self._forward(client, "alerts")
            if not sent:
                await asyncio.sleep(POLL_SECONDS)

    async def _forward(self, client: aiomqtt.Client, table: Table) -> int:
        """Publish up to BATCH_SIZE unpublished rows of ``table`` in seq order; mark those acknowledged."""
        rows = await self.outbox.read(lambda c: _unpublished(c, table))
        done: list[int] = []
        try:
            # One at a time: concurrent publishes gain little with aiomqtt 2.x (measured over a 10 ms round trip:
            # 5 in flight, none; 10 in flight, 1.75x) and it logs a warning per publish past 10 pending.
            for seq, payload in rows:
                await client.publish(f"{self.prefix}/{table}", payload, qos=1, retain=False)
                done.append(seq)
        finally:
            if done:
                # Marked only after the PUBACK: a row cut off mid-batch is sent again (at least once, in order).
                await self.outbox.write(lambda c: _mark_published(c, table, done))
                self.published[table] += len(done)
        return len(done)


def _unpublished(conn: sqlite3.Connection, table: Table) -> list[tuple[int, str]]:
    """Return (seq, JSON payload) for the oldest unpublished rows of ``table``."""
    if table == "events":
        rows = conn.execute("SELECT * FROM events WHERE published = 0 ORDER BY seq LIMIT ?", (BATCH_SIZE,))
        return [(r["seq"], json.dumps(EventRecord.from_row(r).as_dict(), separators=(",", ":"))) for r in rows]
    rows = conn.execute("SELECT seq, payload FROM alerts WHERE published = 0 ORDER BY seq LIMIT ?", (BATCH_SIZE,))
    return [(r["seq"], r["payload"]) for r in rows]


def _mark_published(conn: sqlite3.Connection, table: Table, seqs: list[int]) -> None:
    """Set ``published = 1`` on the given rows of ``table``."""
    marks = ",".join("?" * len(seqs))
    conn.execute(f"UPDATE {table} SET published = 1 WHERE seq IN ({marks})", seqs)  # noqa: S608
