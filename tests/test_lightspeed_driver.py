"""The ``lightspeed_k`` driver against the simulator's K-Series dialect on loopback, with a real outbox."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from agent.domain.config import LightspeedKSettings, settings_from_dict
from agent.domain.models import Order, parse_order
from agent.domain.states import ErrorClass
from agent.outbox.store import Outbox
from drivers.pos.base import Accepted, InjectRequest, Permanent, ReadinessState, Transient
from drivers.pos.errors import PosConfigError
from drivers.pos.lightspeed_answers import classify_answer
from drivers.pos.lightspeed_k import LightspeedKDriver, check_settings
from drivers.pos.lightspeed_limits import limit_violations
from drivers.pos.lightspeed_notifications import classify_webhook
from drivers.pos.registry import build_driver
from drivers.pos.sim_state import SimulatorState
from tests.conftest import Sim, eventually, make_order, run_simulator

LOCATION = 1234
KEY = "harbour-kitchen:ord_01HXTEST"
LONDON = ZoneInfo("Europe/London")


@dataclass
class Receiver:
    """A webhook receiver on a loopback port: records each POST's headers and JSON body, answers 200."""

    port: int = 0
    received: list[tuple[dict[str, str], Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Return the URL to give the simulator."""
        return f"http://127.0.0.1:{self.port}/v1/webhooks/lightspeed"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read one HTTP/1.1 request and answer 200."""
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.received.append((headers, json.loads(body)))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        await writer.drain()
        writer.close()


@asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    """Serve a webhook receiver until the block ends."""
    receiver = Receiver()
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    receiver.port = server.sockets[0].getsockname()[1]
    try:
        yield receiver
    finally:
        server.close()
        await server.wait_closed()


def ls_settings(sim: Sim, **changes: Any) -> LightspeedKSettings:
    """Return driver settings pointing at the simulator."""
    values: dict[str, Any] = {
        "base_url": f"http://127.0.0.1:{sim.port}",
        "business_location_id": LOCATION,
        "client_id": "venue-agent",
        "client_secret": "client-secret",
        "refresh_token": "seed-refresh-token",
        "endpoint_id": "venue-agent-hook",
        **changes,
    }
    return LightspeedKSettings(**values)


def order_of(order_id: str = "ord_01HXTEST", **changes: Any) -> Order:
    """Return a parsed order."""
    return parse_order(make_order(order_id, **changes), venue_id="harbour-kitchen")


def request_for(order: Order, key: str = KEY) -> InjectRequest:
    """Return an inject request with a stable key."""
    return InjectRequest(order=order, idempotency_key=key)


async def sim_control(sim: Sim, **settings: Any) -> dict[str, Any]:
    """POST to the simulator's /_sim/lightspeed control endpoint."""
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.post(f"http://127.0.0.1:{sim.port}/_sim/lightspeed", json=settings)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def requests_to(sim: Sim, path: str) -> list[int]:
    """Return the statuses of the requests that reached ``path``."""
    return [r.status for r in sim.state.requests if r.path == path]


@pytest.fixture(name="sim")
async def _sim() -> AsyncIterator[Sim]:
    async with run_simulator(SimulatorState()) as sim:
        yield sim


@asynccontextmanager
async def driver_for(sim: Sim, outbox: Outbox | None, **changes: Any) -> AsyncIterator[LightspeedKDriver]:
    """Yield a driver on the simulator, closed at the end of the block."""
    timeout = changes.pop("timeout_seconds", 5.0)
    async with httpx.AsyncClient(trust_env=False, timeout=timeout) as client:
        driver = LightspeedKDriver(
            ls_settings(sim, **changes), tz=LONDON, timeout_seconds=timeout, store=outbox, client=client
        )
        try:
            yield driver
        finally:
            await driver.aclose()


async def test_a_to_go_order_is_accepted_and_the_simulator_holds_its_body(sim: Sim, outbox: Outbox) -> None:
    async with driver_for(sim, outbox) as driver:
        result = await driver.inject(request_for(order_of()))

    assert result == Accepted(pos_reference=None)
    assert requests_to(sim, "/o/op/1/order/toGo") == [200]
    body = sim.state.orders[KEY].order
    assert body["businessLocationId"] == LOCATION
    assert body["thirdPartyReference"] == KEY
    assert body["endpointId"] == "venue-agent-hook"
    assert body["customerInfo"]["firstName"] == "Sam"
    assert [line["sku"] for line in body["items"]] == ["PZ-MARG", "STOREKIT_DISCOUNT"]
    assert body["items"][0]["subItems"][0]["sku"] == "MOD-BASIL"
    async with httpx.AsyncClient(trust_env=False) as client:
        shown = (await client.get(f"http://127.0.0.1:{sim.port}/_sim/orders")).json()
    assert [(o["key"], o["status"]) for o in shown] == [(KEY, "pending")]


async def test_a_dine_in_order_goes_to_the_local_endpoint_with_table_and_courses(sim: Sim, outbox: Outbox) -> None:
    order = order_of(fulfillment={"type": "dine_in", "table": "12", "covers": 3}, customer=None)
    async with driver_for(sim, outbox) as driver:
        result = await driver.inject(request_for(order))

    assert isinstance(result, Accepted)
    assert requests_to(sim, "/o/op/1/order/local") == [200]
    body = sim.state.orders[KEY].order
    assert (body["tableNumber"], body["clientCount"]) == ("12", 3)
    assert body["items"][0]["course"] == 1


async def test_a_resend_after_a_lost_answer_is_accepted_once(sim: Sim, outbox: Outbox) -> None:
    async with driver_for(sim, outbox) as driver:
        first = await driver.inject(request_for(order_of()))
        again = await driver.inject(request_for(order_of()))

    assert isinstance(first, Accepted) and isinstance(again, Accepted)
    assert requests_to(sim, "/o/op/1/order/toGo") == [200, 409]
    assert list(sim.state.orders) == [KEY]
    assert sim.state.attempts[KEY] == 2


async def test_an_expired_access_token_is_refreshed_once_and_the_order_sent_again(sim: Sim, outbox: Outbox) -> None:
    async with driver_for(sim, outbox) as driver:
        assert isinstance(await driver.inject(request_for(order_of("ord_1"), "k:1")), Accepted)
        await sim_control(sim, expire_access_tokens=True)
        result = await driver.inject(request_for(order_of("ord_2"), "k:2"))

    assert isinstance(result, Accepted)
    assert requests_to(sim, "/o/op/1/order/toGo") == [200, 401, 200]
    assert requests_to(sim, "/oauth/token") == [200, 200]


async def test_a_token_the_api_keeps_refusing_is_a_permanent_auth_failure(sim: Sim, outbox: Outbox) -> None:
    await sim.state.apply_faults({"auth_expired": True})
    async with driver_for(sim, outbox) as driver:
        result = await driver.inject(request_for(order_of()))

    assert isinstance(result, Permanent)
    assert result.error_class is ErrorClass.AUTH
    assert "venue-agent pos authorize" in result.reason
    assert requests_to(sim, "/o/op/1/order/toGo") == [401, 401]
    assert requests_to(sim, "/oauth/token") == [200, 200]


async def test_a_revoked_refresh_token_is_a_permanent_auth_failure(sim: Sim, outbox: Outbox) -> None:
    await sim_control(sim, revoke_refresh_tokens=True)
    async with driver_for(sim, outbox) as driver:
        result = await driver.inject(request_for(order_of()))
        readiness = await driver.probe()

    assert isinstance(result, Permanent) and result.error_class is ErrorClass.AUTH
    assert "invalid_grant" in result.reason and "venue-agent pos authorize" in result.reason
    assert readiness.state is ReadinessState.AUTH_REQUIRED
    assert requests_to(sim, "/o/op/1/order/toGo") == []


async def test_rate_limits_and_outages_are_transient(sim: Sim, outbox: Outbox) -> None:
    async with driver_for(sim, outbox) as driver:
        await driver.tokens.access_token()
        await sim.state.apply_faults({"rate_limit_count": 1, "retry_after_seconds": 7})
        limited = await driver.inject(request_for(order_of()))
        await sim.state.apply_faults({"down": True})
        down = await driver.inject(request_for(order_of()))
        await sim.state.apply_faults({"down": False})
        await sim.state.apply_faults({"error_rate": 1.0})
        failing = await driver.inject(request_for(order_of()))

    assert isinstance(limited, Transient) and limited.status == 429 and limited.retry_after == 7
    assert isinstance(down, Transient) and down.status == 503 and not down.in_doubt
    assert isinstance(failing, Transient) and failing.status == 500
    assert sim.state.orders == {}


async def test_network_failures_are_transient_and_a_timeout_is_in_doubt(sim: Sim, outbox: Outbox) -> None:
    async with driver_for(sim, outbox, timeout_seconds=0.3) as driver:
        await driver.tokens.access_token()
        await sim.state.apply_faults({"slow_ms": 800})
        slow = await driver.inject(request_for(order_of()))
        await sim.state.apply_faults({"slow_ms": 0, "hard_down": True})
        refused = await driver.inject(request_for(order_of()))
        await sim.state.apply_faults({"hard_down": False})

    assert isinstance(slow, Transient) and slow.in_doubt
    assert isinstance(refused, Transient) and not refused.in_doubt


async def test_an_order_the_api_cannot_take_is_rejected_before_sending(sim: Sim, outbox: Outbox) -> None:
    order = order_of(fulfillment={"type": "dine_in", "table": "Terrace", "covers": 2})
    async with driver_for(sim, outbox) as driver:
        result = await driver.inject(request_for(order))

    assert isinstance(result, Permanent) and result.error_class is ErrorClass.REJECTED
    assert "table" in result.reason
    assert requests_to(sim, "/o/op/1/order/local") == []


async def test_readiness_reports_ready_and_not_ready_with_its_conditions(sim: Sim, outbox: Outbox) -> None:
    async with driver_for(sim, outbox) as driver:
        ready = await driver.probe()
        await sim_control(sim, not_ready=True)
        not_ready = await driver.probe()
        await sim.state.apply_faults({"down": True})
        down = await driver.probe()

    assert ready.state is ReadinessState.READY
    assert ready.conditions == dict.fromkeys(
        ("enabled", "salesPeriodOpened", "acceptingOnlineOrders", "availableDevices"), True
    )
    assert not_ready.state is ReadinessState.NOT_READY
    assert not_ready.conditions["availableDevices"] is False
    assert "no POS device" in not_ready.detail
    assert down.state is ReadinessState.UNREACHABLE
    readiness_calls = [r for r in sim.state.requests if r.path == "/o/op/1/onlineOrderReadiness"]
    assert len(readiness_calls) == 3


async def test_without_the_readiness_check_a_probe_only_checks_the_token(sim: Sim, outbox: Outbox) -> None:
    async with driver_for(sim, outbox, check_readiness=False) as driver:
        readiness = await driver.probe()
    assert readiness.state is ReadinessState.UNSUPPORTED  # a valid token does not say the till takes orders
    assert requests_to(sim, "/o/op/1/onlineOrderReadiness") == []
    assert requests_to(sim, "/oauth/token") == [200]


async def test_the_success_webhook_reaches_the_agent_with_basic_auth(sim: Sim, outbox: Outbox) -> None:
    async with receiving() as receiver, driver_for(sim, outbox) as driver:
        await sim_control(
            sim,
            webhook_url=receiver.url,
            webhook_username="lsk",
            webhook_password="hook-password",
            confirm_delay_seconds=0.05,
        )
        assert isinstance(await driver.inject(request_for(order_of())), Accepted)
        assert await driver.confirmation(request_for(order_of())) is None
        await eventually(lambda: asyncio.sleep(0, len(receiver.received)), lambda n: n == 1)

    headers, body = receiver.received[0]
    assert headers["authorization"] == "Basic " + base64.b64encode(b"lsk:hook-password").decode()
    assert body["type"] == "ORDER" and body["status"] == "SUCCESS"
    assert body["thirdPartyReference"] == KEY and body["businessLocationId"] == LOCATION
    outcome = classify_webhook(body)
    assert outcome.status == "SUCCESS" and outcome.pos_reference == sim.state.orders[KEY].pos_reference


async def test_a_sold_out_item_is_accepted_then_reported_by_a_failure_webhook(sim: Sim, outbox: Outbox) -> None:
    await sim.state.apply_faults({"sold_out_skus": ["PZ-MARG"]})
    async with receiving() as receiver, driver_for(sim, outbox) as driver:
        await sim_control(sim, webhook_url=receiver.url, confirm_delay_seconds=0.05)
        assert isinstance(await driver.inject(request_for(order_of())), Accepted)
        await eventually(lambda: asyncio.sleep(0, len(receiver.received)), lambda n: n == 1)

    headers, body = receiver.received[0]
    assert "authorization" not in headers
    assert body["status"] == "FAILURE" and body["thirdPartyReference"] == KEY
    outcome = classify_webhook(body, ("PZ-MARG", "MOD-BASIL"))
    assert outcome.error_class is ErrorClass.UNAVAILABLE
    assert outcome.skus == ("PZ-MARG",)


async def test_an_unknown_sku_failure_webhook_is_a_menu_error(sim: Sim, outbox: Outbox) -> None:
    await sim.state.apply_faults({"unknown_skus": ["MOD-BASIL"]})
    async with receiving() as receiver, driver_for(sim, outbox) as driver:
        await sim_control(sim, webhook_url=receiver.url, confirm_delay_seconds=0.05)
        assert isinstance(await driver.inject(request_for(order_of())), Accepted)
        await eventually(lambda: asyncio.sleep(0, len(receiver.received)), lambda n: n == 1)

    outcome = classify_webhook(receiver.received[0][1], ("PZ-MARG", "MOD-BASIL"))
    assert outcome.error_class is ErrorClass.MENU and outcome.skus == ("MOD-BASIL",)


async def test_never_confirm_sends_no_webhook(sim: Sim, outbox: Outbox) -> None:
    await sim.state.apply_faults({"never_confirm": True})
    async with receiving() as receiver, driver_for(sim, outbox) as driver:
        await sim_control(sim, webhook_url=receiver.url, confirm_delay_seconds=0.01)
        assert isinstance(await driver.inject(request_for(order_of())), Accepted)
        await asyncio.sleep(0.2)
    assert receiver.received == []


async def test_the_simulator_validates_bodies_like_the_real_api(sim: Sim, outbox: Outbox) -> None:
    async with driver_for(sim, outbox) as driver:
        token = await driver.tokens.access_token()
    bad = {"businessLocationId": LOCATION, "thirdPartyReference": "x" * 49, "items": [{"quantity": 1}]}
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.post(
            f"http://127.0.0.1:{sim.port}/o/op/1/order/toGo", json=bad, headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 400
    fields = {e["field"] for e in response.json()["errors"]}
    assert fields == {"thirdPartyReference", "endpointId", "customerInfo", "items[0].sku"}


async def test_the_simulator_refuses_every_field_over_its_limit_with_400_like_the_api(sim: Sim, outbox: Outbox) -> None:
    """Lengths in UTF-16 units, as the Java API counts: the demo and the tests catch what the real API would."""
    async with driver_for(sim, outbox) as driver:
        token = await driver.tokens.access_token()
    long = {
        "businessLocationId": LOCATION,
        "thirdPartyReference": "ref-1",
        "endpointId": "venue-agent-hook",
        "collectionCode": "ABCDEFGHI",
        "customerInfo": {"firstName": "🍕" * 65, "lastName": "L" * 129},
        "orderNote": "n" * 1001,
        "deliveryAddress": {"addressLine1": "a" * 256},
        "items": [{"sku": "PZ-MARG", "quantity": 1, "subItems": [{"sku": "M" * 26, "quantity": 1}]}],
    }
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.post(
            f"http://127.0.0.1:{sim.port}/o/op/1/order/toGo", json=long, headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 400
    errors = {e["field"]: (e["code"], e["defaultMessage"], e["rejectedValue"]) for e in response.json()["errors"]}
    assert errors == {
        "collectionCode": ("Size", "size must be between 0 and 8", "ABCDEFGHI"),
        "customerInfo.firstName": ("Size", "size must be between 1 and 128", "🍕" * 65),
        "customerInfo.lastName": ("Size", "size must be between 0 and 128", "L" * 129),
        "orderNote": ("Size", "size must be between 0 and 1000", "n" * 1001),
        "deliveryAddress.addressLine1": ("Size", "size must be between 0 and 255", "a" * 256),
        "items[0].subItems[0].sku": ("Size", "size must be between 0 and 25", "M" * 26),
    }
    assert sim.state.orders == {}
    # The driver reads such an answer as a menu problem naming the SKU.
    result = classify_answer(400, response.json())
    assert isinstance(result, Permanent) and result.error_class is ErrorClass.MENU and result.skus == ("M" * 26,)


async def test_an_order_with_every_field_at_its_limit_goes_through_the_strict_simulator(
    sim: Sim, outbox: Outbox
) -> None:
    """Long names, address and notes: the mapping cuts them to fit, so the simulator takes the order."""
    order = order_of(
        customer={"name": "🍕" * 200 + " " + "Ä" * 299, "email": "sam@example.com"},
        fulfillment={
            "type": "delivery",
            "address": {"line1": "1 " + "Quay " * 99, "city": "B" * 500, "postcode": "BS1 4DJ"},
            "instructions": "ring " * 100,
        },
        notes="x" * 500,
    )
    async with driver_for(sim, outbox) as driver:
        result = await driver.inject(request_for(order))
    assert isinstance(result, Accepted), result
    body = sim.state.orders[KEY].order
    assert body["customerInfo"]["firstName"].endswith("...")
    assert body["deliveryAddress"]["city"].endswith("...")
    assert limit_violations(body) == []


def test_the_factory_names_missing_keys_and_builds_without_a_store(tmp_path: Path) -> None:
    with pytest.raises(PosConfigError, match=r"pos\.lightspeed_k\.endpoint_id"):
        check_settings(LightspeedKSettings(business_location_id=1, client_id="c", client_secret="s", refresh_token="r"))
    with pytest.raises(PosConfigError, match=r"pos\.lightspeed_k\.business_location_id"):
        check_settings(None)
    settings = settings_from_dict(
        {
            "venue": {"id": "harbour-kitchen", "timezone": "Europe/London"},
            "storage": {"path": str(tmp_path / "outbox.db")},
            "pos": {
                "driver": "lightspeed_k",
                "lightspeed_k": {
                    "business_location_id": LOCATION,
                    "client_id": "c",
                    "client_secret": "s",
                    "refresh_token": "r",
                    "endpoint_id": "e",
                },
            },
        }
    )
    driver = build_driver(settings)
    assert (driver.name, driver.two_phase) == ("lightspeed_k", True)


async def test_without_a_store_an_order_fails_as_auth_without_spending_the_seed(sim: Sim) -> None:
    async with driver_for(sim, None) as driver:
        result = await driver.inject(request_for(order_of()))
    assert isinstance(result, Permanent) and result.error_class is ErrorClass.AUTH
    assert "no durable store" in result.reason
    assert requests_to(sim, "/oauth/token") == []


async def test_authorize_stores_a_new_refresh_token(sim: Sim, outbox: Outbox) -> None:
    await sim_control(sim, revoke_refresh_tokens=True)
    async with driver_for(sim, outbox) as driver:
        assert isinstance(await driver.inject(request_for(order_of())), Permanent)
        await sim_control(sim, accept_unknown_refresh_tokens=True)
        await driver.authorize("fresh-token-from-authorisation")
        assert isinstance(await driver.inject(request_for(order_of())), Accepted)
    assert await outbox.kv_get(f"pos.lightspeed_k.{LOCATION}.refresh_token") not in (
        None,
        "fresh-token-from-authorisation",
    )


async def test_wrong_client_credentials_are_an_auth_failure_naming_them(sim: Sim, outbox: Outbox) -> None:
    """invalid_client from the token endpoint: inject and probe both say the client_id/client_secret are wrong."""
    await sim_control(sim, client_id="venue-agent", client_secret="the-real-secret")
    async with driver_for(sim, outbox) as driver:
        result = await driver.inject(request_for(order_of()))
        readiness = await driver.probe()

    assert isinstance(result, Permanent) and result.error_class is ErrorClass.AUTH
    assert "invalid_client" in result.reason and "client_id / client_secret" in result.reason
    assert "venue-agent pos authorize" not in result.reason  # a new refresh token would not help
    assert readiness.state is ReadinessState.AUTH_REQUIRED and readiness.detail == result.reason
    assert requests_to(sim, "/oauth/token") == [401]  # remembered: the probe did not ask again
    assert requests_to(sim, "/o/op/1/order/toGo") == []


async def test_lightspeed_keeps_trying_the_till_exactly_as_long_as_the_agent_waits(sim: Sim, outbox: Outbox) -> None:
    """maxTimeToAttemptOrderDeliverToPos = confirm_timeout_seconds, and never under Lightspeed's 60000 ms minimum."""
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        for timeout, expected in ((120, 120_000), (60, 60_000), (5, 60_000)):
            driver = LightspeedKDriver(
                ls_settings(sim),
                tz=LONDON,
                timeout_seconds=5,
                store=outbox,
                client=client,
                confirm_timeout_seconds=timeout,
            )
            key = f"k:{timeout}"
            assert isinstance(await driver.inject(request_for(order_of(), key)), Accepted)
            assert sim.state.orders[key].order["maxTimeToAttemptOrderDeliverToPos"] == expected
