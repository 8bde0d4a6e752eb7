"""The intake HTTP API (docs/intake-api.md) against a real agent on a loopback socket and the real POS simulator."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import pytest_asyncio

from tests.conftest import RunningAgent, Sim, agent_settings, eventually, make_order, run_agent, run_simulator

KEY = "harbour-kitchen:ord_01HXTEST"
PROBLEM_JSON = "application/problem+json"
FALLBACK_BANNER = "FALLBACK - NOT IN POS"
ALREADY_PRINTED = "ALREADY PRINTED AS FALLBACK - DO NOT REMAKE"
SETTLE_SECONDS = 0.15  # real time for async work to finish before asserting that something did NOT happen


# ---- helpers -------------------------------------------------------------------------------------------------


def order_posts(sim: Sim) -> list[Any]:
    """Return the order requests the simulator received."""
    return [r for r in sim.state.requests if r.method == "POST" and r.path == "/orders"]


def tickets(tmp_path: Path) -> str:
    """Return everything the file printer printed so far."""
    path = tmp_path / "tickets.txt"
    return path.read_text(encoding="utf-8") if path.exists() else ""


async def wait_ticket(tmp_path: Path, text: str, count: int = 1) -> str:
    """Wait (real time, for the print worker) until ``text`` appears ``count`` times in the ticket file."""
    return str(await eventually(lambda: _read_async(tmp_path), lambda printed: printed.count(text) >= count))


async def _read_async(tmp_path: Path) -> str:
    return tickets(tmp_path)


def items_order(order_id: str, n: int, **changes: Any) -> dict[str, Any]:
    """Return a valid order with ``n`` one-pound lines (total adjusted to add up)."""
    lines = [
        {"name": f"Cola {i}", "sku": "DR-COLA", "quantity": 1, "unit_price": 100, "category": "Drinks"}
        for i in range(n)
    ]
    total = 100 * n + 100 - 190  # lines + tip - discount of the base order
    order = make_order(order_id, items=lines, total=total)
    order["payment"] = {**order["payment"], "amount": total}
    order.update(changes)
    return order


def pending(order_id: str = "ord_01HXTEST", **changes: Any) -> dict[str, Any]:
    """Return a valid order the customer has not paid yet."""
    order = make_order(order_id, **changes)
    order["payment"] = {**order["payment"], "status": "pending"}
    return order


def preorder(running: RunningAgent, order_id: str = "ord_01HXTEST", hours: float = 2, **changes: Any) -> dict[str, Any]:
    """Return a valid order requested ``hours`` after the agent's current time."""
    requested = running.clock.now() + timedelta(hours=hours)
    return make_order(order_id, requested_at=requested.isoformat(), **changes)


async def detail(running: RunningAgent, order_id: str = "ord_01HXTEST") -> dict[str, Any]:
    """Return GET /v1/orders/{id} (asserting 200)."""
    response = await running.client.get(f"/v1/orders/{quote(order_id, safe='')}")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def assert_nothing_stored(running: RunningAgent, order_id: str = "ord_01HXTEST") -> None:
    """The order is unknown to the API and the outbox holds no order at all."""
    response = await running.client.get(f"/v1/orders/{quote(order_id, safe='')}")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    counts = await running.agent.outbox.counts()
    assert set(counts.values()) == {0}, counts


@pytest.fixture(name="running")
async def _running(tmp_path: Path, sim: Sim) -> AsyncIterator[RunningAgent]:
    """Return an agent with default settings, injecting into the simulator."""
    async with run_agent(agent_settings(tmp_path, sim.url)) as running:
        yield running


@pytest_asyncio.fixture(name="shared", scope="module", loop_scope="module")
async def _shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningAgent]:
    """Return one agent for the tests that must store nothing (starting an agent per case is slow)."""
    async with run_simulator() as sim, run_agent(agent_settings(tmp_path_factory.mktemp("shared"), sim.url)) as running:
        yield running


# ---- POST /v1/orders -----------------------------------------------------------------------------------------


async def test_asap_order_is_acknowledged_only_after_commit(tmp_path: Path, sim: Sim, running: RunningAgent) -> None:
    """An ASAP order gets 202 once it is on disk, and GET shows it straight away."""
    response = await running.client.post("/v1/orders", json=make_order())

    assert response.status_code == 202
    assert response.json() == {"order_id": "ord_01HXTEST", "state": "queued", "duplicate": False}
    # A separate connection to the database file already sees the committed row when the 202 arrives.
    with contextlib.closing(sqlite3.connect(f"file:{tmp_path / 'outbox.db'}?mode=ro", uri=True)) as conn:
        row = conn.execute("SELECT idempotency_key FROM orders WHERE id = ?", ("ord_01HXTEST",)).fetchone()
    assert row == (KEY,)
    shown = await detail(running)
    assert shown["order_id"] == "ord_01HXTEST"
    assert shown["state"] in ("queued", "sending", "injected")
    assert shown["order"]["customer"]["name"] == "Sam Reed"
    assert shown["order"]["total"] == 1910
    assert await running.wait_state("ord_01HXTEST", "injected") == "injected"


async def test_duplicate_intake_is_a_no_op(sim: Sim, running: RunningAgent) -> None:
    """Sending the same order twice answers 200 duplicate:true and the POS gets it once."""
    first = await running.client.post("/v1/orders", json=make_order())
    again = await running.client.post("/v1/orders", json=make_order())

    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert again.json()["order_id"] == "ord_01HXTEST"
    reordered = dict(reversed(list(make_order().items())))  # same content, keys in another order
    assert (await running.client.post("/v1/orders", json=reordered)).json()["duplicate"] is True
    await running.wait_state("ord_01HXTEST", "injected")
    late = await running.client.post("/v1/orders", json=make_order())
    assert late.status_code == 200
    assert late.json() == {"order_id": "ord_01HXTEST", "state": "injected", "duplicate": True}
    await asyncio.sleep(SETTLE_SECONDS)
    assert sim.accepted_keys() == [KEY]
    assert len(order_posts(sim)) == 1


async def test_same_id_with_other_content_is_a_conflict(running: RunningAgent) -> None:
    """Re-using an order id for different content answers 409 pointing at PUT, and keeps the first order."""
    await running.client.post("/v1/orders", json=pending())

    response = await running.client.post("/v1/orders", json=pending(notes="Extra napkins"))

    assert response.status_code == 409
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    problem = response.json()
    assert problem["status"] == 409
    assert "PUT" in problem["detail"]
    assert (await detail(running))["order"]["notes"] == "No cutlery"


# ---- 422: every rule of the order schema -------------------------------------------------------------------


def _with(path: tuple[str | int, ...], value: Any) -> Callable[[], dict[str, Any]]:
    """Return a factory of the base order with the field at ``path`` set to ``value``."""

    def build() -> dict[str, Any]:
        order = make_order()
        target: Any = order
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = copy.deepcopy(value)
        return order

    return build


def _modifiers_four_deep() -> dict[str, Any]:
    order = make_order()
    basil = order["items"][0]["modifiers"][0]
    basil["modifiers"] = [{"name": "Level 2", "modifiers": [{"name": "Level 3", "modifiers": [{"name": "Level 4"}]}]}]
    return order


INVALID = [
    pytest.param(
        lambda: b'{"schema_version": 1, "id": "ord_01HXTEST", ', ["body"], "malformed JSON", id="malformed-json"
    ),
    pytest.param(_with(("items", 0, "quantity"), "2"), ["items", 0, "quantity"], "integer", id="quantity-as-string"),
    pytest.param(_with(("items", 0, "unit_price"), 9.5), ["items", 0, "unit_price"], "integer", id="unit-price-float"),
    pytest.param(_with(("colour",), "red"), ["colour"], "colour", id="unknown-top-level-field"),
    pytest.param(_with(("items", 0, "spice"), "hot"), ["items", 0, "spice"], "spice", id="unknown-nested-field"),
    pytest.param(_with(("total",), 1911), ["total"], "does not add up", id="total-does-not-add-up"),
    pytest.param(_with(("items", 0, "quantity"), 0), ["items", 0, "quantity"], "", id="quantity-0"),
    pytest.param(_with(("items", 0, "quantity"), 1000), ["items", 0, "quantity"], "", id="quantity-1000"),
    pytest.param(_modifiers_four_deep, ["items", 0, "modifiers"], "3 levels", id="modifiers-4-deep"),
    pytest.param(
        _with(("fulfillment",), {"type": "dine_in"}), ["fulfillment", "table"], "table", id="dine-in-no-table"
    ),
    pytest.param(
        _with(("fulfillment",), {"type": "delivery"}), ["fulfillment", "address"], "address", id="delivery-no-address"
    ),
    pytest.param(
        _with(("customer",), {"phone": "+447700900123"}), ["customer", "name"], "name", id="pickup-no-customer-name"
    ),
    pytest.param(_with(("venue_id",), "other-venue"), ["venue_id"], "harbour-kitchen", id="venue-id-mismatch"),
    pytest.param(_with(("notes",), "No\x07cutlery"), ["notes"], "control", id="control-character-in-notes"),
    pytest.param(_with(("notes",), "x" * 501), ["notes"], "500", id="text-over-500-chars"),
    pytest.param(_with(("items",), []), ["items"], "", id="zero-items"),
    pytest.param(lambda: items_order("ord_01HXTEST", 201), ["items"], "200", id="201-items"),
    pytest.param(_with(("created_at",), "2026-11-23T12:00:05"), ["created_at"], "timezone", id="naive-created-at"),
    pytest.param(_with(("id",), "ord 01HX"), ["id"], "", id="id-with-space"),
    pytest.param(_with(("display_code",), "K7Q2M9XAB"), ["display_code"], "8", id="display-code-over-8"),
    pytest.param(
        _with(("payment", "currency"), "EUR"), ["payment", "currency"], "GBP", id="payment-currency-not-venues"
    ),
]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("build", "loc", "words"), INVALID)
async def test_invalid_order_is_refused_and_not_stored(
    shared: RunningAgent, build: Callable[[], Any], loc: list[str | int], words: str
) -> None:
    """An order breaking a rule of the order schema gets 422 naming the field, and nothing is stored."""
    running = shared
    body = build()
    if isinstance(body, bytes):
        response = await running.client.post("/v1/orders", content=body, headers={"Content-Type": "application/json"})
    else:
        response = await running.client.post("/v1/orders", json=body)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    problem = response.json()
    assert {"type", "title", "status", "detail", "errors"} <= set(problem)
    assert problem["status"] == 422
    matching = [e for e in problem["errors"] if e["loc"] == loc]
    assert matching, f"no error at loc {loc}: {problem['errors']}"
    assert words.lower() in matching[0]["msg"].lower(), matching[0]
    order_id = body["id"] if isinstance(body, dict) else "ord_01HXTEST"
    await assert_nothing_stored(running, order_id)


@pytest.mark.asyncio(loop_scope="module")
async def test_every_field_error_is_listed_at_once(shared: RunningAgent) -> None:
    """An order with several mistakes gets one 422 listing each of them."""
    running = shared
    order = make_order(colour="red", display_code="K7Q2M9XAB")
    order["items"][0]["quantity"] = 0

    response = await running.client.post("/v1/orders", json=order)

    assert response.status_code == 422
    locs = [e["loc"] for e in response.json()["errors"]]
    assert ["colour"] in locs
    assert ["display_code"] in locs
    assert ["items", 0, "quantity"] in locs
    await assert_nothing_stored(running)


# ---- 401, 413 ------------------------------------------------------------------------------------------------


async def test_token_is_required_when_configured(tmp_path: Path, sim: Sim) -> None:
    """With an intake token set, a request without it or with a wrong one gets 401; the right one gets 202."""
    settings = agent_settings(tmp_path, sim.url, intake={"token": "s3cret"})
    async with run_agent(settings) as running:
        base = str(running.client.base_url)
        async with httpx.AsyncClient(base_url=base, trust_env=False) as anonymous:
            missing = await anonymous.post("/v1/orders", json=make_order())
            wrong = await anonymous.post(
                "/v1/orders", json=make_order(), headers={"Authorization": "Bearer not-the-token"}
            )
            reading = await anonymous.get("/v1/orders/ord_01HXTEST")

        for response in (missing, wrong, reading):
            assert response.status_code == 401
            assert response.headers["content-type"].startswith(PROBLEM_JSON)
            assert response.headers["www-authenticate"].lower().startswith("bearer")
        await assert_nothing_stored(running)

        accepted = await running.client.post("/v1/orders", json=make_order())
        assert accepted.status_code == 202
        await running.wait_state("ord_01HXTEST", "injected")


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 256):
        yield data[start : start + 256]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked-without-length"])
async def test_body_over_max_body_kb_is_refused(tmp_path: Path, sim: Sim, chunked: bool) -> None:
    """A body over max_body_kb gets 413 and nothing is stored."""
    settings = agent_settings(tmp_path, sim.url, intake={"max_body_kb": 1})
    async with run_agent(settings) as running:
        body = httpx.Request("POST", "/", json=items_order("ord_01HXTEST", 20)).content
        assert len(body) > 1024
        content: Any = _chunks(body) if chunked else body

        response = await running.client.post(
            "/v1/orders", content=content, headers={"Content-Type": "application/json"}
        )

        assert response.status_code == 413
        assert response.headers["content-type"].startswith(PROBLEM_JSON)
        assert response.json()["status"] == 413
        await assert_nothing_stored(running)
        small = await running.client.post("/v1/orders", json=make_order())
        assert small.status_code == 202


# ---- PUT -----------------------------------------------------------------------------------------------------


async def test_put_replaces_a_held_order_and_the_pos_gets_the_new_content(sim: Sim, running: RunningAgent) -> None:
    """Changing an order still held for payment answers 200, and the POS gets the changed order once paid."""
    await running.client.post("/v1/orders", json=pending())
    revision = (await detail(running))["revision"]

    response = await running.client.put("/v1/orders/ord_01HXTEST", json=pending(notes="Extra napkins please"))

    assert response.status_code == 200
    assert response.json()["state"] == "held"
    assert response.json()["revision"] == revision + 1
    assert (await detail(running))["order"]["notes"] == "Extra napkins please"
    paid = await running.client.post(
        "/v1/orders/ord_01HXTEST/payment", json={"status": "paid", "method": "card", "amount": 1910}
    )
    assert paid.status_code == 200
    await running.wait_state("ord_01HXTEST", "injected")
    assert [o.order["notes"] for o in sim.state.orders.values()] == ["Extra napkins please"]


async def test_put_replaces_a_scheduled_preorder_and_the_pos_gets_the_new_content(
    sim: Sim, running: RunningAgent
) -> None:
    """Changing a pre-order that is still scheduled answers 200, and the POS later gets the new content only."""
    first = await running.client.post("/v1/orders", json=preorder(running))
    assert first.json()["state"] == "scheduled"
    changed = preorder(running, notes="Gluten-free base")
    changed["items"][0]["quantity"] = 3
    changed["total"] = changed["payment"]["amount"] = 1910 + 1000

    response = await running.client.put("/v1/orders/ord_01HXTEST", json=changed)

    assert response.status_code == 200
    assert response.json()["state"] == "scheduled"
    await running.advance(2 * 3600)
    await running.wait_state("ord_01HXTEST", "injected")
    sent = [o.order for o in sim.state.orders.values()]
    assert len(sent) == 1
    assert sent[0]["id"] == "ord_01HXTEST"
    assert sent[0]["notes"] == "Gluten-free base"
    assert sent[0]["items"][0]["quantity"] == 3


async def test_put_after_injection_is_refused(sim: Sim, running: RunningAgent) -> None:
    """Changing an order the POS already has answers 409: modify it on the POS."""
    await running.client.post("/v1/orders", json=make_order())
    await running.wait_state("ord_01HXTEST", "injected")

    response = await running.client.put("/v1/orders/ord_01HXTEST", json=make_order(notes="Extra napkins"))

    assert response.status_code == 409
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert response.json()["detail"] == "already in the POS: modify it on the POS"
    assert [o.order["notes"] for o in sim.state.orders.values()] == ["No cutlery"]


async def test_put_of_a_fallback_printed_order_prints_a_modified_ticket(
    tmp_path: Path, sim: Sim, running: RunningAgent
) -> None:
    """Changing an order the kitchen already has on a fallback ticket prints a MODIFIED ticket."""
    sim.state.faults.update({"sold_out_skus": ["PZ-MARG"]})
    await running.client.post("/v1/orders", json=make_order())
    await running.wait_state("ord_01HXTEST", "failed")
    await wait_ticket(tmp_path, FALLBACK_BANNER)
    sim.state.faults.update({"sold_out_skus": []})

    response = await running.client.put("/v1/orders/ord_01HXTEST", json=make_order(notes="Swap for a Marinara"))

    assert response.status_code == 200
    printed = await wait_ticket(tmp_path, "MODIFIED")
    assert "Swap for a Marinara" in printed.split("MODIFIED", 1)[1]
    shown = await eventually(
        lambda: detail(running), lambda d: [t["state"] for t in d["tickets"]] == ["printed", "printed"]
    )
    assert [t["kind"] for t in shown["tickets"]] == ["fallback", "modified"]
    await running.wait_state("ord_01HXTEST", "injected")
    notes = next(iter(sim.state.orders.values())).order["notes"]
    assert notes.startswith(ALREADY_PRINTED)
    assert "Swap for a Marinara" in notes


# ---- payment, cancel, resubmit, reprint ----------------------------------------------------------------------


async def test_unpaid_order_is_held_until_paid(tmp_path: Path, sim: Sim, running: RunningAgent) -> None:
    """An unpaid order waits: not sent, never printed; once paid it goes to the POS."""
    response = await running.client.post("/v1/orders", json=pending())
    assert response.status_code == 202
    assert response.json()["state"] == "held"

    for _ in range(4):
        await running.advance(61)  # well past print_after_seconds (60)
    await asyncio.sleep(SETTLE_SECONDS)

    shown = await detail(running)
    assert shown["state"] == "held"
    assert shown["tickets"] == []
    assert tickets(tmp_path) == ""
    assert order_posts(sim) == []

    paid = await running.client.post(
        "/v1/orders/ord_01HXTEST/payment", json={"status": "paid", "method": "card", "amount": 1910}
    )

    assert paid.status_code == 200
    assert paid.json() == {"order_id": "ord_01HXTEST", "state": "queued"}
    await running.wait_state("ord_01HXTEST", "injected")
    assert sim.state.orders[KEY].order["payment"]["status"] == "paid"
    assert (await detail(running))["tickets"] == []


async def test_payment_with_a_bad_body_is_refused(running: RunningAgent) -> None:
    """A payment update that is not 'paid' gets 422 and the order stays held."""
    await running.client.post("/v1/orders", json=pending())

    response = await running.client.post("/v1/orders/ord_01HXTEST/payment", json={"status": "refunded"})

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["status"]
    assert (await detail(running))["state"] == "held"


async def test_cancel_before_injection_keeps_the_order_out_of_the_pos(sim: Sim, running: RunningAgent) -> None:
    """Cancelling an order the POS does not have yet answers 200 cancelled, and it never reaches the POS."""
    await running.client.post("/v1/orders", json=preorder(running))

    response = await running.client.post("/v1/orders/ord_01HXTEST/cancel")

    assert response.status_code == 200
    assert response.json() == {"order_id": "ord_01HXTEST", "state": "cancelled"}
    await running.advance(2 * 3600)
    await asyncio.sleep(SETTLE_SECONDS)
    assert (await detail(running))["state"] == "cancelled"
    assert order_posts(sim) == []


async def test_cancel_after_injection_is_refused(sim: Sim, running: RunningAgent) -> None:
    """Cancelling an order the POS already has answers 409."""
    await running.client.post("/v1/orders", json=make_order())
    await running.wait_state("ord_01HXTEST", "injected")

    response = await running.client.post("/v1/orders/ord_01HXTEST/cancel")

    assert response.status_code == 409
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert "POS" in response.json()["detail"]
    assert (await detail(running))["state"] == "injected"


async def test_cancel_of_a_fallback_printed_order_prints_a_cancelled_ticket(
    tmp_path: Path, sim: Sim, running: RunningAgent
) -> None:
    """Cancelling an order the kitchen has on a fallback ticket prints a CANCELLED ticket; the POS never gets it."""
    sim.state.faults.update({"sold_out_skus": ["PZ-MARG"]})
    await running.client.post("/v1/orders", json=make_order())
    await running.wait_state("ord_01HXTEST", "failed")
    await wait_ticket(tmp_path, FALLBACK_BANNER)

    response = await running.client.post("/v1/orders/ord_01HXTEST/cancel")

    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"
    await wait_ticket(tmp_path, "CANCELLED - DO NOT MAKE")
    assert sim.accepted_keys() == []


@pytest.mark.asyncio(loop_scope="module")
async def test_unknown_order_answers_404(shared: RunningAgent) -> None:
    """Operations on an order id the agent never received answer 404."""
    running = shared
    for method, path in (
        ("GET", "/v1/orders/nope"),
        ("POST", "/v1/orders/nope/cancel"),
        ("POST", "/v1/orders/nope/resubmit"),
        ("POST", "/v1/orders/nope/reprint"),
    ):
        response = await running.client.request(method, path)
        assert response.status_code == 404, (method, path)
        assert response.headers["content-type"].startswith(PROBLEM_JSON)


async def test_resubmit_of_a_failed_order_injects_it(sim: Sim, running: RunningAgent) -> None:
    """A failed order re-submitted after the cause is fixed answers 202 and reaches the POS."""
    sim.state.faults.update({"sold_out_skus": ["PZ-MARG"]})
    await running.client.post("/v1/orders", json=make_order())
    await running.wait_state("ord_01HXTEST", "failed")
    assert (await detail(running))["error_class"] == "unavailable"
    sim.state.faults.update({"sold_out_skus": []})

    response = await running.client.post("/v1/orders/ord_01HXTEST/resubmit")

    assert response.status_code == 202
    assert response.json() == {"order_id": "ord_01HXTEST", "state": "queued"}
    await running.wait_state("ord_01HXTEST", "injected")
    shown = await detail(running)
    assert shown["attempts"] == 1
    assert shown["error_class"] is None
    # The POS refused the first key; the re-submission goes under a fresh one.
    assert sim.accepted_keys() == [f"{KEY}:s1"]


async def test_resubmit_of_an_order_that_did_not_fail_is_refused(sim: Sim, running: RunningAgent) -> None:
    """Re-submitting an order that is in the POS answers 409."""
    await running.client.post("/v1/orders", json=make_order())
    await running.wait_state("ord_01HXTEST", "injected")

    response = await running.client.post("/v1/orders/ord_01HXTEST/resubmit")

    assert response.status_code == 409


async def test_reprint_prints_a_ticket_marked_reprint(tmp_path: Path, sim: Sim, running: RunningAgent) -> None:
    """Asking for a reprint answers 202 and a ticket marked REPRINT comes out; the next says COPY 2."""
    await running.client.post("/v1/orders", json=make_order())
    await running.wait_state("ord_01HXTEST", "injected")

    response = await running.client.post("/v1/orders/ord_01HXTEST/reprint")

    assert response.status_code == 202
    assert response.json() == {"order_id": "ord_01HXTEST", "reprint_no": 1}
    printed = await wait_ticket(tmp_path, "REPRINT")
    assert "2 X MARGHERITA" in printed
    assert "K7Q2M9XA" in printed
    assert FALLBACK_BANNER not in printed
    again = await running.client.post("/v1/orders/ord_01HXTEST/reprint")
    assert again.json()["reprint_no"] == 2
    await wait_ticket(tmp_path, "COPY 2")


# ---- lists, health, OpenAPI ----------------------------------------------------------------------------------


async def test_list_by_state_is_newest_first_and_limited(sim: Sim, running: RunningAgent) -> None:
    """GET /v1/orders?state=failed&limit=2 lists the two newest failed orders, newest first."""
    await running.client.post("/v1/orders", json=make_order("ord_ok"))
    await running.wait_state("ord_ok", "injected")
    sim.state.faults.update({"unknown_skus": ["PZ-MARG"]})
    for order_id in ("ord_a", "ord_b", "ord_c"):
        await running.advance(1)
        await running.client.post("/v1/orders", json=make_order(order_id))
        await running.wait_state(order_id, "failed")

    response = await running.client.get("/v1/orders", params={"state": "failed", "limit": 2})

    assert response.status_code == 200
    listed = response.json()["orders"]
    assert [o["order_id"] for o in listed] == ["ord_c", "ord_b"]
    assert {o["state"] for o in listed} == {"failed"}
    assert {o["error_class"] for o in listed} == {"menu"}
    everything = (await running.client.get("/v1/orders")).json()["orders"]
    assert [o["order_id"] for o in everything] == ["ord_c", "ord_b", "ord_a", "ord_ok"]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(
    ("params", "loc"),
    [
        pytest.param({"state": "lost"}, ["query", "state"], id="unknown-state"),
        pytest.param({"limit": "0"}, ["query", "limit"], id="limit-0"),
        pytest.param({"limit": "many"}, ["query", "limit"], id="limit-not-a-number"),
    ],
)
async def test_list_with_a_bad_query_is_refused(shared: RunningAgent, params: dict[str, str], loc: list[str]) -> None:
    """A list query with an unknown state or a bad limit gets 422 naming the parameter."""
    response = await shared.client.get("/v1/orders", params=params)

    assert response.status_code == 422
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert [e["loc"] for e in response.json()["errors"]] == [loc]


async def test_health_reports_the_snapshot(sim: Sim, running: RunningAgent) -> None:
    """GET /v1/health answers 200 with outbox counts, POS state, disk, memory and a growing seq."""
    await running.client.post("/v1/orders", json=pending("ord_held"))
    await running.client.post("/v1/orders", json=make_order("ord_now"))
    await running.wait_state("ord_now", "injected")

    first = await running.client.get("/v1/health")
    second = await running.client.get("/v1/health")

    assert first.status_code == 200
    health = first.json()
    outbox = health["outbox"]
    assert {"held", "scheduled", "queued", "retrying", "awaiting_pos", "failed"} <= set(outbox)
    assert outbox["held"] == 1
    assert outbox["failed"] == outbox["queued"] == outbox["retrying"] == 0
    assert health["pos"]["driver"] == "http"
    assert health["pos"]["state"] == "ok"
    assert health["pos"]["circuit"] == "closed"
    assert isinstance(health["disk_free_mb"], int | float)
    assert health["disk_free_mb"] > 0
    assert health["rss_mb"] > 0
    assert health["last_injected_at"] is not None
    assert {"ts", "uptime_s", "version", "oldest_pending_age_s", "printers", "db_size_mb"} <= set(health)
    assert second.json()["seq"] > health["seq"]


@pytest.mark.asyncio(loop_scope="module")
async def test_openapi_lists_every_intake_path(shared: RunningAgent) -> None:
    """/openapi.json documents every endpoint of the intake API with its methods."""
    response = await shared.client.get("/openapi.json")

    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    paths = {path: set(ops) for path, ops in document["paths"].items()}
    expected = {
        "/v1/orders": {"post", "get"},
        "/v1/orders/{order_id}": {"get", "put"},
        "/v1/orders/{order_id}/payment": {"post"},
        "/v1/orders/{order_id}/cancel": {"post"},
        "/v1/orders/{order_id}/resubmit": {"post"},
        "/v1/orders/{order_id}/reprint": {"post"},
        "/v1/health": {"get"},
    }
    for path, methods in expected.items():
        assert path in paths, f"{path} missing from the OpenAPI document"
        assert methods <= paths[path], (path, paths[path])
