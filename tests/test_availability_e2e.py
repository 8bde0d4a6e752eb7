"""Availability end to end (``P/availability`` and ``GET /v1/availability``): real processes, real broker.

``venue-agent run`` and ``venue-agent pos-sim`` as processes, a real mosquitto, and a fake ESC/POS printer on TCP
9100 that runs out of paper. The POS goes down and the printer is out of paper: the retained message says
``accepting: false`` once the refusal has held ``debounce_seconds`` (and not before), and the endpoint agrees;
the paper goes back in: ``accepting: true`` again at once.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import make_order
from tests.fake_printer import FakeNetworkPrinter
from tests.mosquitto import Mosquitto, _broker  # noqa: F401  (the broker fixture)
from tests.test_crash_recovery import AgentProcess, Processes, SimProcess, poll
from tests.test_mqtt import subscribed

pytestmark = pytest.mark.slow

VENUE = "harbour-kitchen"
TOPIC = f"venues/{VENUE}/availability"
DEBOUNCE_SECONDS = 2.0


@pytest.fixture(name="client")
async def _client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        yield client


def config_text(tmp_path: Path, *, agent_port: int, sim_port: int, printer_port: int, broker_port: int) -> str:
    """Return the agent's config: http POS, one network fallback printer, MQTT on, a 2 s availability debounce."""
    db = json.dumps(str(tmp_path / "outbox.db"))
    return f"""
[venue]
id = "{VENUE}"
timezone = "Europe/London"

[storage]
path = {db}
min_free_mb = 0

[intake]
listen = "127.0.0.1:{agent_port}"

[injection]
backoff_base_seconds = 0.05
backoff_max_seconds = 0.5

[fallback]
print_after_seconds = 3600

[pos]
driver = "http"
rate_limit_per_second = 200
timeout_seconds = 2

[pos.http]
url = "http://127.0.0.1:{sim_port}/orders"

[[printers]]
name = "pass"
connection = "network"
host = "127.0.0.1"
port = {printer_port}

[mqtt]
enabled = true
host = "127.0.0.1"
port = {broker_port}
health_interval_seconds = 1

[availability]
debounce_seconds = {DEBOUNCE_SECONDS}

[discovery]
advertise = false

[logging]
level = "info"
format = "json"
"""


async def endpoint(client: httpx.AsyncClient, agent: AgentProcess) -> dict[str, Any]:
    """``GET /v1/availability``."""
    response = await client.get(f"{agent.base}/v1/availability")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_pos_down_and_paper_out_pauses_then_paper_back_resumes(
    tmp_path: Path, procs: Processes, broker: Mosquitto, client: httpx.AsyncClient
) -> None:
    """POS down + printer out of paper -> retained accepting=false after the debounce; paper back -> true at once."""
    pos = SimProcess(procs, client)
    await pos.start()
    async with FakeNetworkPrinter.running() as printer:
        agent = AgentProcess(procs, tmp_path, pos.port)
        agent.config.write_text(
            config_text(
                tmp_path, agent_port=agent.port, sim_port=pos.port, printer_port=printer.port, broker_port=broker.port
            ),
            encoding="utf-8",
        )
        agent.start()
        await agent.wait_ready(client)
        async with subscribed(broker.port, TOPIC) as sub:
            first = (await sub.wait(TOPIC, lambda v: bool(v) and v[-1]["accepting"], timeout=10))[-1]
            assert (first["reason"], first["seq"]) == ("ok", 1)
            assert await endpoint(client, agent) == first

            printer.mode = "paper_out"
            await pos.faults(down=True)
            # Three orders failing at once open the circuit; rule (c) then sends each to paper, which is out.
            for n in range(3):
                response = await client.post(f"{agent.base}/v1/orders", json=make_order(f"ord_{n}"))
                assert response.status_code == 202, response.text
            paused_seen = await sub.wait(TOPIC, lambda v: not v[-1]["accepting"], timeout=20)
            arrived = time.time()
            paused = paused_seen[-1]
            assert paused["reason"] == "pos_down_and_no_printer"
            assert "pass paper out" in paused["detail"]
            # Between the two, "pos_down_printing_fallback" (still accepting) is published only if the agent took
            # longer than the debounce to find the paper out (a loaded machine); never a pause that did not hold.
            values = sub.on(TOPIC)
            assert [v["seq"] for v in values] == list(range(1, len(values) + 1)), "seq grows by one per change"
            assert [v["accepting"] for v in values[:-1]] == [True] * (len(values) - 1)
            # ``since`` is when the refusal began; it is published only once it has held the debounce.
            held = arrived - datetime.fromisoformat(paused["since"]).timestamp()
            assert held >= DEBOUNCE_SECONDS - 0.05, f"published {held:.2f} s after the refusal began"
            assert await endpoint(client, agent) == paused

        # A subscriber arriving now (the ordering platform restarting) gets the pause from the broker.
        async with subscribed(broker.port, TOPIC, identifier="platform") as late:
            retained = (await late.wait(TOPIC, bool))[-1]
        assert retained == paused
        assert all(is_retained for _, _, is_retained in late.messages)

        async with subscribed(broker.port, TOPIC, identifier="platform-2") as sub:
            await sub.wait(TOPIC, bool)
            printer.mode = "ok"
            # The paper is seen back when the print worker retries its ticket (first retry within 5 s).
            resumed = (await sub.wait(TOPIC, lambda v: v[-1]["accepting"], timeout=40))[-1]
        assert resumed["reason"] == "pos_down_printing_fallback"
        assert resumed["seq"] == paused["seq"] + 1
        assert await endpoint(client, agent) == resumed
        assert printer.jobs, "the fallback tickets came out once the paper was back"

        async def logged() -> list[dict[str, Any]]:
            return agent.log_events("availability_changed")

        events = await poll(logged, timeout=5, what="availability_changed logged")
        assert [(e["accepting"], e["seq"]) for e in events] == [(v["accepting"], v["seq"]) for v in [*values, resumed]]
