"""The ``http`` driver against the real POS simulator, served on a loopback port in the test's event loop."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from agent.domain.models import Order
from agent.domain.states import ErrorClass
from drivers.pos.base import (
    ALREADY_PRINTED_NOTE,
    Accepted,
    Injected,
    InjectRequest,
    Permanent,
    ReadinessState,
    Transient,
)
from drivers.pos.errors import PosConfigError
from drivers.pos.http import HttpDriver
from drivers.pos.http_mapping import verify_signature
from drivers.pos.mdns import SERVICE_TYPE, MdnsResolver
from drivers.pos.sim_state import Faults, SimulatorState
from drivers.pos.simulator import serve_simulator

SECRET = b"hmac-secret-for-tests"
TOKEN = "bearer-token-for-tests"


class FakeMonotonic:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Sim:
    """A running simulator: its state and base URL."""

    state: SimulatorState
    base: str

    @property
    def orders_url(self) -> str:
        """Return the URL of the order endpoint."""
        return f"{self.base}/orders"


@asynccontextmanager
async def running(state: SimulatorState) -> AsyncIterator[Sim]:
    """Serve ``state`` on a free loopback port for the duration of the block."""
    ready, shutdown = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve_simulator("127.0.0.1", 0, state=state, ready=ready, shutdown=shutdown))
    await asyncio.wait_for(ready.wait(), 5)
    try:
        yield Sim(state, f"http://127.0.0.1:{state.port}")
    finally:
        shutdown.set()
        await asyncio.wait_for(task, 5)


@asynccontextmanager
async def driver_for(url: str, **kwargs: Any) -> AsyncIterator[HttpDriver]:
    """Build an ``HttpDriver`` and close it after the block."""
    kwargs.setdefault("timeout_seconds", 2.0)
    driver = HttpDriver(url=url, **kwargs)
    try:
        yield driver
    finally:
        await driver.aclose()


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    """A simulator with a hand-moved monotonic clock."""
    async with running(SimulatorState(monotonic=FakeMonotonic())) as running_sim:
        yield running_sim


@pytest.fixture
async def driver(sim: Sim) -> AsyncIterator[HttpDriver]:
    """A driver pointed at the simulator's order endpoint."""
    async with driver_for(sim.orders_url) as http_driver:
        yield http_driver


def make_order(order_id: str = "ord_1", sku: str = "PZ-MARG", notes: str | None = None) -> Order:
    """Return a small valid order with one line of ``sku``."""
    return Order.model_validate(
        {
            "schema_version": 1,
            "id": order_id,
            "source": "web",
            "created_at": "2026-11-23T12:00:05+00:00",
            "fulfillment": {"type": "pickup"},
            "customer": {"name": "Sam Reed", "phone": "+447700900123"},
            "items": [{"name": "Margherita", "sku": sku, "quantity": 2, "unit_price": 950}],
            "payment": {"status": "paid", "amount": 1900, "currency": "GBP"},
            "total": 1900,
            "notes": notes,
        }
    )


def request_for(order_id: str = "ord_1", sku: str = "PZ-MARG", **kwargs: Any) -> InjectRequest:
    """Return an inject request keyed ``venue:<order id>``."""
    return InjectRequest(make_order(order_id, sku), f"venue:{order_id}", **kwargs)


def free_port() -> int:
    """Return a loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_for(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    """Poll ``condition`` until it holds or fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_order_is_injected_and_recorded(sim: Sim, driver: HttpDriver) -> None:
    """A healthy POS takes the order: injected with its reference, the exact order JSON recorded once."""
    request = request_for()
    result = await driver.inject(request)
    assert result == Injected(pos_reference="SIM-000001")
    record = sim.state.orders[request.idempotency_key]
    assert record.order == request.order.model_dump(mode="json")
    assert sim.state.attempts[request.idempotency_key] == 1


async def test_resent_key_is_a_duplicate_and_recorded_once(sim: Sim, driver: HttpDriver) -> None:
    """Sending the same key again is injected as a duplicate with the original reference; one order exists."""
    first = await driver.inject(request_for())
    second = await driver.inject(request_for())
    assert first == Injected(pos_reference="SIM-000001")
    assert second == Injected(pos_reference="SIM-000001", duplicate=True)
    assert len(sim.state.orders) == 1
    assert sim.state.attempts["venue:ord_1"] == 2


async def test_already_printed_marker_reaches_the_pos(sim: Sim, driver: HttpDriver) -> None:
    """An order injected after its fallback ticket arrives with the marker at the start of its notes."""
    await driver.inject(request_for(already_printed=True))
    assert sim.state.orders["venue:ord_1"].order["notes"] == ALREADY_PRINTED_NOTE


async def test_sold_out_is_unavailable(sim: Sim, driver: HttpDriver) -> None:
    """A sold-out SKU is a permanent UNAVAILABLE failure naming the SKU, and no order is recorded."""
    sim.state.faults.sold_out_skus = ["PZ-MARG"]
    result = await driver.inject(request_for())
    assert isinstance(result, Permanent)
    assert (result.error_class, result.status, result.skus) == (ErrorClass.UNAVAILABLE, 423, ("PZ-MARG",))
    assert sim.state.orders == {}


async def test_unknown_sku_is_menu(sim: Sim, driver: HttpDriver) -> None:
    """An SKU the POS does not know is a permanent MENU failure naming the SKU."""
    sim.state.faults.unknown_skus = ["PZ-NEW"]
    result = await driver.inject(request_for(sku="PZ-NEW"))
    assert isinstance(result, Permanent)
    assert (result.error_class, result.status, result.skus) == (ErrorClass.MENU, 422, ("PZ-NEW",))


async def test_server_error_is_transient(sim: Sim, driver: HttpDriver) -> None:
    """A 500 is transient, not in doubt, and the next attempt with the same key goes in."""
    sim.state.faults.error_rate = 1.0
    result = await driver.inject(request_for())
    assert isinstance(result, Transient)
    assert (result.status, result.in_doubt) == (500, False)
    sim.state.faults.error_rate = 0.0
    assert await driver.inject(request_for()) == Injected(pos_reference="SIM-000001")


async def test_down_is_transient_with_retry_after(sim: Sim, driver: HttpDriver) -> None:
    """A POS that is down (503) is transient and its Retry-After is passed on."""
    sim.state.faults.down = True
    sim.state.faults.retry_after_seconds = 4
    result = await driver.inject(request_for())
    assert isinstance(result, Transient)
    assert (result.status, result.retry_after) == (503, 4.0)


async def test_rate_limit_is_transient_with_retry_after(sim: Sim, driver: HttpDriver) -> None:
    """A 429 is transient with the POS's Retry-After; once the limit lifts the order goes in."""
    await sim.state.apply_faults({"rate_limit_count": 1, "retry_after_seconds": 7})
    result = await driver.inject(request_for())
    assert isinstance(result, Transient)
    assert (result.status, result.retry_after) == (429, 7.0)
    assert await driver.inject(request_for()) == Injected(pos_reference="SIM-000001")
    assert [r.status for r in sim.state.requests] == [429, 201]


async def test_expired_auth_is_auth(sim: Sim, driver: HttpDriver) -> None:
    """A 401 from the POS is a permanent AUTH failure."""
    sim.state.faults.auth_expired = True
    result = await driver.inject(request_for())
    assert isinstance(result, Permanent)
    assert (result.error_class, result.status) == (ErrorClass.AUTH, 401)


async def test_html_error_page_is_transient_and_readable(sim: Sim, driver: HttpDriver) -> None:
    """A 5xx HTML page (a broken proxy) is transient with a short readable reason."""
    await sim.state.apply_faults({"down": True, "html_errors": True})
    result = await driver.inject(request_for())
    assert isinstance(result, Transient)
    assert "POS answered 503 with a non-JSON body (text/html): 503 Service Unavailable" in result.reason


async def test_timeout_is_in_doubt_and_resend_is_a_duplicate(sim: Sim) -> None:
    """A POS too slow to answer is transient in doubt; it did take the order, so the resend is a duplicate."""
    sim.state.faults.slow_ms = 400
    async with driver_for(sim.orders_url, timeout_seconds=0.1) as driver:
        result = await driver.inject(request_for())
        assert isinstance(result, Transient)
        assert result.in_doubt
        assert "did not answer in time" in result.reason
        await wait_for(lambda: "venue:ord_1" in sim.state.orders)
        sim.state.faults.slow_ms = 0
        assert await driver.inject(request_for()) == Injected(pos_reference="SIM-000001", duplicate=True)
    assert len(sim.state.orders) == 1


async def test_connection_refused_is_transient_not_in_doubt() -> None:
    """Nothing listening on the port is transient and certainly not sent."""
    async with driver_for(f"http://127.0.0.1:{free_port()}/orders") as driver:
        result = await driver.inject(request_for())
    assert isinstance(result, Transient)
    assert not result.in_doubt
    assert result.reason.startswith("POS not reachable: ConnectError")


async def test_hard_down_refuses_connections_then_recovers(sim: Sim, driver: HttpDriver) -> None:
    """With hard_down the listener closes (pooled connections too): connect errors, then it comes back."""
    assert isinstance(await driver.inject(request_for("ord_1")), Injected)
    await sim.state.apply_faults({"hard_down": True})
    result = await driver.inject(request_for("ord_2"))
    assert isinstance(result, Transient)
    assert not result.in_doubt
    assert (await driver.probe()).state is ReadinessState.UNREACHABLE
    await sim.state.apply_faults({"hard_down": False})
    assert await driver.inject(request_for("ord_2")) == Injected(pos_reference="SIM-000002")


async def test_hard_down_set_over_http_comes_back_by_itself(sim: Sim, driver: HttpDriver) -> None:
    """hard_down with hard_down_ms via the control API refuses connections, then listens again on its own."""
    async with httpx.AsyncClient(base_url=sim.base) as client:
        answer = await client.post("/_sim/faults", json={"hard_down": True, "hard_down_ms": 200})
    assert answer.json()["hard_down"] is True
    assert (await driver.probe()).state is ReadinessState.UNREACHABLE
    await wait_for(lambda: not sim.state.faults.hard_down)
    assert (await driver.probe()).state is ReadinessState.READY


async def test_hmac_simulator_rejects_unsigned_and_accepts_signed() -> None:
    """A simulator with a secret answers 401 to unsigned or wrongly signed orders and takes signed ones."""
    async with running(SimulatorState(hmac_secret=SECRET)) as sim:
        async with driver_for(sim.orders_url) as unsigned:
            result = await unsigned.inject(request_for())
        async with driver_for(sim.orders_url, hmac_secret=b"wrong") as wrong:
            wrong_result = await wrong.inject(request_for())
        async with driver_for(sim.orders_url, hmac_secret=SECRET) as signed:
            signed_result = await signed.inject(request_for())
    for refused in (result, wrong_result):
        assert isinstance(refused, Permanent)
        assert (refused.error_class, refused.status) == (ErrorClass.AUTH, 401)
    assert signed_result == Injected(pos_reference="SIM-000001")


async def test_headers_carry_key_signature_and_token() -> None:
    """Each request carries the idempotency key, a valid signature and the bearer token."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"pos_reference": "P-1"})

    transport = httpx.MockTransport(handler)
    async with driver_for(
        "http://pos.test/orders", hmac_secret=SECRET, token=TOKEN, clock_unix=lambda: 1_795_000_000, transport=transport
    ) as driver:
        assert await driver.inject(request_for()) == Injected(pos_reference="P-1")
    (sent,) = seen
    assert sent.headers["Idempotency-Key"] == "venue:ord_1"
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["Content-Type"] == "application/json"
    assert verify_signature(sent.headers["X-Venue-Agent-Signature"], sent.content, SECRET, 1_795_000_000)


async def test_logs_never_contain_secrets_or_order_details(sim: Sim) -> None:
    """Log events name the key and outcome, never the token, the HMAC secret or the customer's details."""
    sim.state.faults.auth_expired = True
    with structlog.testing.capture_logs() as logs:
        async with driver_for(sim.orders_url, hmac_secret=SECRET, token=TOKEN) as driver:
            await driver.inject(request_for())
            await driver.probe()
    text = json.dumps(logs, default=str)
    assert "pos_request_failed" in text
    for secret in (TOKEN, SECRET.decode(), "Sam Reed", "+447700900123"):
        assert secret not in text


async def test_probe_ready_and_not_ready(sim: Sim, driver: HttpDriver) -> None:
    """The probe reports ready with its conditions and latency, and not ready when the POS says so."""
    ready = await driver.probe()
    assert ready.state is ReadinessState.READY
    assert ready.latency_ms is not None
    assert ready.conditions == {"pos_online": True, "app_open": True, "logged_in": True, "menu_loaded": True}
    sim.state.faults.not_ready = True
    not_ready = await driver.probe()
    assert not_ready.state is ReadinessState.NOT_READY
    assert not_ready.conditions["app_open"] is False
    assert "app_open" in not_ready.detail


async def test_probe_down_auth_and_unreachable(sim: Sim, driver: HttpDriver) -> None:
    """The probe reports 503 as unreachable, 401 as auth required, and a closed port as unreachable."""
    sim.state.faults.down = True
    assert (await driver.probe()).state is ReadinessState.UNREACHABLE
    sim.state.faults.down = False
    sim.state.faults.auth_expired = True
    assert (await driver.probe()).state is ReadinessState.AUTH_REQUIRED
    async with driver_for(f"http://127.0.0.1:{free_port()}/orders") as closed:
        unreachable = await closed.probe()
    assert unreachable.state is ReadinessState.UNREACHABLE
    assert "not reachable" in unreachable.detail


async def test_probe_without_readiness_endpoint_is_ready() -> None:
    """A POS with no /ready (404) counts as ready, with the latency still measured."""
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return httpx.Response(404, text="Not Found")

    async with driver_for("http://pos.test/api/orders", transport=httpx.MockTransport(handler)) as driver:
        readiness = await driver.probe()
    assert paths == ["/ready"]
    assert (readiness.state, readiness.detail) == (ReadinessState.UNSUPPORTED, "no readiness endpoint")
    assert readiness.latency_ms is not None


async def test_two_phase_accepted_then_confirmed(sim: Sim, driver: HttpDriver) -> None:
    """A two-phase POS accepts (202 pending); confirmation is None until the confirm time, then injected."""
    clock = sim.state.monotonic
    assert isinstance(clock, FakeMonotonic)
    await sim.state.apply_faults({"two_phase": True, "confirm_after_ms": 5000})
    request = request_for()
    assert await driver.inject(request) == Accepted(pos_reference="SIM-000001")
    assert await driver.confirmation(request) is None
    clock.now += 4.9
    assert await driver.confirmation(request) is None
    clock.now += 0.2
    assert await driver.confirmation(request) == Injected(pos_reference="SIM-000001")


async def test_two_phase_never_confirm_and_late_failure(sim: Sim, driver: HttpDriver) -> None:
    """With never_confirm the order stays pending; a sold-out order fails at confirmation as UNAVAILABLE."""
    clock = sim.state.monotonic
    assert isinstance(clock, FakeMonotonic)
    await sim.state.apply_faults({"two_phase": True, "never_confirm": True})
    pending = request_for("ord_1")
    assert isinstance(await driver.inject(pending), Accepted)
    await sim.state.apply_faults({"never_confirm": False, "sold_out_skus": ["PZ-MARG"], "confirm_after_ms": 10})
    failing = request_for("ord_2")
    assert isinstance(await driver.inject(failing), Accepted)
    clock.now += 3600
    assert await driver.confirmation(pending) is None
    failed = await driver.confirmation(failing)
    assert isinstance(failed, Permanent)
    assert (failed.error_class, failed.skus) == (ErrorClass.UNAVAILABLE, ("PZ-MARG",))
    assert await driver.confirmation(request_for("ord_never_sent")) is None


async def test_confirmation_never_raises_when_unreachable() -> None:
    """Confirmation against a dead POS is None, not an exception."""
    async with driver_for(f"http://127.0.0.1:{free_port()}/orders") as driver:
        assert await driver.confirmation(request_for()) is None


async def test_control_api_faults_orders_requests_reset(sim: Sim, driver: HttpDriver) -> None:
    """The control API sets switches (naming unknown ones), lists orders and requests, and resets."""
    async with httpx.AsyncClient(base_url=sim.base) as client:
        bad = await client.post("/_sim/faults", json={"sold_out": ["X"]})
        assert bad.status_code == 400
        assert "'sold_out'" in bad.json()["detail"]
        wrong_type = await client.post("/_sim/faults", json={"slow_ms": "fast"})
        assert wrong_type.status_code == 400
        set_answer = await client.post("/_sim/faults", json={"unknown_skus": ["PZ-NEW"]})
        assert set_answer.json()["unknown_skus"] == ["PZ-NEW"]
        assert (await client.get("/_sim/faults")).json() == {**Faults().__dict__, "unknown_skus": ["PZ-NEW"]}
        await driver.inject(request_for("ord_1"))
        await driver.inject(request_for("ord_1"))
        await driver.inject(request_for("ord_2", sku="PZ-NEW"))
        orders = (await client.get("/_sim/orders")).json()
        assert [(o["key"], o["pos_reference"], o["requests"], o["status"]) for o in orders] == [
            ("venue:ord_1", "SIM-000001", 2, "injected")
        ]
        requests = (await client.get("/_sim/requests")).json()
        assert [(r["idempotency_key"], r["status"]) for r in requests] == [
            ("venue:ord_1", 201),
            ("venue:ord_1", 409),
            ("venue:ord_2", 422),
        ]
        missing_key = await client.post("/orders", json={"id": "x"})
        assert missing_key.status_code == 400
        assert (await client.post("/_sim/reset")).status_code == 200
        assert (await client.get("/_sim/orders")).json() == []
        assert (await client.get("/_sim/faults")).json() == Faults().__dict__


def unique_name() -> str:
    """Return a service instance name no other test run announces."""
    return f"till-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def announcer() -> AsyncIterator[AsyncZeroconf]:
    """A zeroconf responder on loopback, standing in for a POS terminal announcing itself."""
    zeroconf = AsyncZeroconf(interfaces=["127.0.0.1"])
    try:
        yield zeroconf
    finally:
        await zeroconf.async_unregister_all_services()
        await zeroconf.async_close()


async def announce(announcer: AsyncZeroconf, name: str, port: int, path: str = "/v1/orders") -> AsyncServiceInfo:
    """Announce ``name`` as a ``_venue-pos._tcp`` service on 127.0.0.1:``port`` with a TXT path."""
    info = AsyncServiceInfo(
        SERVICE_TYPE,
        f"{name}.{SERVICE_TYPE}",
        addresses=[socket.inet_aton("127.0.0.1")],
        port=port,
        properties={"path": path},
        server=f"{name}-host.local.",
    )
    # Cooperating responders skip the uniqueness probe (about a second) that a test does not need.
    await announcer.async_register_service(info, cooperating_responders=True)
    return info


@pytest.fixture
async def resolver() -> AsyncIterator[MdnsResolver]:
    """An mDNS resolver on loopback."""
    mdns = MdnsResolver(interfaces=["127.0.0.1"], timeout_seconds=3)
    try:
        yield mdns
    finally:
        await mdns.aclose()


async def test_mdns_name_resolves_to_the_simulator(sim: Sim, announcer: AsyncZeroconf, resolver: MdnsResolver) -> None:
    """``mdns:<name>`` finds the POS announced on the LAN and uses the path from its TXT record."""
    assert sim.state.port is not None
    name = unique_name()
    await announce(announcer, name, sim.state.port)
    async with driver_for(f"mdns:{name}", resolver=resolver) as driver:
        assert await driver.inject(request_for()) == Injected(pos_reference="SIM-000001")
        assert (await driver.probe()).state is ReadinessState.READY
    assert [r.path for r in sim.state.requests] == ["/v1/orders", "/ready"]


async def test_mdns_unknown_name_is_transient() -> None:
    """A name nobody announces is a transient failure saying the POS is not on the network."""
    quick = MdnsResolver(interfaces=["127.0.0.1"], timeout_seconds=0.3)
    name = unique_name()
    async with driver_for(f"mdns:{name}", resolver=quick) as driver:
        result = await driver.inject(request_for())
        readiness = await driver.probe()
    await quick.aclose()
    assert isinstance(result, Transient)
    assert result.reason == f"POS {name!r} not found on the network (mDNS)"
    assert readiness.state is ReadinessState.UNREACHABLE


async def test_mdns_re_resolves_after_connect_error(sim: Sim, announcer: AsyncZeroconf, resolver: MdnsResolver) -> None:
    """When the POS moves to another port, a connect error makes the driver look it up again and find it there."""
    assert sim.state.port is not None
    name = unique_name()
    info = await announce(announcer, name, sim.state.port)
    async with running(SimulatorState()) as moved, driver_for(f"mdns:{name}", resolver=resolver) as driver:
        assert moved.state.port is not None
        assert await driver.inject(request_for("ord_1")) == Injected(pos_reference="SIM-000001")
        await sim.state.apply_faults({"hard_down": True})
        await announcer.async_unregister_service(info)
        await announce(announcer, name, moved.state.port)
        failed = await driver.inject(request_for("ord_2"))
        assert isinstance(failed, Transient)
        assert not failed.in_doubt
        # A withdrawn mDNS record lingers in the cache for a second (RFC 6762 section 10.1), so a retry within that
        # second may reach the old address once more; each failure must still say nothing was sent.
        for _ in range(20):
            result = await driver.inject(request_for("ord_2"))
            if not isinstance(result, Transient):
                break
            assert not result.in_doubt
            await asyncio.sleep(0.1)
        assert result == Injected(pos_reference="SIM-000001")
        assert list(moved.state.orders) == ["venue:ord_2"]


def test_unusable_url_is_a_config_error() -> None:
    """A URL that is neither http(s) nor ``mdns:<name>`` is refused when the driver is built."""
    for url in ("ftp://pos.local/orders", "pos.local:8080", "mdns:"):
        with pytest.raises(PosConfigError):
            HttpDriver(url=url, timeout_seconds=1)


async def test_pos_sim_command_serves_and_stops_cleanly_on_sigterm() -> None:
    """``pos-sim`` prints where it listens, takes orders there, and exits 0 on SIGTERM."""
    script = (
        "import argparse, sys\n"
        "from drivers.pos import simulator_cli\n"
        "parser = argparse.ArgumentParser()\n"
        "simulator_cli.add_arguments(parser)\n"
        "sys.exit(simulator_cli.run(parser.parse_args(sys.argv[1:])))\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        "--port",
        "0",
        "--two-phase",
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 10)).decode()
        match = re.fullmatch(
            r"POS simulator listening on (http://127\.0\.0\.1:\d+) \(http contract: POST /orders\)\n", line
        )
        assert match, line
        async with driver_for(f"{match.group(1)}/orders") as driver:
            assert await driver.inject(request_for()) == Accepted(pos_reference="SIM-000001")
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
