"""A long outage of a POS without a readiness endpoint, on the agent's fake clock (docs/robustness.md).

A real agent in-process injecting into the real POS simulator on loopback: /ready answers 501 and orders 503
for ten minutes of agent time (far more probe cycles than ``max_attempts``), then the POS comes back.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.conftest import Sim, agent_settings, eventually, run_agent
from tests.test_injection import (
    SETTLE_SECONDS,
    advance_in_steps,
    alerts_named,
    detail,
    initial_probe,
    key,
    order_posts,
    submit,
)


async def test_a_long_outage_without_readiness_spends_only_probe_attempts(sim: Sim, tmp_path: Path) -> None:
    """Every probe is one order, the oldest; no order fails; one pos_down; all go in once after recovery."""
    sim.state.faults.update({"ready_status": 501})
    settings = agent_settings(tmp_path, sim.url, fallback={"enabled": False}, injection={"max_attempts": 3})

    async with run_agent(settings) as running:
        await initial_probe(sim)
        sim.state.faults.update({"down": True, "retry_after_seconds": 0})
        ids = [f"ord_{n}" for n in range(1, 6)]
        for order_id in ids:
            await submit(running, order_id)
            await running.advance(0.2)
        await eventually(lambda: alerts_named(running, "pos_down"), lambda found: len(found) == 1)
        await asyncio.sleep(SETTLE_SECONDS)
        before = {o: (await detail(running, o))["attempts"] for o in ids}
        sent_before = len(order_posts(sim))

        await advance_in_steps(running, 600, step=5)
        await asyncio.sleep(SETTLE_SECONDS)

        probes = order_posts(sim)[sent_before:]
        assert len(probes) >= 8, "the open circuit was not probed with orders"
        assert {r.idempotency_key for r in probes} == {key("ord_1")}, "a probe is the oldest due order only"
        shown = {o: await detail(running, o) for o in ids}
        assert {d["state"] for d in shown.values()} <= {"retrying", "queued"}, "an order failed during the outage"
        assert {o: shown[o]["attempts"] for o in ids} == {**before, "ord_1": before["ord_1"] + len(probes)}
        assert len(await alerts_named(running, "pos_down")) == 1
        assert await alerts_named(running, "pos_recovered") == []

        sim.state.faults.update({"down": False})
        await advance_in_steps(running, 60, step=5)

        for order_id in ids:
            await running.wait_state(order_id, "injected")
        assert sorted(sim.accepted_keys()) == sorted(key(o) for o in ids)
        created = [r.idempotency_key for r in order_posts(sim) if r.status == 201]
        assert created == [key(o) for o in ids], "after recovery the waiting orders go in once each, in due order"
        assert len(await alerts_named(running, "pos_down")) == 1
        assert len(await alerts_named(running, "pos_recovered")) == 1
