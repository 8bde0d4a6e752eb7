"""Getting orders into the POS: scheduling, retries, the circuit, the rate limit and fallback tickets.

A real agent in-process on its fake clock, injecting into the real POS simulator on loopback.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from tests.conftest import RunningAgent, Sim, agent_settings, eventually, make_order, run_agent

ORDER_ID = "ord_01HXTEST"
KEY = f"harbour-kitchen:{ORDER_ID}"
FALLBACK_BANNER = "FALLBACK - NOT IN POS"
ALREADY_PRINTED = "ALREADY PRINTED AS FALLBACK - DO NOT REMAKE"
SETTLE_SECONDS = 0.15  # real time for async work to finish before asserting that something did NOT happen


# ---- helpers -------------------------------------------------------------------------------------------------


def key(order_id: str) -> str:
    """Return the POS idempotency key of an order's first revision."""
    return f"harbour-kitchen:{order_id}"


def order_posts(sim: Sim, order_id: str | None = None) -> list[Any]:
    """Return the order requests the simulator received (for one order if given)."""
    return [
        r
        for r in sim.state.requests
        if r.method == "POST" and r.path == "/orders" and (order_id is None or r.idempotency_key == key(order_id))
    ]


def ready_probes(sim: Sim) -> list[Any]:
    """Return the readiness checks the simulator received."""
    return [r for r in sim.state.requests if r.method == "GET" and r.path == "/ready"]


def tickets(tmp_path: Path) -> str:
    """Return everything the file printer printed so far."""
    path = tmp_path / "tickets.txt"
    return path.read_text(encoding="utf-8") if path.exists() else ""


async def wait_ticket(tmp_path: Path, text: str, count: int = 1) -> str:
    """Wait (real time, for the print worker) until ``text`` is printed ``count`` times."""

    async def read() -> str:
        return tickets(tmp_path)

    return str(await eventually(read, lambda printed: printed.count(text) >= count))


async def detail(running: RunningAgent, order_id: str = ORDER_ID) -> dict[str, Any]:
    """Return GET /v1/orders/{id} (asserting 200)."""
    response = await running.client.get(f"/v1/orders/{order_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def submit(running: RunningAgent, order_id: str = ORDER_ID, **changes: Any) -> dict[str, Any]:
    """POST a valid order and return the acknowledgement (asserting 202)."""
    response = await running.client.post("/v1/orders", json=make_order(order_id, **changes))
    assert response.status_code == 202, response.text
    return dict(response.json())


async def advance_in_steps(running: RunningAgent, seconds: float, step: float = 5.0) -> None:
    """Move the agent's clock forward ``seconds`` in ``step``-second moves, letting its loops react to each."""
    left = seconds
    while left > 0:
        move = min(step, left)
        await running.advance(move)
        left -= move


async def alerts_named(running: RunningAgent, name: str) -> list[dict[str, Any]]:
    """Return the recorded alerts called ``name``, newest first."""
    return [a for a in await running.agent.outbox.alerts() if a["alert"] == name]


async def initial_probe(sim: Sim) -> None:
    """Wait for the agent's start-up readiness probe, so fault switches set later hit orders, not that probe."""

    async def answered() -> list[Any]:
        return [r for r in ready_probes(sim) if r.status]

    await eventually(answered, bool)


# ---- when orders are sent ------------------------------------------------------------------------------------


async def test_preorder_waits_until_requested_time_minus_buffer(sim: Sim, tmp_path: Path) -> None:
    """A pre-order for two hours' time is held back and sent 20 minutes before it is wanted."""
    async with run_agent(agent_settings(tmp_path, sim.url, injection={"buffer_minutes": 20})) as running:
        await initial_probe(sim)
        requested = running.clock.now() + timedelta(hours=2)

        ack = await submit(running, requested_at=requested.isoformat())

        assert ack["state"] == "scheduled"
        assert (await detail(running))["due_at"] == (requested - timedelta(minutes=20)).isoformat()
        await running.advance(3600)
        await asyncio.sleep(SETTLE_SECONDS)
        assert await running.state_of(ORDER_ID) == "scheduled"
        assert order_posts(sim) == []
        await running.advance(40 * 60 - 1)
        await asyncio.sleep(SETTLE_SECONDS)
        assert await running.state_of(ORDER_ID) == "scheduled"

        await running.advance(2)

        await running.wait_state(ORDER_ID, "injected")
        assert sim.accepted_keys() == [KEY]
        events = [e["type"] for e in (await detail(running))["events"]]
        assert events.index("queued") < events.index("injected")
        assert tickets(tmp_path) == ""


async def test_preorder_goes_at_once_when_preorders_are_immediate(sim: Sim, tmp_path: Path) -> None:
    """With preorders = "immediate" a pre-order is sent to the POS straight away."""
    async with run_agent(agent_settings(tmp_path, sim.url, injection={"preorders": "immediate"})) as running:
        await initial_probe(sim)
        requested = running.clock.now() + timedelta(hours=2)

        ack = await submit(running, requested_at=requested.isoformat())

        assert ack["state"] == "queued"
        await running.wait_state(ORDER_ID, "injected")
        assert sim.accepted_keys() == [KEY]
        assert datetime.fromisoformat(sim.state.orders[KEY].order["requested_at"]) == requested


# ---- retries -------------------------------------------------------------------------------------------------


async def test_server_error_is_retried_then_injected_once(sim: Sim, tmp_path: Path) -> None:
    """A POS 500 is retried after a backoff and the order lands in the POS exactly once."""
    async with run_agent(agent_settings(tmp_path, sim.url)) as running:
        await initial_probe(sim)
        sim.state.faults.update({"error_rate": 1.0})
        await submit(running)
        await running.wait_state(ORDER_ID, "retrying")
        retrying = await detail(running)
        assert retrying["next_attempt_at"] is not None
        assert "server error" in retrying["last_error"]
        sim.state.faults.update({"error_rate": 0.0})

        await running.advance(60)  # backoff_max_seconds: the retry is due whatever the jitter drew

        await running.wait_state(ORDER_ID, "injected")
        shown = await detail(running)
        assert shown["attempts"] == 2
        assert shown["last_error"] is None
        assert sim.accepted_keys() == [KEY]
        assert [r.status for r in order_posts(sim)] == [500, 201]


async def test_rate_limited_answer_waits_for_retry_after(sim: Sim, tmp_path: Path) -> None:
    """A POS 429 with Retry-After: 30 is not retried sooner than 30 s, then the order goes in."""
    async with run_agent(agent_settings(tmp_path, sim.url)) as running:
        await initial_probe(sim)
        sim.state.faults.update({"rate_limit_count": 1, "retry_after_seconds": 30})
        await submit(running)
        await running.wait_state(ORDER_ID, "retrying")

        await running.advance(10)
        await asyncio.sleep(SETTLE_SECONDS)
        assert await running.state_of(ORDER_ID) == "retrying"
        assert len(order_posts(sim)) == 1
        await running.advance(19)
        await asyncio.sleep(SETTLE_SECONDS)
        assert len(order_posts(sim)) == 1

        await running.advance(2)

        await running.wait_state(ORDER_ID, "injected")
        assert [r.status for r in order_posts(sim)] == [429, 201]
        assert sim.accepted_keys() == [KEY]


async def test_order_fails_as_outage_after_max_attempts(sim: Sim, tmp_path: Path) -> None:
    """After max_attempts server errors the order is failed/outage, an alert goes out and a ticket prints."""
    settings = agent_settings(tmp_path, sim.url, injection={"max_attempts": 2})
    async with run_agent(settings) as running:
        await initial_probe(sim)
        sim.state.faults.update({"error_rate": 1.0})
        await submit(running)
        await running.wait_state(ORDER_ID, "retrying")
        assert await running.state_of(ORDER_ID) == "retrying"

        await running.advance(60)

        await running.wait_state(ORDER_ID, "failed")
        shown = await detail(running)
        assert shown["error_class"] == "outage"
        assert shown["attempts"] == 2
        assert len(order_posts(sim)) == 2
        failed = await alerts_named(running, "order_failed")
        assert len(failed) == 1
        assert failed[0]["order"]["id"] == ORDER_ID
        assert failed[0]["error_class"] == "outage"
        assert failed[0]["action"]
        printed = await wait_ticket(tmp_path, FALLBACK_BANNER)
        assert "K7Q2M9XA" in printed
        await running.advance(600)
        await asyncio.sleep(SETTLE_SECONDS)
        assert len(order_posts(sim)) == 2
        assert sim.accepted_keys() == []


# ---- the circuit breaker -------------------------------------------------------------------------------------


async def test_circuit_opens_when_the_pos_is_down_and_orders_follow_when_it_is_back(sim: Sim, tmp_path: Path) -> None:
    """A dead POS is not hammered: one pos_down alert, probes only, then every waiting order goes in."""
    settings = agent_settings(tmp_path, sim.url, fallback={"enabled": False})
    async with run_agent(settings) as running:
        await initial_probe(sim)
        sim.state.faults.update({"down": True, "retry_after_seconds": 30})
        ids = [f"ord_{n}" for n in range(1, 7)]
        for order_id in ids[:3]:
            await submit(running, order_id)
            await running.wait_state(order_id, "retrying")
            await running.advance(0.5)
        assert running.agent.dispatcher.circuit.state == "open"
        for order_id in ids[3:]:
            await submit(running, order_id)
            await running.advance(0.5)
        await asyncio.sleep(SETTLE_SECONDS)
        sent_while_down = len(order_posts(sim))
        probes_before = len(ready_probes(sim))
        assert sent_while_down == 3

        await advance_in_steps(running, 90, step=10)
        await asyncio.sleep(SETTLE_SECONDS)

        assert len(order_posts(sim)) == sent_while_down, "orders were sent into an open circuit"
        assert len(ready_probes(sim)) > probes_before, "the open circuit was never probed"
        assert {await running.state_of(o) for o in ids[:3]} == {"retrying"}
        assert {await running.state_of(o) for o in ids[3:]} == {"queued"}
        assert len(await alerts_named(running, "pos_down")) == 1
        health = (await running.client.get("/v1/health")).json()
        assert health["pos"]["state"] == "down"

        sim.state.faults.update({"down": False})
        await advance_in_steps(running, 60, step=10)  # the next probe is at most 60 s away

        for order_id in ids:
            await running.wait_state(order_id, "injected")
        assert sorted(sim.accepted_keys()) == sorted(key(o) for o in ids)
        for order_id in ids:
            assert (await detail(running, order_id))["attempts"] <= 2, order_id
        assert len(await alerts_named(running, "pos_down")) == 1


async def test_orders_waiting_on_an_open_circuit_go_in_due_order(sim: Sim, tmp_path: Path) -> None:
    """When the POS comes back, the orders that waited go in the order they became due, oldest first."""
    async with run_agent(agent_settings(tmp_path, sim.url, fallback={"enabled": False})) as running:
        await initial_probe(sim)
        sim.state.faults.update({"down": True, "retry_after_seconds": 30})
        ids = [f"ord_{n}" for n in range(1, 7)]
        for order_id in ids[:3]:  # each fails once: the third failure opens the circuit
            await submit(running, order_id)
            await running.wait_state(order_id, "retrying")
            await running.advance(0.5)
        for order_id in ids[3:]:  # these arrive while the circuit is open
            await submit(running, order_id)
            await running.advance(0.5)
        await running.advance(60)  # every retry is due by now
        await asyncio.sleep(SETTLE_SECONDS)
        assert running.agent.dispatcher.circuit.state == "open"
        sim.state.faults.update({"down": False})

        await advance_in_steps(running, 60, step=5)  # the prober's next readiness check finds the POS back

        for order_id in ids:
            await running.wait_state(order_id, "injected")
        delivered = [r.idempotency_key for r in order_posts(sim) if r.status == 201]
        assert delivered == [key(o) for o in ids], "waiting orders did not go in due order"


async def test_rate_limit_is_respected(sim: Sim, tmp_path: Path) -> None:
    """At rate_limit_per_second = 10, 30 orders reach the POS no faster than 10 in any second.

    The limiter holds any 11 sends at least 1.05 s apart. Arrival times at the simulator (same event loop, a busy
    2-core machine) carry scheduling jitter the limiter cannot see, so the POS-side check allows 150 ms of it:
    any 11 consecutive arrivals span at least 0.9 s, and all 30 at least 2.8 s (a limiter letting 11/s through
    takes about 2.6 s; none, a few milliseconds).
    """
    settings = agent_settings(tmp_path, sim.url, pos={"rate_limit_per_second": 10})
    async with run_agent(settings) as running:
        await initial_probe(sim)
        ids = [f"ord_{n:02d}" for n in range(30)]
        await asyncio.gather(*(submit(running, order_id) for order_id in ids))

        await eventually(lambda: running.agent.outbox.counts(), lambda c: c["injected"] == 30, timeout=10)

        times = sorted(r.monotonic for r in order_posts(sim))
        assert len(times) == 30
        tightest = min(later - earlier for earlier, later in zip(times, times[10:], strict=False))
        assert tightest >= 0.9, f"11 order requests reached the POS within {tightest:.3f} s"
        assert times[-1] - times[0] >= 2.8, f"30 order requests took only {times[-1] - times[0]:.2f} s"
        assert sorted(sim.accepted_keys()) == sorted(key(o) for o in ids)


# ---- fallback tickets ----------------------------------------------------------------------------------------


async def test_fallback_ticket_prints_after_print_after_seconds(sim: Sim, tmp_path: Path) -> None:
    """An order not in the POS 60 s after it was due gets exactly one fallback ticket; later it goes in marked."""
    settings = agent_settings(
        tmp_path, sim.url, fallback={"print_after_seconds": 60, "print_when_pos_not_ready": False}
    )
    async with run_agent(settings) as running:
        await initial_probe(sim)
        sim.state.faults.update({"down": True})
        await submit(running)
        await running.wait_state(ORDER_ID, "retrying")

        await advance_in_steps(running, 59)
        await asyncio.sleep(SETTLE_SECONDS)
        assert await running.state_of(ORDER_ID) == "retrying"
        assert (await detail(running))["tickets"] == []
        assert tickets(tmp_path) == ""

        await running.advance(2)

        printed = await wait_ticket(tmp_path, FALLBACK_BANNER)
        assert "2 X MARGHERITA" in printed
        await advance_in_steps(running, 300, step=30)
        await asyncio.sleep(SETTLE_SECONDS)
        assert tickets(tmp_path).count(FALLBACK_BANNER) == 1
        shown = await detail(running)
        assert [t["kind"] for t in shown["tickets"]] == ["fallback"]
        assert shown["fallback_printed_at"] is not None
        assert len(await alerts_named(running, "fallback_printed")) == 1
        assert sim.accepted_keys() == []

        sim.state.faults.update({"down": False})
        await advance_in_steps(running, 60, step=10)

        await running.wait_state(ORDER_ID, "injected")
        assert sim.state.orders[KEY].order["notes"].startswith(ALREADY_PRINTED)
        assert "No cutlery" in sim.state.orders[KEY].order["notes"]
        assert tickets(tmp_path).count(FALLBACK_BANNER) == 1


async def test_fallback_ticket_prints_when_the_circuit_opens(sim: Sim, tmp_path: Path) -> None:
    """With print_when_pos_not_ready, waiting orders print as soon as the POS is known to be down."""
    settings = agent_settings(tmp_path, sim.url, fallback={"print_after_seconds": 600})
    async with run_agent(settings) as running:
        await initial_probe(sim)
        sim.state.faults.update({"down": True})
        await submit(running, "ord_1")
        await running.wait_state("ord_1", "retrying")
        await asyncio.sleep(SETTLE_SECONDS)
        assert tickets(tmp_path) == "", "printed before the POS was known to be down"

        await submit(running, "ord_2")
        await running.wait_state("ord_2", "retrying")
        await submit(running, "ord_3")
        await running.wait_state("ord_3", "retrying")

        await running.advance(1)  # one scheduler tick, far below print_after_seconds
        await wait_ticket(tmp_path, FALLBACK_BANNER, count=3)
        for order_id in ("ord_1", "ord_2", "ord_3"):
            assert [t["kind"] for t in (await detail(running, order_id))["tickets"]] == ["fallback"]
        assert running.agent.dispatcher.circuit.state == "open"


async def test_after_print_skip_keeps_the_order_out_of_the_pos(sim: Sim, tmp_path: Path) -> None:
    """With after_print = "skip" a fallback-printed order is skipped and never sent when the POS returns."""
    settings = agent_settings(tmp_path, sim.url, fallback={"after_print": "skip", "print_after_seconds": 60})
    async with run_agent(settings) as running:
        await initial_probe(sim)
        sim.state.faults.update({"down": True})
        await submit(running)
        await running.wait_state(ORDER_ID, "retrying")

        await advance_in_steps(running, 61, step=5)

        await running.wait_state(ORDER_ID, "skipped")
        await wait_ticket(tmp_path, FALLBACK_BANNER)
        posts_before = len(order_posts(sim))
        sim.state.faults.update({"down": False})
        await advance_in_steps(running, 300, step=30)
        await asyncio.sleep(SETTLE_SECONDS)
        assert await running.state_of(ORDER_ID) == "skipped"
        assert sim.accepted_keys() == []
        assert len(order_posts(sim)) == posts_before


@pytest.mark.parametrize("after_print", ["skip", "inject_marked"])
async def test_fallback_ticket_during_a_pos_call_is_not_made_twice(sim: Sim, tmp_path: Path, after_print: str) -> None:
    """An order whose fallback ticket prints while its POS call is in flight is not made twice by the kitchen."""
    settings = agent_settings(tmp_path, sim.url, fallback={"after_print": after_print, "print_after_seconds": 60})
    async with run_agent(settings) as running:
        await initial_probe(sim)
        sim.state.faults.update({"slow_ms": 800})  # slower than usual, still within timeout_seconds (2 s)
        await submit(running)
        await running.wait_state(ORDER_ID, "sending")

        await running.advance(61)  # print_after_seconds passes while the POS call is still in flight

        state = await running.wait_state(ORDER_ID, "injected", "skipped", "retrying", "failed")
        await asyncio.sleep(SETTLE_SECONDS)
        shown = await eventually(lambda: detail(running), lambda d: all(t["state"] == "printed" for t in d["tickets"]))
        ticketed = any(t["kind"] == "fallback" for t in shown["tickets"])
        in_pos = KEY in sim.state.orders
        if after_print == "skip":
            assert not (ticketed and in_pos), f"fallback ticket printed and the POS has the order too (state {state})"
        else:
            assert not (ticketed and in_pos) or sim.state.orders[KEY].order["notes"].startswith(ALREADY_PRINTED), (
                f"fallback ticket printed and the POS has the order without the ALREADY PRINTED note (state {state})"
            )


# ---- permanent failures --------------------------------------------------------------------------------------


async def test_unknown_sku_fails_as_menu(sim: Sim, tmp_path: Path) -> None:
    """An order with an SKU the POS does not know fails at once with error class menu."""
    async with run_agent(agent_settings(tmp_path, sim.url)) as running:
        await initial_probe(sim)
        sim.state.faults.update({"unknown_skus": ["PZ-MARG"]})
        await submit(running)

        await running.wait_state(ORDER_ID, "failed")

        shown = await detail(running)
        assert shown["error_class"] == "menu"
        assert "PZ-MARG" in shown["last_error"]
        assert len(order_posts(sim)) == 1
        failed = await alerts_named(running, "order_failed")
        assert [a["error_class"] for a in failed] == ["menu"]
        await wait_ticket(tmp_path, FALLBACK_BANNER)


async def test_sold_out_sku_fails_as_unavailable_and_is_snoozed(sim: Sim, tmp_path: Path) -> None:
    """An order with a sold-out item fails with error class unavailable and a snoozed event naming it."""
    async with run_agent(agent_settings(tmp_path, sim.url)) as running:
        await initial_probe(sim)
        sim.state.faults.update({"sold_out_skus": ["PZ-MARG"]})
        await submit(running)

        await running.wait_state(ORDER_ID, "failed")

        shown = await detail(running)
        assert shown["error_class"] == "unavailable"
        snoozed = [e for e in shown["events"] if e["type"] == "snoozed"]
        assert len(snoozed) == 1
        assert snoozed[0]["detail"]["skus"] == ["PZ-MARG"]
        assert len(order_posts(sim)) == 1
        await wait_ticket(tmp_path, FALLBACK_BANNER)


async def test_refused_credentials_pause_injection_until_resumed(sim: Sim, tmp_path: Path) -> None:
    """A 401 fails the order as auth and holds every later order back until the POS is re-authorised."""
    async with run_agent(agent_settings(tmp_path, sim.url)) as running:
        await initial_probe(sim)
        sim.state.faults.update({"auth_expired": True})
        await submit(running, "ord_1")
        await running.wait_state("ord_1", "failed")
        assert (await detail(running, "ord_1"))["error_class"] == "auth"
        assert len(await alerts_named(running, "pos_auth_required")) == 1
        sim.state.faults.update({"auth_expired": False})

        await submit(running, "ord_2")
        await advance_in_steps(running, 120, step=10)
        await asyncio.sleep(SETTLE_SECONDS)

        assert await running.state_of("ord_2") == "queued"
        assert order_posts(sim, "ord_2") == []
        assert (await running.client.get("/v1/health")).json()["pos"]["state"] == "auth_required"

        requeued = await running.agent.dispatcher.resume_after_auth("test")

        assert requeued == 1
        await running.wait_state("ord_1", "injected")
        await running.wait_state("ord_2", "injected")
        assert sorted(sim.accepted_keys()) == [key("ord_1"), key("ord_2")]


# ---- odd POS answers -----------------------------------------------------------------------------------------


async def test_html_error_page_from_a_proxy_is_retried(sim: Sim, tmp_path: Path) -> None:
    """An HTML 5xx page from a broken proxy in front of the POS is retried without crashing the agent."""
    async with run_agent(agent_settings(tmp_path, sim.url)) as running:
        await initial_probe(sim)
        sim.state.faults.update({"html_errors": True, "error_rate": 1.0})
        await submit(running)
        await running.wait_state(ORDER_ID, "retrying")
        shown = await detail(running)
        assert "text/html" in shown["last_error"]
        assert "<" not in shown["last_error"]
        sim.state.faults.update({"html_errors": False, "error_rate": 0.0})

        await running.advance(60)

        await running.wait_state(ORDER_ID, "injected")
        assert sim.accepted_keys() == [KEY]
        assert running.agent.failed_task() is None
        assert (await running.client.get("/v1/health")).status_code == 200


async def test_slow_pos_is_retried_with_the_same_key_and_holds_the_order_once(sim: Sim, tmp_path: Path) -> None:
    """A POS answering after the timeout gets the order again under the same key and keeps one copy."""
    settings = agent_settings(tmp_path, sim.url, pos={"timeout_seconds": 0.3})
    async with run_agent(settings) as running:
        await initial_probe(sim)
        sim.state.faults.update({"slow_ms": 600})
        await submit(running)
        await running.wait_state(ORDER_ID, "retrying")
        assert "may have the order" in (await detail(running))["last_error"]

        async def held_by_pos() -> list[str]:
            return sim.accepted_keys()

        await eventually(held_by_pos, lambda keys: keys == [KEY])  # the slow POS kept the first copy
        sim.state.faults.update({"slow_ms": 0})

        await running.advance(60)

        await running.wait_state(ORDER_ID, "injected")
        posts = order_posts(sim)
        assert len(posts) == 2
        assert {r.idempotency_key for r in posts} == {KEY}
        assert sim.accepted_keys() == [KEY]
        assert sim.state.attempts[KEY] == 2


# ---- logs ----------------------------------------------------------------------------------------------------


async def test_structured_log_events_name_the_order(sim: Sim, tmp_path: Path) -> None:
    """The log says when an order was received and when it reached the POS, naming the order."""
    async with run_agent(agent_settings(tmp_path, sim.url)) as running:
        await initial_probe(sim)
        with structlog.testing.capture_logs() as logs:
            await submit(running)
            await running.wait_state(ORDER_ID, "injected")

    received = [e for e in logs if e["event"] == "order_received"]
    injected = [e for e in logs if e["event"] == "order_injected"]
    assert [e["order_id"] for e in received] == [ORDER_ID]
    assert [e["order_id"] for e in injected] == [ORDER_ID]
    assert received[0]["log_level"] == "info"
    assert injected[0]["attempts"] == 1


async def test_after_print_inject_sends_the_order_unchanged(sim: Sim, tmp_path: Path) -> None:
    """With after_print = "inject" a fallback-printed order still reaches the POS, without the ALREADY PRINTED note."""
    settings = agent_settings(tmp_path, sim.url, fallback={"after_print": "inject"})
    async with run_agent(settings) as running:
        await initial_probe(sim)
        sim.state.faults.update({"down": True})
        for order_id in ("ord_1", "ord_2", "ord_3"):
            await submit(running, order_id)
            await running.wait_state(order_id, "retrying")
        await running.advance(1)
        await wait_ticket(tmp_path, FALLBACK_BANNER, count=3)
        sim.state.faults.update({"down": False})

        await advance_in_steps(running, 60, step=10)

        for order_id in ("ord_1", "ord_2", "ord_3"):
            await running.wait_state(order_id, "injected")
            assert sim.state.orders[key(order_id)].order["notes"] == "No cutlery"
