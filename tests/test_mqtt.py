"""The MQTT reporter (docs/mqtt.md) against a real mosquitto: presence, Will, health, store-and-forward, alerts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from structlog.testing import capture_logs

from agent import __version__
from agent.domain.config import Settings
from agent.service.components import CHECK_SECONDS as COMPONENTS_CHECK_SECONDS
from tests.conftest import Sim, agent_settings, eventually, make_order, run_agent

# _broker and _persistent_broker are fixtures: importing them registers "broker" and "persistent_broker" here.
from tests.mosquitto import Mosquitto, _broker, _persistent_broker, free_port  # noqa: F401
from tests.mqtt311_proxy import Mqtt311Only

VENUE = "harbour-kitchen"
P = f"venues/{VENUE}"
BIN = Path(sys.executable).with_name("venue-agent")


class Subscriber:
    """A test-side MQTT client that records every message on its topics, reconnecting when the broker goes."""

    def __init__(self, port: int, topics: list[str], *, identifier: str, persistent: bool = False) -> None:
        self.port = port
        self.topics = topics
        self.identifier = identifier
        self.persistent = persistent
        self.messages: list[tuple[str, dict[str, Any], bool]] = []
        self.subscribed = asyncio.Event()

    def on(self, topic: str) -> list[dict[str, Any]]:
        """Return the payloads received on ``topic``, oldest first."""
        return [payload for t, payload, _ in self.messages if t == topic]

    async def wait(self, topic: str, accept: Callable[[list[dict[str, Any]]], bool], timeout: float = 10) -> Any:
        """Wait until the payloads on ``topic`` satisfy ``accept``; return them."""
        return await eventually(lambda: _value(self.on(topic)), accept, timeout=timeout)

    async def run(self) -> None:
        """Receive until cancelled; reconnect (same session when persistent) after the broker goes away."""
        properties = None
        if self.persistent:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 3600
        while True:
            client = aiomqtt.Client(
                "127.0.0.1",
                self.port,
                identifier=self.identifier,
                protocol=aiomqtt.ProtocolVersion.V5,
                clean_start=not self.persistent,
                properties=properties,
            )
            try:
                async with client:
                    for topic in self.topics:
                        await client.subscribe(topic, qos=1)
                    self.subscribed.set()
                    async for message in client.messages:
                        assert isinstance(message.payload, bytes)
                        self.messages.append((message.topic.value, json.loads(message.payload), message.retain))
            except aiomqtt.MqttError:
                self.subscribed.clear()
                await asyncio.sleep(0.05)


async def _value(value: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return value


@asynccontextmanager
async def subscribed(
    port: int, *topics: str, identifier: str = "test-sub", persistent: bool = False
) -> AsyncIterator[Subscriber]:
    """Run a subscriber on ``topics`` for the block (after its first SUBACK)."""
    sub = Subscriber(port, list(topics), identifier=identifier, persistent=persistent)
    task = asyncio.create_task(sub.run(), name="test mqtt subscriber")
    try:
        await asyncio.wait_for(sub.subscribed.wait(), 5)
        yield sub
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def mqtt_settings(tmp_path: Path, sim: Sim, broker: Mosquitto, **mqtt: Any) -> Settings:
    """Return in-process agent settings with [mqtt] pointing at the test broker."""
    section = {"enabled": True, "host": "127.0.0.1", "port": broker.port, "health_interval_seconds": 1, **mqtt}
    return agent_settings(tmp_path, sim.url, mqtt=section)


async def test_birth_health_and_offline_on_close(tmp_path: Path, sim: Sim, broker: Mosquitto) -> None:
    """On connect: retained online status (boot_id, version, seq) and retained health; close() leaves offline."""
    async with run_agent(mqtt_settings(tmp_path, sim, broker)) as running:
        async with subscribed(broker.port, f"{P}/status", f"{P}/health") as sub:
            statuses = await sub.wait(f"{P}/status", lambda s: bool(s) and s[-1]["state"] == "online")
            health = await sub.wait(f"{P}/health", bool)
        online = statuses[-1]
        assert online["version"] == __version__
        assert online["seq"] == 1
        assert running.agent.mqtt is not None
        assert online["boot_id"] == running.agent.mqtt.boot_id
        assert "+00:00" in online["since"]
        snapshot = health[-1]
        for key in ("ts", "uptime_s", "version", "outbox", "oldest_pending_age_s", "last_injected_at", "pos"):
            assert key in snapshot
        for key in ("printers", "disk_free_mb", "db_size_mb", "rss_mb", "seq"):
            assert key in snapshot
        assert set(snapshot["outbox"]) >= {"held", "scheduled", "queued", "retrying", "awaiting_pos", "failed"}
        assert set(snapshot["pos"]) >= {"driver", "state", "latency_ms", "circuit"}
    # A subscriber arriving after the clean shutdown sees the retained offline status, same boot.
    async with subscribed(broker.port, f"{P}/status", f"{P}/health", identifier="late") as late:
        status = await late.wait(f"{P}/status", bool)
        await late.wait(f"{P}/health", bool)
    assert all(retained for _, _, retained in late.messages)
    assert status[-1]["state"] == "offline"
    assert status[-1]["boot_id"] == online["boot_id"]
    assert status[-1]["seq"] == online["seq"]


async def test_events_survive_a_broker_restart_in_order(tmp_path: Path, sim: Sim, persistent_broker: Mosquitto) -> None:
    """Events written while the broker is down arrive after it returns, in seq order, and are marked published."""
    broker = persistent_broker
    async with (
        subscribed(broker.port, f"{P}/events", identifier="console", persistent=True) as sub,
        run_agent(mqtt_settings(tmp_path, sim, broker)) as running,
    ):
        outbox = running.agent.outbox
        await sub.wait(f"{P}/events", lambda e: any(x["type"] == "agent_started" for x in e))
        broker.stop()
        for n in range(45):  # more than two publish windows
            await outbox.event("test_event", {"n": n})
        # The order path does not wait for the broker: the intake answers at once.
        response = await running.client.post("/v1/orders", json=make_order("ord_while_down"))
        assert response.status_code == 202
        broker.start()
        events = await sub.wait(f"{P}/events", lambda e: sum(x["type"] == "test_event" for x in e) >= 45, timeout=15)
        ns = [x["detail"]["n"] for x in events if x["type"] == "test_event"]
        assert ns == list(range(45))
        seqs = [x["seq"] for x in events]
        assert seqs == sorted(seqs)

        async def unpublished() -> int:
            return int(
                await outbox.read(
                    lambda c: c.execute(
                        "SELECT COUNT(*) FROM events WHERE published = 0 AND type = 'test_event'"
                    ).fetchone()[0]
                )
            )

        await eventually(unpublished, lambda n: n == 0)


async def test_failed_order_raises_an_alert(tmp_path: Path, sim: Sim, broker: Mosquitto) -> None:
    """An order the POS refuses as sold out arrives on P/alerts with the order, the reason and the action."""
    sim.state.faults.sold_out_skus = ["PZ-MARG"]
    async with (
        subscribed(broker.port, f"{P}/alerts") as sub,
        run_agent(mqtt_settings(tmp_path, sim, broker)) as running,
    ):
        response = await running.client.post("/v1/orders", json=make_order("ord_sold_out"))
        assert response.status_code == 202
        alerts = await sub.wait(f"{P}/alerts", lambda a: any(x["alert"] == "order_failed" for x in a))
    alert = next(x for x in alerts if x["alert"] == "order_failed")
    assert alert["order"]["id"] == "ord_sold_out"
    assert alert["reason"]
    assert alert["action"]
    assert {"ts", "severity"} <= set(alert)


async def test_health_is_published_at_once_when_a_component_changes(
    tmp_path: Path, sim: Sim, broker: Mosquitto
) -> None:
    """A POS that starts refusing credentials shows in P/health within a second, not at the next interval."""
    settings = mqtt_settings(tmp_path, sim, broker, health_interval_seconds=3600)
    async with (
        subscribed(broker.port, f"{P}/health", f"{P}/events") as sub,
        run_agent(settings) as running,
    ):
        first = await sub.wait(f"{P}/health", bool)
        assert first[-1]["pos"]["state"] == "ok"
        sim.state.faults.auth_expired = True
        await running.client.post("/v1/orders", json=make_order("ord_auth"))
        await running.wait_state("ord_auth", "failed")
        await running.advance(COMPONENTS_CHECK_SECONDS)  # the component watcher's next read (agent clock)
        health = await sub.wait(f"{P}/health", lambda h: h[-1]["pos"]["state"] == "auth_required")
        events = await sub.wait(f"{P}/events", lambda e: any(x["type"] == "component_changed" for x in e))
    assert len(health) == 2
    assert health[-1]["seq"] > first[-1]["seq"]
    change = next(x for x in events if x["type"] == "component_changed")
    assert change["order_id"] is None
    assert change["detail"] == {"component": "pos", "from": "ok", "to": "auth_required"}


async def test_falls_back_to_mqtt_311_and_replies_on_the_reply_topic(
    tmp_path: Path, sim: Sim, broker: Mosquitto
) -> None:
    """A broker that refuses MQTT 5 gets 3.1.1: presence, health and commands work, replies go to P/cmd/<name>/reply."""
    async with Mqtt311Only.running(broker.port) as old_broker:
        settings = agent_settings(
            tmp_path, sim.url, mqtt={"enabled": True, "host": "127.0.0.1", "port": old_broker.port}
        )
        with capture_logs() as logs:
            async with (
                subscribed(broker.port, f"{P}/status", f"{P}/health", f"{P}/cmd/+/reply") as sub,
                run_agent(settings),
                aiomqtt.Client("127.0.0.1", broker.port, identifier="test-console") as console,
            ):
                await sub.wait(f"{P}/status", lambda s: bool(s) and s[-1]["state"] == "online")
                await sub.wait(f"{P}/health", bool)
                props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                props.ResponseTopic = "console/replies/1"
                props.CorrelationData = b"req-1"

                async def ask() -> list[dict[str, Any]]:
                    # The agent subscribes just after it connects: ask until it answers.
                    await console.publish(f"{P}/cmd/status", "{}", qos=1, properties=props)
                    await asyncio.sleep(0.1)
                    return sub.on(f"{P}/cmd/status/reply")

                replies = await eventually(ask, bool)
    assert replies[0]["ok"] is True
    assert old_broker.levels[:2] == [5, 4]
    assert all(level == 4 for level in old_broker.levels[1:])
    fallback = [e for e in logs if e["event"] == "mqtt_protocol_fallback"]
    assert len(fallback) == 1
    assert fallback[0]["log_level"] == "warning"
    assert not any(e["event"] == "mqtt_unavailable" for e in logs)


def _process_config(tmp_path: Path, *, agent_port: int, sim: Sim, broker: Mosquitto) -> Path:
    def q(value: object) -> str:
        return json.dumps(str(value))  # a JSON string is a valid TOML basic string

    path = tmp_path / "agent.toml"
    path.write_text(
        f"""
[venue]
id = "{VENUE}"
timezone = "Europe/London"

[storage]
path = {q(tmp_path / "outbox.db")}
min_free_mb = 0

[intake]
listen = "127.0.0.1:{agent_port}"

[pos]
driver = "http"

[pos.http]
url = {q(sim.url)}

[[printers]]
name = "pass"
connection = "file"
path = {q(tmp_path / "tickets.txt")}

[discovery]
advertise = false

[mqtt]
enabled = true
host = "127.0.0.1"
port = {broker.port}

[logging]
level = "warning"
format = "json"
""",
        encoding="utf-8",
    )
    return path


async def test_will_after_sigkill(tmp_path: Path, sim: Sim, broker: Mosquitto) -> None:
    """A ``venue-agent run`` killed with SIGKILL leaves the retained offline status through its Will."""
    config = _process_config(tmp_path, agent_port=free_port(), sim=sim, broker=broker)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VENUE_AGENT_") and k != "NOTIFY_SOCKET"}
    log_path = tmp_path / "agent.log"
    with log_path.open("wb") as log_file:
        popen = subprocess.Popen(
            [str(BIN), "run", "--config", str(config)], stdout=log_file, stderr=subprocess.STDOUT, env=env
        )
    try:
        async with subscribed(broker.port, f"{P}/status") as sub:
            statuses = await sub.wait(f"{P}/status", lambda s: bool(s) and s[-1]["state"] == "online", timeout=15)
            popen.send_signal(signal.SIGKILL)
            popen.wait(timeout=5)
            after = await sub.wait(f"{P}/status", lambda s: s[-1]["state"] == "offline")
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait(timeout=5)
    assert after[-1]["boot_id"] == statuses[-1]["boot_id"]
    assert after[-1]["seq"] == statuses[-1]["seq"]
    assert after[-1]["version"] == statuses[-1]["version"]
    async with subscribed(broker.port, f"{P}/status", identifier="late") as late:
        retained = await late.wait(f"{P}/status", bool)
    assert retained[-1]["state"] == "offline"


async def test_events_written_before_a_sigkill_are_published_after_the_restart(
    tmp_path: Path, sim: Sim, broker: Mosquitto
) -> None:
    """Broker down, an order flows, the agent is SIGKILLed: once both are back, every event it wrote is published."""
    agent_port = free_port()
    config = _process_config(tmp_path, agent_port=agent_port, sim=sim, broker=broker)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VENUE_AGENT_") and k != "NOTIFY_SOCKET"}
    broker.stop()
    runs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        with (tmp_path / f"agent-{len(runs)}.log").open("wb") as log_file:
            runs.append(
                subprocess.Popen(
                    [str(BIN), "run", "--config", str(config)], stdout=log_file, stderr=subprocess.STDOUT, env=env
                )
            )

    async def state(client: httpx.AsyncClient, order_id: str) -> str | None:
        try:
            response = await client.get(f"http://127.0.0.1:{agent_port}/v1/orders/{order_id}", timeout=2)
        except httpx.TransportError:
            return None
        return str(response.json().get("state")) if response.status_code == 200 else None

    try:
        async with httpx.AsyncClient(trust_env=False) as client:
            start()

            async def accepted() -> int | None:
                try:
                    url = f"http://127.0.0.1:{agent_port}/v1/orders"
                    return (await client.post(url, json=make_order("ord_killed"), timeout=2)).status_code
                except httpx.TransportError:
                    return None

            assert await eventually(accepted, lambda code: code in (200, 202), timeout=15) == 202
            await eventually(lambda: state(client, "ord_killed"), lambda s: s == "injected", timeout=10)
            runs[-1].send_signal(signal.SIGKILL)
            runs[-1].wait(timeout=5)

            broker.start()
            async with subscribed(broker.port, f"{P}/events") as sub:
                start()
                events = await sub.wait(
                    f"{P}/events",
                    lambda e: (
                        sum(x["type"] == "agent_started" for x in e) >= 2
                        and any(x["order_id"] == "ord_killed" and x["state"] == "injected" for x in e)
                    ),
                    timeout=20,
                )
    finally:
        for popen in runs:
            if popen.poll() is None:
                popen.kill()
                popen.wait(timeout=5)
    seqs = [x["seq"] for x in events]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    first_run = seqs.index(next(x["seq"] for x in events if x["type"] == "agent_started"))
    assert first_run == 0  # the killed run's events come first, from its own agent_started on
    states = [x["state"] for x in events if x["order_id"] == "ord_killed"]
    assert states == ["queued", "sending", "injected"]
