"""Shared fixtures: realistic orders, a real POS simulator on loopback, and a real agent in-process."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import structlog

from agent.domain.clock import FakeClock
from agent.domain.config import Settings, settings_from_dict
from agent.outbox.store import Outbox
from agent.service.service import Agent
from drivers.pos.sim_state import SimulatorState
from drivers.pos.simulator import serve_simulator

if TYPE_CHECKING:
    from tests.test_crash_recovery import Processes

BASE_ORDER: dict[str, Any] = {
    "schema_version": 1,
    "id": "ord_01HXTEST",
    "venue_id": "harbour-kitchen",
    "source": "web",
    "display_code": "K7Q2M9XA",
    "created_at": "2026-11-23T12:00:05+00:00",
    "requested_at": None,
    "fulfillment": {"type": "pickup", "instructions": "Ring the side door"},
    "customer": {"name": "Sam Reed", "phone": "+447700900123", "email": "sam@example.com"},
    "items": [
        {
            "name": "Margherita",
            "sku": "PZ-MARG",
            "quantity": 2,
            "unit_price": 950,
            "category": "Pizza",
            "course": 1,
            "notes": "well done",
            "allergens": ["gluten", "milk"],
            "modifiers": [
                {"name": "Extra basil", "sku": "MOD-BASIL", "quantity": 1, "unit_price": 50, "modifiers": []}
            ],
        },
    ],
    "charges": {"delivery_fee": 0, "service_charge": 0, "tip": 100},
    "discounts": [{"kind": "discount", "code": "SUMMER10", "pos_id": None, "description": "10% off", "amount": 190}],
    "payment": {"status": "paid", "method": "card", "amount": 1910, "currency": "GBP"},
    "total": 1910,
    "notes": "No cutlery",
}


def make_order(order_id: str = "ord_01HXTEST", **changes: Any) -> dict[str, Any]:
    """Return a valid order payload (the sample order, totals adding up) with top-level ``changes``."""
    order = copy.deepcopy(BASE_ORDER)
    order["id"] = order_id
    order.update(changes)
    return order


@pytest.fixture(name="order")
def _order() -> Callable[..., dict[str, Any]]:
    """Return the order factory."""
    return make_order


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """Every test starts from structlog's defaults and ends with the root logger as it found it.

    A test that runs the CLI in-process (``main([...])``) points the root logger's handler at the stderr pytest
    captured for that test, closed when the test ends; left there, a later record (aiosqlite's worker thread logs
    at debug whenever a test sets that level) hits the closed file: "--- Logging error --- ValueError: I/O
    operation on closed file".
    """
    structlog.reset_defaults()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
        handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


@dataclass
class Sim:
    """A POS simulator served on a loopback port in the test's event loop."""

    state: SimulatorState
    port: int

    @property
    def url(self) -> str:
        """Return the http-contract order URL."""
        return f"http://127.0.0.1:{self.port}/orders"

    def accepted_keys(self) -> list[str]:
        """Return the idempotency keys of the orders the POS holds."""
        return list(self.state.orders)


@asynccontextmanager
async def run_simulator(state: SimulatorState | None = None) -> AsyncIterator[Sim]:
    """Serve a simulator on a free port until the block ends."""
    state = state or SimulatorState()
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve_simulator("127.0.0.1", 0, state=state, ready=ready, shutdown=stop))
    await asyncio.wait_for(ready.wait(), 5)
    assert state.port is not None
    try:
        yield Sim(state, state.port)
    finally:
        stop.set()
        await task


@pytest.fixture(name="sim")
async def _sim() -> AsyncIterator[Sim]:
    """Return a running POS simulator."""
    async with run_simulator() as sim:
        yield sim


@pytest.fixture(name="outbox")
async def _outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    """An open outbox on a fresh file with a fake clock (``outbox.clock``); test modules may override it."""
    outbox = Outbox(tmp_path / "outbox.db", clock=FakeClock(), min_free_mb=0)
    await outbox.open()
    yield outbox
    await outbox.close()


def agent_settings(tmp_path: Path, sim_url: str, **sections: dict[str, Any]) -> Settings:
    """Return settings for an agent on a free loopback port talking to ``sim_url``; sections override."""
    raw: dict[str, Any] = {
        "venue": {"id": "harbour-kitchen", "timezone": "Europe/London"},
        "storage": {"path": str(tmp_path / "outbox.db"), "min_free_mb": 0},
        "intake": {"listen": "127.0.0.1:0"},
        "injection": {"backoff_base_seconds": 2, "backoff_max_seconds": 60},
        "pos": {"driver": "http", "http": {"url": sim_url}, "rate_limit_per_second": 50, "timeout_seconds": 2},
        "printers": [{"name": "pass", "connection": "file", "path": str(tmp_path / "tickets.txt")}],
        # Many agents with one venue id run side by side in the suite; their mDNS names would clash.
        "discovery": {"advertise": False},
    }
    for name, values in sections.items():
        raw.setdefault(name, {})
        raw[name] = {**raw[name], **values} if isinstance(values, dict) else values
    return settings_from_dict(raw)


@dataclass
class RunningAgent:
    """An agent running in-process on a real socket, with its fake clock and an HTTP client."""

    agent: Agent
    clock: FakeClock
    client: httpx.AsyncClient

    async def state_of(self, order_id: str) -> str:
        """Return the order's state as the API reports it."""
        return str((await self.client.get(f"/v1/orders/{order_id}")).json()["state"])

    async def wait_state(self, order_id: str, *states: str, timeout: float = 5.0) -> str:
        """Wait (real time, for async work to finish) until the order is in one of ``states``."""
        return await eventually(lambda: self.state_of(order_id), lambda s: s in states, timeout=timeout)

    async def advance(self, seconds: float) -> None:
        """Move the agent's clock forward and let its loops react."""
        self.clock.advance(seconds)
        for _ in range(5):
            await asyncio.sleep(0.01)


async def eventually(
    probe: Callable[[], Awaitable[Any]], accept: Callable[[Any], bool], *, timeout: float = 5.0
) -> Any:
    """Poll ``probe`` until ``accept`` holds (waiting for async work, not for time to pass); fail on timeout."""
    deadline = asyncio.get_running_loop().time() + timeout
    value = await probe()
    while not accept(value):
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"condition not met within {timeout} s; last value: {value!r}")
        await asyncio.sleep(0.02)
        value = await probe()
    return value


@asynccontextmanager
async def run_agent(settings: Settings, *, clock: FakeClock | None = None) -> AsyncIterator[RunningAgent]:
    """Start an agent in-process on a real loopback socket; stop it at the end of the block."""
    clock = clock or FakeClock()
    agent = Agent(settings, clock=clock)
    await agent.start()
    token = settings.intake.token.get_secret_value() if settings.intake.token else None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{agent.port}", headers=headers, trust_env=False, timeout=10
    ) as client:
        try:
            yield RunningAgent(agent, clock, client)
        finally:
            await agent.stop()


@pytest.fixture(name="procs")
def _procs(tmp_path: Path) -> Iterator[Processes]:
    """Return the registry of real child processes; every process in it is killed at teardown."""
    from tests.test_crash_recovery import Processes

    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.close()
