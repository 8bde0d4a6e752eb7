"""Lightspeed token rotation across a real crash: ``venue-agent run`` SIGKILLed and restarted on its outbox.

Refresh tokens are single-use. The agent must commit each rotated token to the outbox before it uses it,
so that after a SIGKILL the restarted process refreshes with the stored token, not the spent seed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Sim, make_order
from tests.test_crash_recovery import AgentProcess, Processes, poll

pytestmark = pytest.mark.slow

USER, PASSWORD = "lightspeed", "hook-secret"


def config_text(tmp_path: Path, *, agent_port: int, sim_port: int) -> str:
    """An agent config with the lightspeed_k driver pointed at the simulator."""
    db = json.dumps(str(tmp_path / "outbox.db"))
    tickets = json.dumps(str(tmp_path / "tickets.txt"))
    return f"""
[venue]
id = "harbour-kitchen"
timezone = "Europe/London"

[storage]
path = {db}
min_free_mb = 0

[intake]
listen = "127.0.0.1:{agent_port}"

[fallback]
print_after_seconds = 600

[pos]
driver = "lightspeed_k"

[pos.lightspeed_k]
base_url = "http://127.0.0.1:{sim_port}"
business_location_id = 45454545
client_id = "venue-agent"
client_secret = "client-secret"
refresh_token = "seed-refresh-token"
endpoint_id = "venue-agent-hook"
webhook_username = "{USER}"
webhook_password = "{PASSWORD}"

[[printers]]
name = "pass"
connection = "file"
path = {tickets}

[discovery]
advertise = false

[logging]
level = "info"
format = "json"
"""


@pytest.fixture(name="procs")
def _procs(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.close()


async def control(client: httpx.AsyncClient, sim: Sim, **settings: Any) -> None:
    """Change the simulator's Lightspeed dialect."""
    response = await client.post(f"http://127.0.0.1:{sim.port}/_sim/lightspeed", json=settings)
    assert response.status_code == 200, response.text


async def injected(client: httpx.AsyncClient, agent: AgentProcess, order_id: str) -> None:
    """Post an order and wait until the agent reports it injected (confirmed by webhook)."""
    response = await client.post(f"{agent.base}/v1/orders", json=make_order(order_id))
    assert response.status_code == 202, response.text

    async def state() -> bool:
        return (await client.get(f"{agent.base}/v1/orders/{order_id}")).json()["state"] == "injected"

    await poll(state, timeout=15, what=f"{order_id} injected")


async def test_rotated_token_survives_sigkill_and_restart(tmp_path: Path, procs: Processes, sim: Sim) -> None:
    """After a SIGKILL the restarted agent refreshes with the stored rotated token; the spent seed is never reused."""
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        agent = AgentProcess(procs, tmp_path, sim.port)
        agent.config.write_text(config_text(tmp_path, agent_port=agent.port, sim_port=sim.port), encoding="utf-8")
        await control(
            client,
            sim,
            webhook_url=f"{agent.base}/v1/webhooks/lightspeed",
            webhook_username=USER,
            webhook_password=PASSWORD,
            confirm_delay_seconds=0.05,
        )
        agent.start()
        await agent.wait_ready(client)
        await injected(client, agent, "ord_rot_1")
        # From now on only tokens the POS issued work, each once: the seed is spent.
        await control(client, sim, accept_unknown_refresh_tokens=False)
        agent.kill()
        await control(client, sim, expire_access_tokens=True)

        agent.start()
        await agent.wait_ready(client)
        await injected(client, agent, "ord_rot_2")
        assert not agent.log_events("pos_token_refresh_failed"), agent.logs()[-3000:]
        refreshes = agent.log_events("pos_token_refreshed")
        assert len(refreshes) >= 2  # one per process: the second used the stored token
