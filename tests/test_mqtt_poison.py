"""MQTT orders against a real ``venue-agent run`` and mosquitto: a poison message and a SIGKILL lose no order."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import aiomqtt
import httpx

from agent.mqtt.commands import COMMIT_DELAY_ENV
from tests.conftest import Sim, eventually, make_order

# _broker is a fixture: importing it registers "broker" here.
from tests.mosquitto import Mosquitto, _broker, free_port  # noqa: F401
from tests.test_mqtt import BIN, P, _process_config, subscribed

ACKS = (f"{P}/orders/+/ack", f"{P}/orders/rejected", f"{P}/status")


@contextmanager
def agents(tmp_path: Path, config: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Yield a list to start agents into (see ``start``); kill whatever still runs at the end."""
    runs: list[subprocess.Popen[bytes]] = []
    try:
        yield runs
    finally:
        for popen in runs:
            if popen.poll() is None:
                popen.kill()
                popen.wait(timeout=5)


def start(runs: list[subprocess.Popen[bytes]], tmp_path: Path, config: Path, **env_extra: str) -> Path:
    """Start ``venue-agent run`` (its log in agent-<n>.log, returned) and append it to ``runs``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VENUE_AGENT_") and k != "NOTIFY_SOCKET"}
    log_path = tmp_path / f"agent-{len(runs)}.log"
    with log_path.open("wb") as log_file:
        runs.append(
            subprocess.Popen(
                [str(BIN), "run", "--config", str(config)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env | env_extra,
            )
        )
    return log_path


async def _listed(port: int) -> list[str] | None:
    try:
        async with httpx.AsyncClient(trust_env=False) as client:
            response = await client.get(f"http://127.0.0.1:{port}/v1/orders", timeout=2)
    except httpx.TransportError:
        return None
    return [o["order_id"] for o in response.json()["orders"]]


async def test_a_nesting_bomb_is_refused_and_the_next_five_orders_are_stored_and_acked(
    tmp_path: Path, sim: Sim, broker: Mosquitto
) -> None:
    """'[' * 100000 on P/orders/new is answered on orders/rejected; 5 orders after it are taken; one session."""
    agent_port = free_port()
    config = _process_config(tmp_path, agent_port=agent_port, sim=sim, broker=broker)
    with agents(tmp_path, config) as runs:
        async with subscribed(broker.port, *ACKS, identifier="test-acks") as sub:
            start(runs, tmp_path, config)
            online = await sub.wait(f"{P}/status", lambda s: bool(s) and s[-1]["state"] == "online", timeout=15)
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier="test-console") as console:
                await resend_until(console, "ord_probe", lambda: bool(sub.on(f"{P}/orders/ord_probe/ack")), 10)
                await console.publish(f"{P}/orders/new", "[" * 100_000, qos=1)
                ids = [f"ord_after_bomb_{n}" for n in range(5)]
                for order_id in ids:
                    await console.publish(f"{P}/orders/new", json.dumps(make_order(order_id)), qos=1)
                for order_id in ids:
                    acks = await sub.wait(f"{P}/orders/{order_id}/ack", bool, timeout=15)
                    assert acks[0]["accepted"] is True, acks
            rejected = sub.on(f"{P}/orders/rejected")
            assert any(r["accepted"] is False and r["field"] == "body" and "nested" in r["error"] for r in rejected)
            listed = await eventually(lambda: _listed(agent_port), lambda o: o is not None, timeout=5)
            assert listed is not None
            assert set(ids) <= set(listed)
            # The session was never restarted: still the first birth, no further online status.
            statuses = sub.on(f"{P}/status")
            assert [s["seq"] for s in statuses if s["state"] == "online"] == [online[-1]["seq"]]
            assert runs[-1].poll() is None


async def resend_until(console: aiomqtt.Client, order_id: str, done: Callable[[], bool], timeout: float) -> None:
    """Publish ``order_id`` every 0.3 s until ``done()`` (the agent subscribes just after its birth message)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not done():
        assert asyncio.get_running_loop().time() < deadline, f"the agent never took {order_id}"
        await console.publish(f"{P}/orders/new", json.dumps(make_order(order_id)), qos=1)
        for _ in range(15):
            if done():
                return
            await asyncio.sleep(0.02)


async def test_an_order_killed_between_receipt_and_commit_is_redelivered_and_stored_once(
    tmp_path: Path, sim: Sim, broker: Mosquitto
) -> None:
    """SIGKILL while an MQTT order waits for its commit: it was not PUBACKed, so after the restart it is stored once."""
    agent_port = free_port()
    config = _process_config(tmp_path, agent_port=agent_port, sim=sim, broker=broker)
    with agents(tmp_path, config) as runs:
        async with subscribed(broker.port, *ACKS, identifier="test-acks") as sub:
            log_path = start(runs, tmp_path, config, **{COMMIT_DELAY_ENV: "60"})
            await sub.wait(f"{P}/status", lambda s: bool(s) and s[-1]["state"] == "online", timeout=15)
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier="test-console") as console:
                await resend_until(
                    console,
                    "ord_in_flight",
                    lambda: "mqtt_order_commit_delayed" in log_path.read_text(encoding="utf-8"),
                    15,
                )
            runs[-1].send_signal(signal.SIGKILL)
            runs[-1].wait(timeout=5)
            assert not sub.on(f"{P}/orders/ord_in_flight/ack")

            start(runs, tmp_path, config)
            acks = await sub.wait(f"{P}/orders/ord_in_flight/ack", bool, timeout=20)
            assert acks[0]["accepted"] is True
            listed = await eventually(lambda: _listed(agent_port), lambda o: o is not None, timeout=10)
            assert listed == ["ord_in_flight"]
