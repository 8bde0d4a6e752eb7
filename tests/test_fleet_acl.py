"""config/mosquitto/mosquitto-fleet-acl on a real Mosquitto with 1,000 venue users: all log in, each keeps to its
own prefix, and the console reads them all."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from agent.fleet.sim import Rates
from agent.fleet.sim_mqtt import FleetSim, SimOptions
from tests.conftest import eventually
from tests.mosquitto import MOSQUITTO, Mosquitto
from tests.test_fleet_sim import running, value

REPO = Path(__file__).resolve().parents[1]
GENERATOR = REPO / "config" / "mosquitto" / "mosquitto-fleet-acl"
QUIET = Rates(health_interval=600, orders_per_hour=0, offline_per_hour=0, paper_out_per_hour=0, pos_down_per_hour=0)
N = 1000


def generate(out: Path, *args: str) -> dict[str, str]:
    subprocess.run([sys.executable, str(GENERATOR), "--out", str(out), *args], check=True, capture_output=True)
    return {p.name.removesuffix(".password"): p.read_text().strip() for p in (out / "credentials").glob("*.password")}


@pytest.fixture(name="fleet_broker")
def _fleet_broker(tmp_path: Path) -> Any:
    if MOSQUITTO is None:
        pytest.skip("the mosquitto binary is not installed (apt-get install mosquitto)")
    out = tmp_path / "fleet"
    passwords = generate(out, "--count", str(N))
    broker = Mosquitto(MOSQUITTO, tmp_path, allow_anonymous=False)
    text = broker.config.read_text()
    broker.config.write_text(text + f"password_file {out / 'passwd'}\nacl_file {out / 'acl'}\n")
    broker.start()
    try:
        yield broker, passwords, out
    finally:
        broker.stop()


@asynccontextmanager
async def login(port: int, user: str, password: str) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client("127.0.0.1", port, username=user, password=password, identifier=uuid.uuid4().hex) as c:
        yield c


async def received(client: aiomqtt.Client, seconds: float) -> list[tuple[str, dict[str, Any]]]:
    got: list[tuple[str, dict[str, Any]]] = []
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(seconds):
            async for m in client.messages:
                assert isinstance(m.payload, bytes)
                got.append((m.topic.value, json.loads(m.payload)))
    return got


async def test_a_thousand_venues_log_in_and_each_keeps_to_its_own_prefix(fleet_broker: Any) -> None:
    """1,000 venue users connect with their generated passwords; cross-venue publishes and reads are denied."""
    broker, passwords, _ = fleet_broker
    assert len(passwords) == N + 1
    venues = tuple(f"venue-{i:04d}" for i in range(1, N + 1))
    options = SimOptions("127.0.0.1", broker.port, venues, rates=QUIET, passwords=passwords, connects_per_second=500)
    sim = FleetSim(options)
    async with login(broker.port, "ops-console", passwords["ops-console"]) as ops:
        await ops.subscribe("venues/+/status", qos=0)
        async with running(sim):
            statuses = await eventually(
                lambda: value(sum(1 for (v, k) in sim.retained if k == "status")), lambda n: n == N, timeout=20
            )
            assert statuses == N
            seen = {t for t, _ in await received(ops, 2.0)}
            assert len(seen) == N  # the console read every venue's birth

            mine, other = "venue-0001", "venue-0002"
            async with login(broker.port, mine, passwords[mine]) as venue:
                # Into another venue's prefix: the broker drops it (the console sees nothing).
                forged = {"state": "offline", "since": "x", "version": "0", "boot_id": "forged", "seq": 99}
                await venue.publish(f"venues/{other}/status", json.dumps(forged), qos=1)
                # Another venue's commands: the subscription never delivers.
                await venue.subscribe(f"venues/{other}/cmd/#", qos=0)
                await venue.subscribe(f"venues/{mine}/cmd/#", qos=0)
                await ops.publish(f"venues/{other}/cmd/status", "{}", qos=1)
                await ops.publish(f"venues/{mine}/cmd/status", "{}", qos=1)
                # And its own prefix works.
                await venue.publish(f"venues/{mine}/status", json.dumps(forged | {"boot_id": "mine"}), qos=1)
                got = await received(venue, 1.5)
                console = await received(ops, 1.0)
            # Its own command (and the simulated venue-0001's reply to it); nothing of venue-0002's.
            assert sorted(t for t, _ in got) == [f"venues/{mine}/cmd/status", f"venues/{mine}/cmd/status/reply"]
            assert [(t, p["boot_id"]) for t, p in console] == [(f"venues/{mine}/status", "mine")]
            assert sim.commands_answered >= 1  # the simulated venue-0002 got its own command


async def test_a_wrong_or_borrowed_password_is_refused_and_a_rerun_keeps_passwords(fleet_broker: Any) -> None:
    """A venue cannot log in with another's password; regenerating with more venues changes no password."""
    broker, passwords, out = fleet_broker
    with pytest.raises(aiomqtt.MqttCodeError):
        async with login(broker.port, "venue-0001", passwords["venue-0002"]):
            pass
    with pytest.raises(aiomqtt.MqttCodeError):
        async with login(broker.port, "venue-9999", "guess"):
            pass
    again = generate(out, "--count", str(N + 5))
    assert {u: again[u] for u in passwords} == passwords
    assert len(again) == N + 6
    assert "user venue-1005\n" in (out / "acl").read_text()
    assert oct((out / "passwd").stat().st_mode & 0o777) == "0o600"
