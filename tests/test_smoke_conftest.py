"""The shared fixtures work: an in-process agent injects an order into the real simulator."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Sim, agent_settings, make_order, run_agent


async def test_asap_order_reaches_the_simulator(tmp_path: Path, sim: Sim) -> None:
    """An ASAP order is acknowledged with 202 and injected into the POS once."""
    async with run_agent(agent_settings(tmp_path, sim.url)) as running:
        response = await running.client.post("/v1/orders", json=make_order())
        assert response.status_code == 202
        assert response.json() == {"order_id": "ord_01HXTEST", "state": "queued", "duplicate": False}
        assert await running.wait_state("ord_01HXTEST", "injected") == "injected"
    assert sim.accepted_keys() == ["harbour-kitchen:ord_01HXTEST"]
