"""Availability in the running agent (in-process, fake clock): the endpoint, the debounce, seq across restarts."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.service.availability import CHECK_SECONDS
from tests.conftest import RunningAgent, Sim, agent_settings, run_agent
from tests.mosquitto import Mosquitto, _broker  # noqa: F401  (the broker fixture)
from tests.test_mqtt import mqtt_settings, subscribed

DEBOUNCE = 30
TOPIC = "venues/harbour-kitchen/availability"


async def availability(running: RunningAgent) -> dict[str, Any]:
    """``GET /v1/availability``."""
    response = await running.client.get("/v1/availability")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_pause_waits_the_debounce_and_seq_survives_a_restart(tmp_path: Path, sim: Sim) -> None:
    """POS not ready with fallback off: false only after 30 s; after a restart (POS back) true with seq + 1."""
    settings = agent_settings(
        tmp_path, sim.url, fallback={"enabled": False}, availability={"debounce_seconds": DEBOUNCE}
    )
    async with run_agent(settings) as running:
        first = await availability(running)
        assert (first["accepting"], first["reason"], first["seq"]) == (True, "ok", 1)
        await sim.state.apply_faults({"not_ready": True})  # probes agree with the notification below
        await running.agent.dispatcher.readiness_pushed(ready=False, detail="app closed", conditions={})
        await running.advance(CHECK_SECONDS)  # the next reading sees the POS down
        began = running.clock.now()
        await running.advance(DEBOUNCE - 2)
        assert (await availability(running)) == first, "paused before the debounce ran out"
        await running.advance(2)
        paused = await availability(running)
        assert (paused["accepting"], paused["reason"], paused["seq"]) == (False, "pos_down_and_fallback_off", 2)
        assert datetime.fromisoformat(paused["since"]) == began
    await sim.state.apply_faults({"not_ready": False})
    async with run_agent(settings) as running:
        resumed = await availability(running)
        assert (resumed["accepting"], resumed["reason"], resumed["seq"]) == (True, "ok", 3)
    conn = sqlite3.connect(tmp_path / "outbox.db")
    try:
        kinds = [r[0] for r in conn.execute("SELECT type FROM events WHERE type = 'availability_changed'")]
    finally:
        conn.close()
    assert len(kinds) == 3, "each published change is an event (forwarded on P/events)"


async def test_endpoint_needs_the_bearer_token(tmp_path: Path, sim: Sim) -> None:
    """Like every /v1 call, the endpoint answers 401 without the intake token."""
    settings = agent_settings(tmp_path, sim.url, intake={"listen": "127.0.0.1:0", "token": "s3cret-token"})
    async with run_agent(settings) as running:
        assert (await availability(running))["accepting"] is True
        response = await running.client.get("/v1/availability", headers={"Authorization": ""})
        assert response.status_code == 401


async def test_retained_value_is_published_again_after_the_broker_lost_it(
    tmp_path: Path, sim: Sim, broker: Mosquitto
) -> None:
    """A broker restarted without persistence forgets retained messages: the agent publishes the value on reconnect."""
    settings = mqtt_settings(tmp_path, sim, broker)
    async with run_agent(settings) as running:
        async with subscribed(broker.port, TOPIC) as sub:
            before = (await sub.wait(TOPIC, bool))[-1]
        assert before == await availability(running)
        broker.restart()
        async with subscribed(broker.port, TOPIC, identifier="across-restart") as sub:
            again = (await sub.wait(TOPIC, bool, timeout=20))[-1]
        assert again == before, "the same value (same seq), not a new change"
        async with subscribed(broker.port, TOPIC, identifier="later") as late:
            retained = (await late.wait(TOPIC, bool))[-1]
    assert retained == before
    assert all(is_retained for _, _, is_retained in late.messages), "the broker holds it retained again"
