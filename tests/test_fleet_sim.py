"""fleet-sim against a real Mosquitto: each venue's Will, availability, and command replies as a real agent's."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.fleet.sim import Publish, Rates, SimVenue
from agent.fleet.sim_mqtt import FleetSim, SimOptions
from agent.mqtt.commands import sign
from tests.conftest import eventually

# _broker is a fixture: importing it registers "broker" here.
from tests.mosquitto import Mosquitto, _broker  # noqa: F401

SECRET = "fleet-secret"
QUIET = Rates(
    health_interval=30,
    orders_per_hour=0,
    offline_per_hour=0,
    paper_out_per_hour=0,
    pos_down_per_hour=0,
    debounce_seconds=1.0,
)


async def value(x: Any) -> Any:
    return x


@asynccontextmanager
async def running(sim: FleetSim) -> AsyncIterator[FleetSim]:
    task = asyncio.create_task(sim.run())
    try:
        await eventually(lambda: value(len(sim.connected)), lambda n: n == len(sim.venues), timeout=20)
        yield sim
    finally:
        sim.close()
        await asyncio.wait_for(task, 15)


@asynccontextmanager
async def recorder(port: int, topic: str) -> AsyncIterator[dict[str, list[tuple[dict[str, Any], bool]]]]:
    seen: dict[str, list[tuple[dict[str, Any], bool]]] = {}
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"rec-{uuid.uuid4().hex[:6]}") as client:
        await client.subscribe(topic, qos=1)

        async def read() -> None:
            async for m in client.messages:
                assert isinstance(m.payload, bytes)
                seen.setdefault(m.topic.value, []).append((json.loads(m.payload), m.retain))

        task = asyncio.create_task(read())
        try:
            yield seen
        finally:
            task.cancel()


def venues(n: int) -> tuple[str, ...]:
    return tuple(f"sim-{i:02d}" for i in range(1, n + 1))


async def test_each_venue_has_its_own_will_and_a_clean_stop_says_offline(broker: Mosquitto) -> None:
    """A cut connection makes the broker publish that venue's Will; a clean stop publishes every offline status."""
    sim = FleetSim(SimOptions("127.0.0.1", broker.port, venues(20), rates=QUIET, connects_per_second=500))
    async with recorder(broker.port, "venues/+/status") as seen:
        async with running(sim):
            await eventually(lambda: value(len(seen)), lambda n: n == 20)
            birth = seen["venues/sim-05/status"][-1][0]
            sim.drop("sim-05", 3600)
            offline = await eventually(
                lambda: value(seen["venues/sim-05/status"]), lambda s: s[-1][0]["state"] == "offline"
            )
            # The broker's Will: the birth's boot and connection, as the reporter sets it at CONNECT.
            assert {k: offline[-1][0][k] for k in ("boot_id", "seq", "since")} == {
                k: birth[k] for k in ("boot_id", "seq", "since")
            }
            assert "sim-05" not in sim.connected and len(sim.connected) == 19
        await eventually(
            lambda: value({messages[-1][0]["state"] for messages in seen.values()}), lambda s: s == {"offline"}
        )


async def test_commands_are_answered_like_an_agent_with_signatures_checked(broker: Mosquitto) -> None:
    """Signed commands get the agent's replies on the MQTT 5 response topic; unsigned ones are refused and alerted."""
    sim = FleetSim(SimOptions("127.0.0.1", broker.port, venues(3), rates=QUIET, secret=SECRET))
    venue = sim.venues["sim-02"]
    failed = _failed_order(venue)
    async with recorder(broker.port, "venues/sim-02/alerts") as alerts, running(sim):
        async with aiomqtt.Client(
            "127.0.0.1", broker.port, identifier="ops", protocol=aiomqtt.ProtocolVersion.V5
        ) as ops:
            await ops.subscribe("ops/replies", qos=1)

            async def ask(name: str, body: dict[str, Any], *, signed: bool = True) -> dict[str, Any]:
                body = {**body, "ts": time.time()}
                if signed:
                    body["sig"] = sign(body, SECRET, command=name, venue="sim-02")
                props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                props.ResponseTopic = "ops/replies"
                props.CorrelationData = name.encode()
                await ops.publish(f"venues/sim-02/cmd/{name}", json.dumps(body), qos=1, properties=props)
                async with asyncio.timeout(5):
                    async for m in ops.messages:
                        assert m.properties is not None and m.properties.CorrelationData == name.encode()
                        assert isinstance(m.payload, bytes)
                        return dict(json.loads(m.payload))
                raise AssertionError("no reply")

            status = await ask("status", {})
            assert status["ok"] is True and status["health"]["outbox"]["failed"] == 1
            assert await ask("resubmit", {"order_id": failed}) == {"ok": True, "order_id": failed, "state": "queued"}
            again = await ask("resubmit", {"order_id": failed})
            assert again == {
                "ok": False,
                "error": "only failed or skipped orders can be re-submitted; this one is queued",
                "state": "queued",
            }
            assert await ask("cancel", {"order_id": "nope"}) == {"ok": False, "error": "no order with id 'nope'"}
            printed = await ask("print_test", {"printer": "bar"})
            assert printed["ok"] is True and printed["printed"] is True
            refused = await ask("status", {}, signed=False)
            assert refused == {"ok": False, "error": "refused: unsigned: 'sig' is required"}
        got = await eventually(lambda: value(alerts.get("venues/sim-02/alerts", [])), bool)
        assert got[0][0]["alert"] == "command_refused"
        assert got[0][0]["action"].startswith("check the ops console's command secret")


async def test_availability_turns_false_when_no_path_works_after_the_debounce(broker: Mosquitto) -> None:
    """POS down and every printer out of paper: the retained availability says not accepting, then back."""
    sim = FleetSim(SimOptions("127.0.0.1", broker.port, venues(2), rates=QUIET))
    async with recorder(broker.port, "venues/sim-01/availability") as seen, running(sim):
        venue, out = sim.venues["sim-01"], []
        now = time.time()
        venue.set_pos("down", now, out, until=now + 3600)
        venue.set_printer("kitchen", "paper_out", now, out, until=now + 3600)
        sim.enqueue("sim-01", out)
        await asyncio.sleep(1.5)
        assert [m["accepting"] for m, _ in seen["venues/sim-01/availability"]] == [True]  # one printer still works
        venue.set_printer("bar", "paper_out", now, out, until=now + 3600)
        changes = await eventually(lambda: value(seen["venues/sim-01/availability"]), lambda s: len(s) == 2, timeout=5)
        body, retained = changes[-1]
        assert (body["accepting"], body["reason"], body["seq"], retained) == (
            False,
            "pos_down_and_no_printer",
            2,
            False,
        )
        venue.printer_until["bar"] = 0.0  # paper back in
        changes = await eventually(lambda: value(seen["venues/sim-01/availability"]), lambda s: len(s) == 3)
        assert changes[-1][0]["accepting"] is True


def _failed_order(venue: SimVenue) -> str:
    """Give ``venue`` one failed order (the POS refuses everything for one tick); return its id."""
    rates = Rates(orders_per_hour=3_600_000, fail_ratio=1.0, inject_seconds=(0.0, 0.0), health_interval=3600)
    probe = SimVenue("sim-02", random.Random(1), rates, started=0.0)
    probe.tick(1.0)
    out: list[Publish] = probe.tick(2.0)
    venue.orders.update(probe.orders)
    [failed] = [o for o, s in venue.orders.items() if s.state == "failed"]
    assert any(m.kind == "alerts" for m in out)
    return failed


@pytest.mark.parametrize("per_hour", [0.0, 3600.0])
def test_a_venue_is_quiet_or_busy_as_its_rates_say(per_hour: float) -> None:
    """With no orders and no faults only health is due; with an order a second events flow."""
    venue = SimVenue("v", random.Random(3), Rates(orders_per_hour=per_hour, health_interval=10), started=0.0)
    venue.begin(0.0)
    kinds = [m.kind for m in venue.birth(0.0)]
    assert kinds == ["status", "availability", "health"]
    published = [m.kind for t in range(1, 61) for m in venue.tick(float(t))]
    assert published.count("health") == 6
    assert (published.count("events") > 30) == (per_hour > 0)
