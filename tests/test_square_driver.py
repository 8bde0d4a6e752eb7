"""The ``square`` driver against the simulator's Square dialect on loopback, and through a real agent."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from agent.domain.config import Settings
from agent.domain.models import Order
from agent.domain.states import ErrorClass
from drivers.pos.base import ALREADY_PRINTED_NOTE, Injected, InjectRequest, Permanent, ReadinessState, Transient
from drivers.pos.errors import PosConfigError
from drivers.pos.registry import build_driver
from drivers.pos.sim_square import configure
from drivers.pos.sim_state import SimulatorState
from drivers.pos.square import SquareDriver
from drivers.pos.square_answers import TAX_HINT
from drivers.pos.square_mapping import build_create_order
from tests.conftest import Sim, agent_settings, eventually, make_order, run_agent, run_simulator

LOCATION = "L-SIM-HARBOUR"
TOKEN = "EAAAl-square-token-for-tests"
VERSION = "2025-01-23"
CATALOG = {"PZ-MARG": "SQ-VAR-MARG", "MOD-BASIL": "SQ-MOD-BASIL"}
KEY = "harbour-kitchen:ord_01HXTEST"
FALLBACK_BANNER = "FALLBACK - NOT IN POS"


def base_url(sim: Sim) -> str:
    """Return the simulator's base URL (the Square dialect lives under /v2)."""
    return f"http://127.0.0.1:{sim.port}"


@asynccontextmanager
async def square_driver(url: str, **overrides: Any) -> AsyncIterator[SquareDriver]:
    """Build a SquareDriver for ``url`` and close it after the block."""
    kwargs: dict[str, Any] = {
        "base_url": url,
        "location_id": LOCATION,
        "access_token": TOKEN,
        "square_version": VERSION,
        "catalog": CATALOG,
        "timeout_seconds": 2.0,
    }
    kwargs.update(overrides)
    driver = SquareDriver(**kwargs)
    try:
        yield driver
    finally:
        await driver.aclose()


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    """A simulator whose Square location is LOCATION."""
    async with run_simulator(SimulatorState()) as running:
        configure(running.state, {"location_id": LOCATION})
        yield running


@pytest.fixture
async def driver(sim: Sim) -> AsyncIterator[SquareDriver]:
    """A Square driver pointed at the simulator."""
    async with square_driver(base_url(sim)) as square:
        yield square


def request_for(order_id: str = "ord_01HXTEST", already_printed: bool = False, **changes: Any) -> InjectRequest:
    """Return an inject request for the sample order, keyed like the agent keys it."""
    order = Order.model_validate(make_order(order_id, **changes))
    return InjectRequest(order, f"harbour-kitchen:{order_id}", already_printed=already_printed)


async def sim_orders(sim: Sim) -> list[dict[str, Any]]:
    """Return GET /_sim/orders."""
    async with httpx.AsyncClient(base_url=base_url(sim), trust_env=False) as client:
        response = await client.get("/_sim/orders")
        assert response.status_code == 200
        return list(response.json())


def free_port() -> int:
    """Return a loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---- inject --------------------------------------------------------------------------------------------------


async def test_order_is_injected_with_the_square_order_id(sim: Sim, driver: SquareDriver) -> None:
    """A healthy Square takes the order: injected with its order id; the sim holds the CreateOrder body once."""
    result = await driver.inject(request_for())
    assert result == Injected(pos_reference="SIM-000001")
    orders = await sim_orders(sim)
    assert [(o["key"], o["pos_reference"], o["status"]) for o in orders] == [(KEY, "SIM-000001", "injected")]
    sent = orders[0]["order"]
    assert sent["location_id"] == LOCATION
    assert sent["reference_id"] == "ord_01HXTEST"
    assert sent["line_items"][0]["catalog_object_id"] == "SQ-VAR-MARG"
    assert sent["line_items"][0]["quantity"] == "2"


async def test_square_total_equals_what_the_customer_paid(sim: Sim) -> None:
    """Square's own total for the order (lines, modifiers, discount, tip) equals the order's total."""
    body = {
        "idempotency_key": "k1",
        "order": (await _body_for(request_for()))["order"],
    }
    async with httpx.AsyncClient(base_url=base_url(sim), trust_env=False) as client:
        response = await client.post("/v2/orders", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    assert response.json()["order"]["total_money"] == {"amount": 1910, "currency": "GBP"}


async def _body_for(request: InjectRequest) -> dict[str, Any]:
    return build_create_order(
        request.order,
        location_id=LOCATION,
        idempotency_key=request.idempotency_key,
        catalog=CATALOG,
        already_printed=False,
    )


async def test_same_key_after_a_lost_response_creates_one_order(sim: Sim, driver: SquareDriver) -> None:
    """Resending with the same key (as after a lost answer) replays Square's answer; one order exists."""
    first = await driver.inject(request_for())
    second = await driver.inject(request_for())
    assert first == second == Injected(pos_reference="SIM-000001")
    orders = await sim_orders(sim)
    assert len(orders) == 1
    assert orders[0]["requests"] == 2


async def test_timeout_is_in_doubt_and_the_resend_finds_the_order(sim: Sim) -> None:
    """A Square too slow to answer is transient in doubt; it had the order, so the resend gets the same id."""
    sim.state.faults.slow_ms = 400
    async with square_driver(base_url(sim), timeout_seconds=0.1) as slow_driver:
        result = await slow_driver.inject(request_for())
        assert isinstance(result, Transient)
        assert result.in_doubt
        assert "did not answer in time" in result.reason
        await eventually(lambda: _count(sim), lambda n: n == 1)
    sim.state.faults.slow_ms = 0
    async with square_driver(base_url(sim)) as fresh:
        assert await fresh.inject(request_for()) == Injected(pos_reference="SIM-000001")
    assert len(sim.state.orders) == 1


async def _count(sim: Sim) -> int:
    return len(sim.state.orders)


async def test_same_key_with_other_content_is_rejected_not_duplicated(sim: Sim, driver: SquareDriver) -> None:
    """The same key with a changed body (marked after a lost answer) is Square's key-reuse error: a human checks."""
    assert await driver.inject(request_for()) == Injected(pos_reference="SIM-000001")
    result = await driver.inject(request_for(already_printed=True))
    assert isinstance(result, Permanent)
    assert (result.error_class, result.status) == (ErrorClass.REJECTED, 400)
    assert "IDEMPOTENCY_KEY_REUSED" in result.reason
    assert "may already be in Square" in result.reason
    assert len(sim.state.orders) == 1


async def test_already_printed_marker_reaches_square(sim: Sim, driver: SquareDriver) -> None:
    """An order injected after its fallback ticket carries the marker in the fulfilment note and ticket name."""
    assert isinstance(await driver.inject(request_for(already_printed=True)), Injected)
    order = sim.state.orders[KEY].order
    assert order["fulfillments"][0]["pickup_details"]["note"].startswith(ALREADY_PRINTED_NOTE)
    assert order["ticket_name"].startswith("ALREADY PRINTED")


async def test_expired_token_is_auth(sim: Sim, driver: SquareDriver) -> None:
    """A 401 AUTHENTICATION_ERROR is a permanent AUTH failure."""
    sim.state.faults.auth_expired = True
    result = await driver.inject(request_for())
    assert isinstance(result, Permanent)
    assert (result.error_class, result.status) == (ErrorClass.AUTH, 401)
    assert "ACCESS_TOKEN_EXPIRED" in result.reason


async def test_request_without_bearer_token_is_refused_by_the_sim(sim: Sim) -> None:
    """The dialect insists on a Bearer token, answering in Square's envelope."""
    async with httpx.AsyncClient(base_url=base_url(sim), trust_env=False) as client:
        response = await client.post("/v2/orders", json={"idempotency_key": "k", "order": {}})
    assert response.status_code == 401
    assert response.json()["errors"][0]["category"] == "AUTHENTICATION_ERROR"


async def test_rate_limit_is_transient_with_retry_after(sim: Sim, driver: SquareDriver) -> None:
    """A 429 RATE_LIMITED is transient with Square's Retry-After; once it lifts the order goes in."""
    await sim.state.apply_faults({"rate_limit_count": 1, "retry_after_seconds": 7})
    result = await driver.inject(request_for())
    assert isinstance(result, Transient)
    assert (result.status, result.retry_after, result.in_doubt) == (429, 7.0, False)
    assert await driver.inject(request_for()) == Injected(pos_reference="SIM-000001")


async def test_down_is_transient(sim: Sim, driver: SquareDriver) -> None:
    """A Square that is down (503) is transient with its Retry-After; an HTML 503 too, readably."""
    await sim.state.apply_faults({"down": True, "retry_after_seconds": 4})
    result = await driver.inject(request_for())
    assert isinstance(result, Transient)
    assert (result.status, result.retry_after) == (503, 4.0)
    await sim.state.apply_faults({"html_errors": True})
    result = await driver.inject(request_for())
    assert isinstance(result, Transient)
    assert "non-JSON body: 503 Service Unavailable" in result.reason


async def test_server_error_is_transient(sim: Sim, driver: SquareDriver) -> None:
    """A 500 INTERNAL_SERVER_ERROR is transient and not in doubt."""
    sim.state.faults.error_rate = 1.0
    result = await driver.inject(request_for())
    assert isinstance(result, Transient)
    assert (result.status, result.in_doubt) == (500, False)


async def test_unknown_catalog_id_is_menu_naming_the_sku(sim: Sim) -> None:
    """A catalog id Square does not know is a permanent MENU failure naming the SKU behind it."""
    async with square_driver(base_url(sim), catalog={"PZ-MARG": "SQ-VAR-GONE"}) as driver:
        result = await driver.inject(request_for())
    assert isinstance(result, Permanent)
    assert (result.error_class, result.status, result.skus) == (ErrorClass.MENU, 404, ("PZ-MARG",))
    assert "SQ-VAR-GONE" in result.reason
    assert sim.state.orders == {}


async def test_unknown_and_sold_out_sku_faults(sim: Sim, driver: SquareDriver) -> None:
    """The simulator's unknown-SKU and sold-out switches come back as menu and unavailable."""
    await sim.state.apply_faults({"unknown_skus": ["PZ-MARG"]})
    result = await driver.inject(request_for())
    assert isinstance(result, Permanent)
    assert (result.error_class, result.skus) == (ErrorClass.MENU, ("PZ-MARG",))
    await sim.state.apply_faults({"unknown_skus": [], "sold_out_skus": ["PZ-MARG"]})
    result = await driver.inject(request_for())
    assert isinstance(result, Permanent)
    assert (result.error_class, result.skus) == (ErrorClass.UNAVAILABLE, ("PZ-MARG",))


async def test_tax_error_is_rejected_with_the_tax_hint(sim: Sim, driver: SquareDriver) -> None:
    """A tax-related INVALID_REQUEST_ERROR is rejected, and the reason says to check Square's tax setup."""
    async with httpx.AsyncClient(base_url=base_url(sim), trust_env=False) as client:
        response = await client.post("/_sim/square", json={"tax_error": True})
        assert response.json()["tax_error"] is True
    result = await driver.inject(request_for())
    assert isinstance(result, Permanent)
    assert (result.error_class, result.status) == (ErrorClass.REJECTED, 400)
    assert TAX_HINT in result.reason
    assert "applied_taxes[0].tax_uid" in result.reason


async def test_wrong_location_is_rejected_naming_the_setting(sim: Sim) -> None:
    """An order for another location is rejected with a pointer at pos.square.location_id."""
    async with square_driver(base_url(sim), location_id="L-ELSEWHERE") as driver:
        result = await driver.inject(request_for())
        readiness = await driver.probe()
    assert isinstance(result, Permanent)
    assert result.error_class is ErrorClass.REJECTED
    assert "pos.square.location_id" in result.reason
    assert readiness.state is ReadinessState.NOT_READY


async def test_connection_refused_is_transient_not_in_doubt() -> None:
    """Nothing listening: transient, and certainly not sent."""
    async with square_driver(f"http://127.0.0.1:{free_port()}") as driver:
        result = await driver.inject(request_for())
    assert isinstance(result, Transient)
    assert not result.in_doubt
    assert "not reachable" in result.reason


# ---- headers, secrets ----------------------------------------------------------------------------------------


async def test_headers_carry_token_version_and_json() -> None:
    """Every request has the Bearer token, the Square-Version and a JSON content type."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"order": {"id": "CAISEM1"}})

    async with square_driver("https://connect.squareup.com", transport=httpx.MockTransport(handler)) as driver:
        assert await driver.inject(request_for()) == Injected(pos_reference="CAISEM1")
    request = seen[0]
    assert str(request.url) == "https://connect.squareup.com/v2/orders"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Square-Version"] == VERSION
    assert request.headers["Content-Type"] == "application/json"


async def test_logs_never_contain_the_token(sim: Sim, driver: SquareDriver) -> None:
    """Injected, failed and probed: no log event carries the access token."""
    with capture_logs() as logs:
        await driver.inject(request_for())
        sim.state.faults.auth_expired = True
        await driver.inject(request_for("ord_2"))
        await driver.probe()
    assert {e["event"] for e in logs} >= {"pos_order_injected", "pos_request_failed"}
    assert TOKEN not in repr(logs)


# ---- probe ---------------------------------------------------------------------------------------------------


async def test_probe_states(sim: Sim, driver: SquareDriver) -> None:
    """The location lookup: ready, inactive, token refused, down; and nothing listening is unreachable."""
    ready = await driver.probe()
    assert ready.state is ReadinessState.READY
    assert ready.conditions == {"authenticated": True, "location_active": True}
    assert ready.latency_ms is not None
    sim.state.faults.not_ready = True
    assert (await driver.probe()).state is ReadinessState.NOT_READY
    sim.state.faults.not_ready = False
    sim.state.faults.auth_expired = True
    assert (await driver.probe()).state is ReadinessState.AUTH_REQUIRED
    sim.state.faults.auth_expired = False
    sim.state.faults.down = True
    assert (await driver.probe()).state is ReadinessState.UNREACHABLE
    async with square_driver(f"http://127.0.0.1:{free_port()}") as nowhere:
        assert (await nowhere.probe()).state is ReadinessState.UNREACHABLE
    assert await driver.confirmation(request_for()) is None


# ---- configuration -------------------------------------------------------------------------------------------


def square_settings(tmp_path: Path, url: str, **sections: dict[str, Any]) -> Settings:
    """Return agent settings with the Square driver pointed at ``url`` (other sections override)."""
    table = {"base_url": url, "location_id": LOCATION, "access_token": TOKEN, "catalog": CATALOG}
    return agent_settings(tmp_path, f"{url}/orders", pos={"driver": "square", "square": table}, **sections)


async def test_registry_builds_the_square_driver(tmp_path: Path) -> None:
    """pos.driver = "square" builds a SquareDriver; a missing location or token is a config error naming the key."""
    settings = square_settings(tmp_path, "https://connect.squareup.com")
    driver = build_driver(settings)
    assert isinstance(driver, SquareDriver)
    assert (driver.name, driver.two_phase) == ("square", False)
    await driver.aclose()
    assert settings.pos.square is not None
    for change, key in (
        ({"location_id": None}, "pos.square.location_id"),
        ({"access_token": None}, "pos.square.access_token"),
    ):
        square = settings.pos.square.model_copy(update=change)
        broken = settings.model_copy(update={"pos": settings.pos.model_copy(update={"square": square})})
        with pytest.raises(PosConfigError, match=re.escape(key)):
            build_driver(broken)


def test_unusable_base_url_is_a_config_error() -> None:
    """A base_url that is not http(s) is refused at start-up."""
    with pytest.raises(PosConfigError, match=re.escape("pos.square.base_url")):
        SquareDriver(
            base_url="connect.squareup.com",
            location_id=LOCATION,
            access_token=TOKEN,
            square_version=VERSION,
            catalog={},
            timeout_seconds=1,
        )


# ---- through the agent ---------------------------------------------------------------------------------------


async def test_agent_injects_into_square_and_falls_back_when_down(sim: Sim, tmp_path: Path) -> None:
    """Through the agent: injected with the Square order id; with Square down, a fallback ticket, then marked."""
    settings = square_settings(
        tmp_path, base_url(sim), fallback={"print_after_seconds": 60, "print_when_pos_not_ready": False}
    )
    async with run_agent(settings) as running:
        await eventually(lambda: _probes(sim), bool)
        response = await running.client.post("/v1/orders", json=make_order("ord_ok"))
        assert response.status_code == 202, response.text
        await running.wait_state("ord_ok", "injected")
        shown = (await running.client.get("/v1/orders/ord_ok")).json()
        assert shown["pos_reference"] == "SIM-000001"
        assert sim.state.orders["harbour-kitchen:ord_ok"].pos_reference == "SIM-000001"

        sim.state.faults.down = True
        response = await running.client.post("/v1/orders", json=make_order("ord_down"))
        assert response.status_code == 202, response.text
        await running.wait_state("ord_down", "retrying")
        for _ in range(7):
            await running.advance(10)
        printed = await eventually(lambda: _tickets(tmp_path), lambda text: FALLBACK_BANNER in text)
        assert "MARGHERITA" in printed.upper()
        assert "harbour-kitchen:ord_down" not in sim.state.orders

        sim.state.faults.down = False
        for _ in range(12):
            await running.advance(10)
            if "harbour-kitchen:ord_down" in sim.state.orders:
                break
        await running.wait_state("ord_down", "injected")
        order = sim.state.orders["harbour-kitchen:ord_down"].order
        assert order["fulfillments"][0]["pickup_details"]["note"].startswith(ALREADY_PRINTED_NOTE)


async def _probes(sim: Sim) -> list[Any]:
    return [r for r in sim.state.requests if r.path.startswith("/v2/locations/") and r.status]


async def _tickets(tmp_path: Path) -> str:
    path = tmp_path / "tickets.txt"
    await asyncio.sleep(0)
    return path.read_text(encoding="utf-8") if path.exists() else ""
