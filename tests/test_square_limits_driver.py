"""Square's limits through the driver and the simulator's Square dialect, which refuses what Square refuses.

The simulator checks every row of ``square_limits.LIMITS`` and refuses read-only fields, answering in Square's
``{"errors": [...]}`` envelope; so a mapping that broke a limit (a 550-character pickup note, a phone
of 20 characters) fails here as it would against Square, instead of only in production.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.domain.models import Order
from agent.domain.states import ErrorClass
from drivers.pos.base import Injected, InjectRequest, Permanent
from drivers.pos.sim_square import configure
from drivers.pos.sim_state import SimulatorState
from drivers.pos.simulator import create_app
from drivers.pos.square import SquareDriver
from drivers.pos.square_answers import classify_error
from drivers.pos.square_mapping import build_create_order
from tests.conftest import Sim, make_order, run_simulator
from tests.test_square_limits import square_orders

LOCATION = "L-SIM-HARBOUR"
TOKEN = "EAAAl-square-token-for-tests"
CATALOG = {"PZ-MARG": "SQ-VAR-MARG", "MOD-BASIL": "SQ-MOD-BASIL"}
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LONG_NOTE = {"instructions": "Ring the side door and wait by the bins. " * 12, "notes": "N" * 500}


def driver_for(url: str, *, transport: httpx.AsyncBaseTransport | None = None) -> SquareDriver:
    """Return a Square driver for a venue in Great Britain."""
    return SquareDriver(
        base_url=url,
        location_id=LOCATION,
        access_token=TOKEN,
        square_version="2025-01-23",
        catalog=CATALOG,
        timeout_seconds=2.0,
        phone_region="GB",
        transport=transport,
    )


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    """A simulator whose Square location is LOCATION."""
    async with run_simulator(SimulatorState()) as running:
        configure(running.state, {"location_id": LOCATION})
        yield running


@pytest.fixture
async def driver(sim: Sim) -> AsyncIterator[SquareDriver]:
    """A Square driver pointed at the simulator."""
    square = driver_for(f"http://127.0.0.1:{sim.port}")
    yield square
    await square.aclose()


def request(order_id: str = "ord_limits", **changes: Any) -> InjectRequest:
    """Return an inject request for the sample order with ``changes``."""
    return InjectRequest(Order.model_validate(make_order(order_id, **changes)), f"harbour-kitchen:{order_id}")


async def post(sim: Sim, body: dict[str, Any]) -> httpx.Response:
    """POST a raw CreateOrder body to the simulator's Square dialect."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sim.port}", trust_env=False) as client:
        return await client.post("/v2/orders", json=body, headers=AUTH)


def mapped(order_id: str = "ord_raw", **changes: Any) -> dict[str, Any]:
    """Return the CreateOrder body the mapping builds for the sample order with ``changes``."""
    return build_create_order(
        Order.model_validate(make_order(order_id, **changes)),
        location_id=LOCATION,
        idempotency_key=f"harbour-kitchen:{order_id}",
        catalog=CATALOG,
        already_printed=False,
        phone_region="GB",
    )


# ---- the defects, against the stricter simulator --------------------------------------------------------------


async def test_order_with_a_long_pickup_note_is_injected(sim: Sim, driver: SquareDriver) -> None:
    """A valid order whose instructions and notes make a note longer than 500 gets in (it failed as rejected)."""
    fulfillment = {"type": "pickup", "instructions": LONG_NOTE["instructions"]}
    result = await driver.inject(request(fulfillment=fulfillment, notes=LONG_NOTE["notes"]))
    assert result == Injected(pos_reference="SIM-000001")
    note = sim.state.orders["harbour-kitchen:ord_limits"].order["fulfillments"][0]["pickup_details"]["note"]
    assert len(note) == 500 and note.endswith("\u2026")


@pytest.mark.parametrize("typed", ["+44 (0) 7700 900 123", "07700 900123", "0044 7700 900123"])
async def test_phone_reaches_square_as_e164(sim: Sim, driver: SquareDriver, typed: str) -> None:
    """However the customer typed a British number, Square gets +447700900123 (it refused 20 characters)."""
    customer = {"name": "Sam Reed", "phone": typed, "email": "sam@example.com"}
    assert isinstance(await driver.inject(request(customer=customer)), Injected)
    recipient = sim.state.orders["harbour-kitchen:ord_limits"].order["fulfillments"][0]["pickup_details"]["recipient"]
    assert recipient["phone_number"] == "+447700900123"


async def test_old_mapping_bodies_are_refused_as_square_refuses_them(sim: Sim) -> None:
    """What the mapping sent before it kept the limits is refused with VALUE_TOO_LONG naming the field: rejected."""
    body = mapped()
    details = body["order"]["fulfillments"][0]["pickup_details"]
    details["note"] = "N" * 550  # the old cut: the delivery limit, applied to pickup too
    details["recipient"]["phone_number"] = "+44 (0) 7700 900 123"  # passed through as typed
    response = await post(sim, body)
    assert response.status_code == 400
    assert response.json() == {
        "errors": [
            {
                "category": "INVALID_REQUEST_ERROR",
                "code": "VALUE_TOO_LONG",
                "detail": "Field must not be greater than 500 length",
                "field": "order.fulfillments[0].pickup_details.note",
            },
            {
                "category": "INVALID_REQUEST_ERROR",
                "code": "VALUE_TOO_LONG",
                "detail": "Field must not be greater than 17 length",
                "field": "order.fulfillments[0].pickup_details.recipient.phone_number",
            },
        ]
    }
    result = classify_error(400, response.json(), None, sent=body)
    assert isinstance(result, Permanent) and result.error_class is ErrorClass.REJECTED
    assert "VALUE_TOO_LONG" in result.reason and "pickup_details.note" in result.reason
    assert not sim.state.orders


@pytest.mark.parametrize(
    ("where", "field"),
    [
        (("order",), "total_tip_money"),
        (("order",), "total_money"),
        (("order", "line_items", 0), "total_money"),
        (("order", "service_charges", 0), "applied_money"),
        (("order", "fulfillments", 0, "pickup_details"), "placed_at"),
    ],
)
async def test_read_only_fields_are_refused(sim: Sim, where: tuple[Any, ...], field: str) -> None:
    """A request that sets a field Square computes (an order tip, a total) is refused, naming the field."""
    body = mapped()
    target: Any = body
    for part in where:
        target = target[part]
    target[field] = {"amount": 100, "currency": "GBP"} if field.endswith("money") else "2026-01-01T00:00:00Z"
    response = await post(sim, body)
    assert response.status_code == 400
    [error] = response.json()["errors"]
    path = ".".join(str(p) for p in where).replace(".0", "[0]")
    assert (error["code"], error["field"]) == ("INVALID_VALUE", f"{path}.{field}")


async def test_tip_as_a_service_charge_is_taken_and_counted_in_the_total(sim: Sim) -> None:
    """The mapping's tip (a TOTAL_PHASE service charge) is accepted; Square's total includes it."""
    response = await post(sim, mapped())
    assert response.status_code == 200, response.text
    order = response.json()["order"]
    assert [c["name"] for c in order["service_charges"]] == ["Tip"]
    assert order["total_money"] == {"amount": 1910, "currency": "GBP"}


async def test_a_taxable_total_phase_charge_or_both_amounts_are_refused(sim: Sim) -> None:
    """OrderServiceCharge: TOTAL_PHASE cannot be taxable; percentage and amount_money are exclusive."""
    body = mapped()
    body["order"]["service_charges"][0]["taxable"] = True
    assert (await post(sim, body)).json()["errors"][0]["field"] == "order.service_charges[0].taxable"
    body = mapped("ord_raw_2")
    body["order"]["service_charges"][0]["percentage"] = "10"
    assert (await post(sim, body)).json()["errors"][0]["code"] == "CONFLICTING_PARAMETERS"


# ---- arbitrary valid orders, through the driver, against the simulator -----------------------------------------


async def _inject_in_process(order: Order, already_printed: bool) -> object:
    """Inject ``order`` through a SquareDriver into a fresh simulator app, in process (no socket)."""
    state = SimulatorState()
    configure(state, {"location_id": LOCATION, "catalog_ids": [*CATALOG.values(), "SQ-DISC-STAFF"]})
    square = driver_for("http://square.test", transport=httpx.ASGITransport(app=create_app(state)))
    try:
        return await square.inject(InjectRequest(order, f"harbour-kitchen:{order.id}", already_printed))
    finally:
        await square.aclose()


@settings(
    max_examples=60,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(value=square_orders(), already_printed=st.booleans())
def test_every_valid_order_is_taken_by_the_strict_simulator(value: Order, already_printed: bool) -> None:
    """Whatever a valid order holds (longest texts, emoji, deep modifiers), the simulator's Square takes it."""
    result = asyncio.run(_inject_in_process(value, already_printed))
    assert isinstance(result, Injected), result
