"""Three length and phone defects end to end: a real ``venue-agent run`` and a real ``venue-agent pos-sim`` process.

One test per defect, each as a venue meets it: orders posted to the agent's intake API, the outcome read back
from the API, and what the POS holds read from the simulator's control API. The simulator's Square dialect
refuses what Square refuses (every limit of ``square_limits.LIMITS``, read-only fields), so before the fix
the first two tests ended ``failed/rejected`` with VALUE_TOO_LONG, and the third sent Lightspeed a number that
does not exist.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from drivers.pos.square_limits import square_length
from tests.conftest import make_order
from tests.test_crash_recovery import AgentProcess, Processes, SimProcess, poll
from tests.test_pos_drivers_process import _common

pytestmark = pytest.mark.slow

VENUE = "harbour-kitchen"
EMOJI = "\U0001f355"


def config(tmp_path: Path, agent: AgentProcess, sim: SimProcess, pos: str) -> str:
    """An agent config for a venue in Europe/London (venue.country left to its default) with ``pos``."""
    injection = "backoff_base_seconds = 0.05\nbackoff_max_seconds = 0.2"
    return (
        _common(tmp_path, agent.port, injection=injection)
        + f"""
[pos]
rate_limit_per_second = 50
{pos.replace("@SIM@", sim.base)}
"""
    )


SQUARE = """
driver = "square"

[pos.square]
base_url = "@SIM@"
location_id = "LSIM-HARBOUR"
access_token = "sq-sim-access-token"

[pos.square.catalog]
PZ-MARG = "SQ-VAR-MARG"
MOD-BASIL = "SQ-MOD-BASIL"
"""

LIGHTSPEED = """
driver = "lightspeed_k"

[pos.lightspeed_k]
base_url = "@SIM@"
business_location_id = 45454545
client_id = "venue-agent"
client_secret = "client-secret"
refresh_token = "seed-refresh-token"
endpoint_id = "venue-agent-hook"
webhook_username = "lightspeed"
webhook_password = "hook-secret"
"""


@pytest.fixture(name="client")
async def _client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        yield client


@pytest.fixture(name="sim")
async def _sim(procs: Processes, client: httpx.AsyncClient) -> SimProcess:
    sim = SimProcess(procs, client)
    await sim.start()
    return sim


async def start_agent(
    procs: Processes, tmp_path: Path, sim: SimProcess, client: httpx.AsyncClient, pos: str
) -> AgentProcess:
    """Start ``venue-agent run`` with ``pos`` pointed at the simulator process; wait until it answers."""
    agent = AgentProcess(procs, tmp_path, sim.port)
    agent.config.write_text(config(tmp_path, agent, sim, pos), encoding="utf-8")
    agent.start()
    await agent.wait_ready(client)
    return agent


async def post(client: httpx.AsyncClient, agent: AgentProcess, order: dict[str, Any]) -> None:
    """Post an order to the agent's intake API; it must be acknowledged."""
    response = await client.post(f"{agent.base}/v1/orders", json=order)
    assert response.status_code == 202, response.text


async def wait_state(client: httpx.AsyncClient, agent: AgentProcess, order_id: str, state: str) -> dict[str, Any]:
    """Poll ``GET /v1/orders/{id}`` until the order is in ``state`` (fail fast when it failed instead)."""

    last: dict[str, Any] = {}

    async def reached() -> dict[str, Any] | None:
        shown: dict[str, Any] = (await client.get(f"{agent.base}/v1/orders/{order_id}")).json()
        last.update(shown)
        assert shown["state"] != "failed" or state == "failed", shown.get("last_error")
        return shown if shown["state"] == state else None

    try:
        result: dict[str, Any] = await poll(reached, timeout=10, what=f"{order_id} {state}", interval=0.05)
    except pytest.fail.Exception:
        pytest.fail(
            f"{order_id} is {last.get('state')} ({last.get('last_error')}), not {state}:\n{agent.logs()[-2000:]}"
        )
    return result


async def held(sim: SimProcess, order_id: str) -> dict[str, Any]:
    """Return the body the POS holds for ``order_id`` (one order under the agent's key)."""
    found = [o["order"] for o in await sim.orders() if o["key"] == f"{VENUE}:{order_id}"]
    assert len(found) == 1, f"the POS holds {len(found)} orders for {order_id}"
    return found[0]


async def test_square_order_with_a_long_pickup_note_is_injected(
    tmp_path: Path, procs: Processes, sim: SimProcess, client: httpx.AsyncClient
) -> None:
    """Defect 1: a valid order whose note is longer than a pickup note may be is injected, its note cut visibly."""
    agent = await start_agent(procs, tmp_path, sim, client, SQUARE)
    instructions = "Ring the side door, then wait by the blue bins please. " * 9  # 494 characters
    order = make_order("ord_long_note", fulfillment={"type": "pickup", "instructions": instructions}, notes="N" * 500)
    await post(client, agent, order)
    await wait_state(client, agent, "ord_long_note", "injected")
    note = (await held(sim, "ord_long_note"))["fulfillments"][0]["pickup_details"]["note"]
    assert len(note) == 500 and note.endswith("\u2026") and note.startswith(instructions.strip())

    # What the agent sent before (the delivery limit of 550, used for pickup too) is refused as Square does.
    body = {"idempotency_key": "old-mapping", "order": await held(sim, "ord_long_note")}
    body["order"]["fulfillments"][0]["pickup_details"]["note"] = "N" * 550
    response = await client.post(f"{sim.base}/v2/orders", json=body, headers={"Authorization": "Bearer t"})
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert (error["code"], error["field"]) == ("VALUE_TOO_LONG", "order.fulfillments[0].pickup_details.note")


async def test_square_phones_go_as_e164_with_the_venue_s_country(
    tmp_path: Path, procs: Processes, sim: SimProcess, client: httpx.AsyncClient
) -> None:
    """Defect 2: "+44 (0) 7700 900 123" (20 characters, refused) and "07700 900123" both reach Square as E.164.

    The venue sets no country: Europe/London gives GB. A number that cannot be placed is shown in the note.
    """
    agent = await start_agent(procs, tmp_path, sim, client, SQUARE)
    typed = {"ord_ph_intl": "+44 (0) 7700 900 123", "ord_ph_national": "07700 900123", "ord_ph_words": "ask at till"}
    for order_id, phone in typed.items():
        await post(client, agent, make_order(order_id, customer={"name": "Sam Reed", "phone": phone}))
    for order_id in typed:
        await wait_state(client, agent, order_id, "injected")
    for order_id in ("ord_ph_intl", "ord_ph_national"):
        details = (await held(sim, order_id))["fulfillments"][0]["pickup_details"]
        assert details["recipient"]["phone_number"] == "+447700900123"
    details = (await held(sim, "ord_ph_words"))["fulfillments"][0]["pickup_details"]
    assert "phone_number" not in details["recipient"]
    assert details["note"].startswith("Phone: ask at till; ")


async def test_lightspeed_gets_the_number_not_the_trunk_zero(
    tmp_path: Path, procs: Processes, sim: SimProcess, client: httpx.AsyncClient
) -> None:
    """Defect 3: Lightspeed's contactNumberAsE164 for "+44 (0) 7700 900 123" is +447700900123, not +4407700900123."""
    agent = await start_agent(procs, tmp_path, sim, client, LIGHTSPEED)
    await post(
        client, agent, make_order("ord_ls_phone", customer={"name": "Sam Reed", "phone": "+44 (0) 7700 900 123"})
    )
    await wait_state(client, agent, "ord_ls_phone", "awaiting_pos")
    [sent] = [o["order"] for o in await sim.orders() if o["order"].get("customerInfo")]
    assert sent["customerInfo"]["contactNumberAsE164"] == "+447700900123"


async def test_square_order_at_every_limit_is_injected_with_its_tip_as_a_service_charge(
    tmp_path: Path, procs: Processes, sim: SimProcess, client: httpx.AsyncClient
) -> None:
    """A delivery at the longest texts intake allows (emoji count twice in Square) is injected; the tip is a
    TOTAL_PHASE service charge and no read-only field is sent."""
    agent = await start_agent(procs, tmp_path, sim, client, SQUARE)
    long_name = "Pizza " + EMOJI * 300
    items = [
        {
            "name": long_name,
            "quantity": 999,
            "unit_price": 10,
            "notes": "N" * 500,
            "allergens": ["gluten"] * 30,
            "modifiers": [{"name": "M" * 500, "modifiers": [{"name": "C" * 500, "modifiers": [{"name": "D" * 500}]}]}],
        }
    ]
    discounts = [{"kind": "discount", "code": "C" * 500, "description": "D" * 500, "amount": 99}] * 20
    order = make_order(
        "ord_every_limit",
        fulfillment={
            "type": "delivery",
            "address": {"line1": EMOJI * 500, "line2": "L" * 500, "city": "B" * 500, "postcode": "P" * 500},
            "instructions": "I" * 500,
        },
        customer={"name": "S" * 500, "phone": "+44 (0) 7700 900 123", "email": EMOJI * 200 + "@example.com"},
        items=items,
        charges={"delivery_fee": 1, "service_charge": 1, "tip": 100},
        discounts=discounts,
        payment={"status": "paid", "method": "card", "amount": 8112, "currency": "GBP"},
        total=999 * 10 + 102 - 20 * 99,
        notes="O" * 500,
    )
    await post(client, agent, order)
    await wait_state(client, agent, "ord_every_limit", "injected")
    sent = await held(sim, "ord_every_limit")
    assert [(c["name"], c["calculation_phase"], c["taxable"]) for c in sent["service_charges"]] == [
        ("Delivery fee", "SUBTOTAL_PHASE", False),
        ("Service charge", "SUBTOTAL_PHASE", False),
        ("Tip", "TOTAL_PHASE", False),
    ]
    assert sent["line_items"][0]["name"].endswith("\u2026")
    assert square_length(sent["fulfillments"][0]["delivery_details"]["note"]) == 550
