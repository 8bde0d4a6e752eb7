"""Signed MQTT commands against a real ``venue-agent run``: no replay after a SIGKILL, no move to another command."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import aiomqtt
import httpx

from agent.mqtt.commands import sign
from tests.conftest import Sim, eventually, make_order

# _broker is a fixture: importing it registers "broker" here.
from tests.mosquitto import Mosquitto, _broker, free_port  # noqa: F401
from tests.test_mqtt import VENUE, P, Subscriber, _process_config, subscribed
from tests.test_mqtt_poison import agents, start

SECRET = "s3cret-for-commands"


def signed(command: str, args: dict[str, Any]) -> dict[str, Any]:
    """Return ``args`` with ``ts`` (now) and ``sig`` for ``command`` on VENUE."""
    body = {**args, "ts": time.time()}
    return body | {"sig": sign(body, SECRET, command=command, venue=VENUE)}


async def until_listening(console: aiomqtt.Client, sub: Subscriber) -> None:
    """Send signed ``status`` commands until the (just started) agent answers one."""
    deadline = time.monotonic() + 15
    before = len(sub.on(f"{P}/cmd/status/reply"))
    while len(sub.on(f"{P}/cmd/status/reply")) == before:
        assert time.monotonic() < deadline, "the agent never answered a status command"
        await console.publish(f"{P}/cmd/status", json.dumps(signed("status", {})), qos=1)
        await asyncio.sleep(0.3)


async def test_a_signed_reprint_is_refused_after_sigkill_and_restart_and_on_another_command(
    tmp_path: Path, sim: Sim, broker: Mosquitto
) -> None:
    """The replay cache is in the outbox; the signature covers the command name."""
    agent_port = free_port()
    config = _process_config(tmp_path, agent_port=agent_port, sim=sim, broker=broker)
    text = config.read_text(encoding="utf-8").replace("[mqtt]\n", f'[mqtt]\ncommand_hmac_secret = "{SECRET}"\n')
    config.write_text(text, encoding="utf-8")
    replies = f"{P}/cmd/+/reply"
    with agents(tmp_path, config) as runs:
        async with (
            subscribed(broker.port, replies, identifier="test-replies") as sub,
            aiomqtt.Client("127.0.0.1", broker.port, identifier="test-console") as console,
        ):
            start(runs, tmp_path, config)
            async with httpx.AsyncClient(trust_env=False) as client:

                async def posted() -> int | None:
                    try:
                        url = f"http://127.0.0.1:{agent_port}/v1/orders"
                        return (await client.post(url, json=make_order("ord_reprint"), timeout=2)).status_code
                    except httpx.TransportError:
                        return None

                assert await eventually(posted, lambda code: code is not None, timeout=15) == 202
            await until_listening(console, sub)

            reprint = json.dumps(signed("reprint", {"order_id": "ord_reprint"}))
            await console.publish(f"{P}/cmd/reprint", reprint, qos=1)
            first = await sub.wait(f"{P}/cmd/reprint/reply", bool, timeout=10)
            assert first[0]["ok"] is True, first

            runs[-1].send_signal(signal.SIGKILL)
            runs[-1].wait(timeout=5)
            start(runs, tmp_path, config)
            await until_listening(console, sub)

            await console.publish(f"{P}/cmd/reprint", reprint, qos=1)
            again = await sub.wait(f"{P}/cmd/reprint/reply", lambda r: len(r) >= 2, timeout=10)
            assert again[1]["ok"] is False
            assert "replayed" in again[1]["error"]

            moved = json.dumps(signed("reprint", {"order_id": "ord_reprint"}))
            await console.publish(f"{P}/cmd/cancel", moved, qos=1)
            cancel = await sub.wait(f"{P}/cmd/cancel/reply", bool, timeout=10)
            assert cancel[0]["ok"] is False
            assert "bad signature" in cancel[0]["error"]
