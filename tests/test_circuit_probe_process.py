"""A POS without a readiness endpoint (docs/robustness.md): the open circuit's probe is one real order.

``venue-agent run`` and ``venue-agent pos-sim`` as real processes. The simulator answers 503 to every order and
501 (or 404) to ``GET /ready``; the agent must not take 501 for "ready": orders waiting on the open circuit stay
``retrying`` and spend no attempts, one ``pos_down`` alert covers the outage, and once the POS is back every
waiting order goes in by itself, exactly once.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import make_order
from tests.test_crash_recovery import AgentProcess, Processes, SimProcess, poll

pytestmark = pytest.mark.slow

VENUE = "harbour-kitchen"
ORDERS = 5
SETTLE_SECONDS = 0.5  # real time for a wrongly closed circuit to send its backlog before asserting it did not


@pytest.fixture(name="procs")
def _procs(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.close()


@pytest.fixture(name="client")
async def _client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        yield client


@pytest.fixture(name="pos")
async def _pos(procs: Processes, client: httpx.AsyncClient) -> SimProcess:
    pos = SimProcess(procs, client)
    await pos.start()
    return pos


def alert_rows(tmp_path: Path, name: str) -> list[dict[str, Any]]:
    """The payloads of the committed alerts called ``name`` (the outbox read-only, beside the running agent)."""
    conn = sqlite3.connect(f"file:{tmp_path / 'outbox.db'}?mode=ro", uri=True, timeout=5)
    try:
        rows = conn.execute("SELECT payload FROM alerts WHERE alert = ? ORDER BY seq", (name,)).fetchall()
    finally:
        conn.close()
    return [json.loads(r[0]) for r in rows]


async def requests(client: httpx.AsyncClient, pos: SimProcess) -> list[dict[str, Any]]:
    """Every contract request the simulator received, in order."""
    response = await client.get(f"{pos.base}/_sim/requests")
    assert response.status_code == 200
    result: list[dict[str, Any]] = response.json()
    return result


async def details(client: httpx.AsyncClient, agent: AgentProcess, ids: list[str]) -> dict[str, dict[str, Any]]:
    """``GET /v1/orders/{id}`` for each order."""
    shown = {}
    for order_id in ids:
        response = await client.get(f"{agent.base}/v1/orders/{order_id}")
        assert response.status_code == 200, response.text
        shown[order_id] = response.json()
    return shown


def key(order_id: str) -> str:
    """The POS idempotency key of an order's first revision."""
    return f"{VENUE}:{order_id}"


@pytest.mark.parametrize("ready_status", [501, 404])
async def test_without_readiness_the_probe_is_one_real_order(
    tmp_path: Path, procs: Processes, pos: SimProcess, client: httpx.AsyncClient, ready_status: int
) -> None:
    """503 to orders, no /ready: no order fails or spends attempts while open; all go in once after recovery."""
    await pos.faults(down=True, ready_status=ready_status, retry_after_seconds=0)
    agent = AgentProcess(procs, tmp_path, pos.port)
    agent.start()
    await agent.wait_ready(client)
    ids = [f"ord_{n}" for n in range(1, ORDERS + 1)]
    for order_id in ids:
        response = await client.post(f"{agent.base}/v1/orders", json=make_order(order_id))
        assert response.status_code == 202, response.text

    async def opened() -> bool:
        return len(alert_rows(tmp_path, "pos_down")) >= 1

    await poll(opened, timeout=15, what="the circuit opened (pos_down alert)")
    shown = await details(client, agent, ids)
    before = {o: shown[o]["attempts"] for o in ids}
    seen = len(await requests(client, pos))

    async def probe_order_answered() -> list[dict[str, Any]] | None:
        later = (await requests(client, pos))[seen:]
        ready_at = next((i for i, r in enumerate(later) if r["path"] == "/ready"), None)
        if ready_at is None:
            return None
        posts = [r for r in later[ready_at:] if r["method"] == "POST" and r["status"]]
        return posts or None

    # The first probe is 5 s after the circuit opened: /ready answers 501/404, so one real order probes.
    probe = await poll(probe_order_answered, timeout=20, what="a probe order after the readiness check")
    await asyncio.sleep(SETTLE_SECONDS)
    later = (await requests(client, pos))[seen:]
    posts = [r for r in later if r["method"] == "POST"]
    assert [r["idempotency_key"] for r in posts] == [key("ord_1")], "the probe is ONE order, the oldest due"
    assert probe[0]["status"] == 503
    shown = await details(client, agent, ids)
    # Orders that failed before the circuit opened wait in retrying, those that came after it in queued.
    assert {shown[o]["state"] for o in ids} <= {"retrying", "queued"}, "an order failed while open"
    assert shown["ord_1"]["state"] == "retrying"
    after = {o: shown[o]["attempts"] for o in ids}
    assert after == {**before, "ord_1": before["ord_1"] + 1}, "attempts were spent beyond the probe"
    assert len(alert_rows(tmp_path, "pos_down")) == 1
    assert alert_rows(tmp_path, "pos_recovered") == []

    await pos.faults(down=False)

    async def all_injected() -> bool:
        states = {d["state"] for d in (await details(client, agent, ids)).values()}
        return states == {"injected"}

    await poll(all_injected, timeout=30, what="every waiting order injected after the POS came back")
    accepted = await pos.orders()
    assert sorted(o["key"] for o in accepted) == sorted(key(o) for o in ids), "each order in the POS exactly once"
    created = [r["idempotency_key"] for r in await requests(client, pos) if r["status"] == 201]
    assert sorted(created) == sorted(key(o) for o in ids), "an order was created twice in the POS"
    assert created[0] == key("ord_1"), "the oldest due order probes first"
    assert len(alert_rows(tmp_path, "pos_down")) == 1
    assert len(alert_rows(tmp_path, "pos_recovered")) == 1
