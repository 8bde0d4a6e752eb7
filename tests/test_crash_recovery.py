"""Crash recovery with real processes: ``venue-agent run`` killed with SIGKILL (and stopped with SIGTERM).

The agent and the POS simulator run as separate processes on loopback, exactly as in the field; the test
posts orders over HTTP, kills the agent at random (seeded) moments, restarts it on the same outbox, and
checks that an acknowledged order is never lost and reaches the POS exactly once under its one key.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.domain.models import parse_order
from tests.conftest import make_order

pytestmark = pytest.mark.slow

VENUE = "harbour-kitchen"
BIN = Path(sys.executable).with_name("venue-agent")
PENDING_STATES = ("queued", "sending", "retrying", "awaiting_pos", "held", "scheduled")


# ---- processes -------------------------------------------------------------------------------


def free_port() -> int:
    """Return a TCP port that is free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _child_env() -> dict[str, str]:
    """Return this environment without anything that would reconfigure the agent behind the test's back."""
    dropped = ("INVOCATION_ID", "JOURNAL_STREAM", "NOTIFY_SOCKET", "WATCHDOG_USEC", "CREDENTIALS_DIRECTORY")
    return {k: v for k, v in os.environ.items() if not k.startswith("VENUE_AGENT_") and k not in dropped}


class Processes:
    """Every child process a test starts; all of them are killed when the test ends, pass or fail."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []

    def spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], Path]:
        """Start ``venue-agent <args>`` with its output in a log file of its own (``env`` added to a clean one)."""
        log_path = self.logs / f"{name}-{len(self.started):02d}.log"
        with log_path.open("wb") as log_file:
            popen = subprocess.Popen(
                [str(BIN), *args],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**_child_env(), **(env or {})},
            )
        self.started.append(popen)
        return popen, log_path

    def close(self) -> None:
        """Kill whatever is still running and reap it."""
        for popen in self.started:
            if popen.poll() is None:
                popen.kill()
            try:
                popen.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover - a process that ignores SIGKILL
                pass


async def poll(probe: Any, *, timeout: float, what: str, interval: float = 0.02) -> Any:
    """Call the async ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not reached within {timeout} s")
        await asyncio.sleep(interval)


class SimProcess:
    """``venue-agent pos-sim`` in its own process, driven through its control API."""

    def __init__(self, procs: Processes, client: httpx.AsyncClient) -> None:
        self.procs = procs
        self.client = client
        self.port = free_port()
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        """Return the simulator's base URL."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self, *, timeout: float = 10) -> None:
        """Start the simulator and wait (up to ``timeout`` s) until its control API answers."""
        self.popen, log_path = self.procs.spawn("pos-sim", "pos-sim", "--port", str(self.port))

        async def answers() -> bool:
            if self.popen is not None and self.popen.poll() is not None:
                pytest.fail(f"pos-sim exited with {self.popen.returncode}: {log_path.read_text()}")
            try:
                return (await self.client.get(f"{self.base}/_sim/faults")).status_code == 200
            except httpx.TransportError:
                return False

        await poll(answers, timeout=timeout, what="pos-sim listening")

    async def faults(self, **switches: object) -> None:
        """Set fault switches."""
        response = await self.client.post(f"{self.base}/_sim/faults", json=switches)
        assert response.status_code == 200, response.text

    async def orders(self) -> list[dict[str, Any]]:
        """Return the orders the POS accepted (one per idempotency key)."""
        response = await self.client.get(f"{self.base}/_sim/orders")
        assert response.status_code == 200
        result: list[dict[str, Any]] = response.json()
        return result

    async def order_posts(self) -> list[dict[str, Any]]:
        """Return every order POST the POS received, refused or not."""
        response = await self.client.get(f"{self.base}/_sim/requests")
        assert response.status_code == 200
        return [r for r in response.json() if r["method"] == "POST"]


class AgentProcess:
    """``venue-agent run`` in its own process, started and stopped (or killed) on the same outbox."""

    def __init__(self, procs: Processes, tmp_path: Path, sim_port: int) -> None:
        self.procs = procs
        self.port = free_port()
        self.db = tmp_path / "outbox.db"
        self.config = tmp_path / "agent.toml"
        self.config.write_text(_config_text(tmp_path, agent_port=self.port, sim_port=sim_port), encoding="utf-8")
        self.popen: subprocess.Popen[bytes] | None = None
        self.log_paths: list[Path] = []

    @property
    def base(self) -> str:
        """Return the intake base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the agent (returns at once; see ``wait_ready``)."""
        assert self.popen is None or self.popen.poll() is not None, "the previous agent is still running"
        self.popen, log_path = self.procs.spawn("agent", "run", "--config", str(self.config))
        self.log_paths.append(log_path)

    async def wait_ready(self, client: httpx.AsyncClient, *, timeout: float = 10) -> None:
        """Poll ``GET /v1/health`` until it answers 200; fail at once if the process died."""

        async def ready() -> bool:
            assert self.popen is not None
            if self.popen.poll() is not None:
                pytest.fail(f"the agent exited with {self.popen.returncode}:\n{self.logs()[-3000:]}")
            try:
                return (await client.get(f"{self.base}/v1/health", timeout=2)).status_code == 200
            except httpx.TransportError:
                return False

        await poll(ready, timeout=timeout, what="agent ready")

    def kill(self) -> None:
        """SIGKILL the agent: no shutdown code runs, exactly like a crash or a power cut of the process."""
        assert self.popen is not None
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=5)

    def logs(self) -> str:
        """Return everything every incarnation of the agent logged."""
        return "".join(p.read_text(errors="replace") for p in self.log_paths if p.exists())

    def log_events(self, name: str) -> list[dict[str, Any]]:
        """Return the JSON log lines whose event is ``name``."""
        found = []
        for line in self.logs().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("event") == name:
                    found.append(entry)
        return found


def _config_text(tmp_path: Path, *, agent_port: int, sim_port: int) -> str:
    def q(value: object) -> str:
        return json.dumps(str(value))  # a JSON string is a valid TOML basic string

    return f"""
[venue]
id = "{VENUE}"
timezone = "Europe/London"

[storage]
path = {q(tmp_path / "outbox.db")}
min_free_mb = 0

[intake]
listen = "127.0.0.1:{agent_port}"

[injection]
backoff_base_seconds = 0.05
backoff_max_seconds = 0.5

[fallback]
print_after_seconds = 3600

[pos]
driver = "http"
rate_limit_per_second = 200
timeout_seconds = 10

[pos.http]
url = "http://127.0.0.1:{sim_port}/orders"

[[printers]]
name = "pass"
connection = "file"
path = {q(tmp_path / "tickets.txt")}

[logging]
level = "warning"
format = "json"
"""


@pytest.fixture(name="client")
async def _client() -> AsyncIterator[httpx.AsyncClient]:
    """Return an HTTP client for loopback (no proxy, keep-alive, room for 16 concurrent requests)."""
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    async with httpx.AsyncClient(timeout=10, limits=limits, trust_env=False) as client:
        yield client


@pytest.fixture(name="sim")
async def _sim(procs: Processes, client: httpx.AsyncClient) -> SimProcess:
    """Return a running ``venue-agent pos-sim`` process."""
    sim = SimProcess(procs, client)
    await sim.start()
    return sim


# ---- checks ----------------------------------------------------------------------------------


def expected_body(order: dict[str, Any]) -> dict[str, Any]:
    """Return the order as the agent stores it (its canonical JSON)."""
    parsed = parse_order(order, venue_id=VENUE, currency="GBP")
    body: dict[str, Any] = json.loads(parsed.model_dump_json())
    return body


def assert_complete(detail: dict[str, Any], sent: dict[str, Any]) -> None:
    """Assert that ``GET /v1/orders/{id}`` shows the whole order as sent, with its ``received`` event."""
    assert detail["order"] == expected_body(sent), f"order {sent['id']} is not stored as it was sent"
    assert detail["idempotency_key"] == f"{VENUE}:{sent['id']}"
    assert detail["events"], f"order {sent['id']} has no audit events"
    assert detail["events"][0]["type"] == "received"


def outbox_rows(db: Path) -> tuple[str, dict[str, str], set[str]]:
    """Read the outbox file directly: (integrity_check, {order id: state}, ids with a ``received`` event)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        states = dict(conn.execute("SELECT id, state FROM orders").fetchall())
        received = {r[0] for r in conn.execute("SELECT order_id FROM events WHERE type = 'received'")}
    finally:
        conn.close()
    return integrity, states, received


async def wait_drained(client: httpx.AsyncClient, agent: AgentProcess, *, timeout: float) -> dict[str, int]:
    """Poll ``GET /v1/health`` until no order is pending; return the outbox counts."""

    async def drained() -> dict[str, int] | None:
        outbox: dict[str, int] = (await client.get(f"{agent.base}/v1/health")).json()["outbox"]
        return outbox if not any(outbox.get(s, 0) for s in PENDING_STATES) else None

    result: dict[str, int] = await poll(drained, timeout=timeout, what="every stored order injected", interval=0.1)
    return result


async def sigterm(agent: AgentProcess, *, within: float) -> float:
    """Send SIGTERM, wait for the exit; assert exit code 0 within ``within`` seconds; return the time taken."""
    assert agent.popen is not None
    started = time.monotonic()
    agent.popen.send_signal(signal.SIGTERM)

    async def exited() -> bool:
        assert agent.popen is not None
        return agent.popen.poll() is not None

    await poll(exited, timeout=within, what="agent exit after SIGTERM", interval=0.05)
    assert agent.popen.returncode == 0, agent.logs()[-3000:]
    return time.monotonic() - started


# ---- the chaos run ---------------------------------------------------------------------------


class Chaos:
    """Concurrent senders posting orders to an agent that is killed and restarted under them."""

    def __init__(self, client: httpx.AsyncClient, agent: AgentProcess, *, seed: int) -> None:
        self.client = client
        self.agent = agent
        self.rng = random.Random(seed)  # whether a sender resends after a lost answer or gives up
        self.up = asyncio.Event()  # set while the agent is believed to listen
        self.stop = asyncio.Event()
        self.sent: dict[str, dict[str, Any]] = {}
        self.acked: dict[str, int] = {}  # id -> 202 or 200 (duplicate)
        self.unanswered_present: set[str] = set()  # no answer, then found stored (complete) after restart
        self.unanswered_absent: set[str] = set()  # no answer, then not stored
        self.abandoned: set[str] = set()  # no answer and never resent (the platform gave up)
        self.problems: list[str] = []
        self._next = 0

    def new_order(self) -> dict[str, Any]:
        self._next += 1
        order_id = f"crash-{self._next:05d}"
        order = make_order(order_id, notes=f"chaos order {self._next}")
        self.sent[order_id] = order
        return order

    async def sender(self) -> None:
        while not self.stop.is_set():
            await self.deliver(self.new_order())

    async def deliver(self, order: dict[str, Any]) -> None:
        """Post until answered; after a post lost to a kill, check the order is absent or whole, then maybe resend."""
        order_id = order["id"]
        expect_duplicate: bool | None = None
        while True:
            await self.up.wait()
            try:
                response = await self.client.post(f"{self.agent.base}/v1/orders", json=order)
            except httpx.ConnectError:  # refused: the agent is not listening; the order never left
                await asyncio.sleep(0.02)
                continue
            except httpx.TransportError:  # sent, no answer: the agent died under the request
                present = await self.inspect_after_restart(order)
                if present is None:
                    continue  # killed again while looking: look again after the next restart
                if self.rng.random() < 0.3:
                    self.abandoned.add(order_id)
                    return
                expect_duplicate = present
                continue
            if response.status_code not in (200, 202):
                self.problems.append(f"{order_id}: unexpected {response.status_code} {response.text}")
                return
            duplicate = response.status_code == 200
            if response.json().get("duplicate") is not duplicate:
                self.problems.append(f"{order_id}: {response.status_code} with body {response.text}")
            if expect_duplicate is not None and duplicate is not expect_duplicate:
                self.problems.append(
                    f"{order_id}: resent after a lost answer; stored={expect_duplicate} but the agent said "
                    f"{response.status_code} {response.text}"
                )
            self.acked[order_id] = response.status_code
            return

    async def inspect_after_restart(self, order: dict[str, Any]) -> bool | None:
        """After a lost answer: wait for the next agent, then return whether the order was stored (whole)."""
        deadline = time.monotonic() + 3
        while self.up.is_set() and self.agent.popen is not None and self.agent.popen.poll() is None:
            if time.monotonic() > deadline:
                break  # not a kill after all: look at the agent that is running
            await asyncio.sleep(0.01)
        await self.up.wait()
        try:
            response = await self.client.get(f"{self.agent.base}/v1/orders/{order['id']}")
        except httpx.TransportError:
            return None
        if response.status_code == 404:
            self.unanswered_absent.add(order["id"])
            return False
        assert response.status_code == 200, response.text
        try:
            assert_complete(response.json(), order)
        except AssertionError as exc:
            self.problems.append(f"{order['id']}: half-written after a kill: {exc}")
        self.unanswered_present.add(order["id"])
        return True


@pytest.mark.timeout(60)
async def test_sigkill_chaos_never_loses_an_acknowledged_order(
    tmp_path: Path, procs: Processes, sim: SimProcess, client: httpx.AsyncClient
) -> None:
    """SIGKILLs at random moments under concurrent intake lose no acknowledged order and inject each exactly once."""
    started = time.monotonic()
    rng = random.Random(20261123)
    agent = AgentProcess(procs, tmp_path, sim.port)
    agent.start()
    await agent.wait_ready(client)
    chaos = Chaos(client, agent, seed=7)
    chaos.up.set()
    senders = [asyncio.create_task(chaos.sender(), name=f"sender {i}") for i in range(10)]
    kills: list[str] = []
    try:
        for round_no in range(4):
            slow_ms = rng.randint(50, 200) if round_no % 2 == 0 else 0
            await sim.faults(slow_ms=slow_ms)
            await asyncio.sleep(rng.uniform(0.4, 2.0))  # chaos timing: let orders flow, then kill mid-stream
            chaos.up.clear()
            agent.kill()
            kills.append(f"round {round_no}: slow_ms={slow_ms}, {len(chaos.acked)} acked so far")
            agent.start()
            if round_no == 1:  # also kill one incarnation during start-up and in-doubt recovery
                await asyncio.sleep(rng.uniform(0.05, 0.5))
                agent.kill()
                kills.append(f"round {round_no}: killed again during start-up")
                agent.start()
            await agent.wait_ready(client)
            chaos.up.set()
        await sim.faults(slow_ms=0)
        await asyncio.sleep(0.5)  # keep sending to the last incarnation for a moment
    finally:
        chaos.stop.set()
        await asyncio.wait_for(asyncio.gather(*senders, return_exceptions=True), timeout=15)
    for task in senders:
        assert task.exception() is None, repr(task.exception())
    assert not chaos.problems, "\n".join(chaos.problems[:20])

    counts = await wait_drained(client, agent, timeout=30)
    assert counts["failed"] == 0, counts

    # Every acknowledged order is stored whole and injected.
    semaphore = asyncio.Semaphore(10)

    async def detail(order_id: str) -> tuple[int, dict[str, Any]]:
        async with semaphore:
            response = await client.get(f"{agent.base}/v1/orders/{order_id}")
            return response.status_code, response.json()

    acked_ids = sorted(chaos.acked)
    details = dict(zip(acked_ids, await asyncio.gather(*(detail(i) for i in acked_ids)), strict=True))
    missing = [i for i, (status, _) in details.items() if status != 200]
    assert not missing, f"acknowledged orders missing from the outbox: {missing[:20]}"
    for order_id, (_, body) in details.items():
        assert_complete(body, chaos.sent[order_id])
        assert body["state"] == "injected", (order_id, body["state"])

    # The POS holds every acknowledged order exactly once, under the order's one key, and nothing else.
    pos_orders = await sim.orders()
    keys_by_order: dict[str, list[str]] = defaultdict(list)
    for record in pos_orders:
        keys_by_order[record["order"]["id"]].append(record["key"])
    twice = {i: keys for i, keys in keys_by_order.items() if len(keys) != 1}
    assert not twice, f"orders accepted by the POS under more than one key: {twice}"
    wrong_key = {i: keys[0] for i, keys in keys_by_order.items() if keys[0] != f"{VENUE}:{i}"}
    assert not wrong_key, f"orders injected under an unexpected key: {wrong_key}"
    not_in_pos = sorted(set(chaos.acked) - set(keys_by_order))
    assert not not_in_pos, f"acknowledged orders the POS never got: {not_in_pos[:20]}"

    # Orders whose answer was lost: stored whole (and then injected) or not stored at all, never in between.
    stored_unacked = chaos.abandoned & chaos.unanswered_present
    for order_id in sorted(chaos.abandoned):
        response = await client.get(f"{agent.base}/v1/orders/{order_id}")
        if order_id in stored_unacked:
            assert response.status_code == 200
            assert_complete(response.json(), chaos.sent[order_id])
            assert response.json()["state"] == "injected"
        else:
            assert response.status_code == 404, response.text
    pos_ids = set(keys_by_order)
    assert pos_ids == set(chaos.acked) | stored_unacked, "the POS holds orders the outbox never stored"

    # A clean stop at the end leaves a consistent file: every row whole (with its event), nothing in doubt.
    await sigterm(agent, within=12)
    integrity, states, received = outbox_rows(agent.db)
    assert integrity == "ok"
    assert set(states) == set(chaos.acked) | stored_unacked
    assert set(states) <= received, "order rows without their received event"
    assert set(states.values()) == {"injected"}

    resent = sum(r["requests"] for r in pos_orders) - len(pos_orders)
    requeued = sum(e.get("count", 0) for e in agent.log_events("orders_in_doubt_requeued"))
    elapsed = time.monotonic() - started
    print(
        f"\nchaos: {len(chaos.sent)} orders posted, {len(chaos.acked)} acknowledged "
        f"({sum(1 for s in chaos.acked.values() if s == 200)} as duplicates), "
        f"{len(chaos.unanswered_present) + len(chaos.unanswered_absent)} answers lost to kills "
        f"({len(chaos.unanswered_present)} had been stored), {len(chaos.abandoned)} never resent; "
        f"{len(pos_orders)} in the POS, {resent} repeated POS requests, {requeued} orders requeued in doubt; "
        f"kills: {kills}; {elapsed:.1f} s"
    )
    assert elapsed < 60


async def test_sigkill_while_sending_resends_with_the_same_key(
    tmp_path: Path, procs: Processes, sim: SimProcess, client: httpx.AsyncClient
) -> None:
    """An order killed in ``sending`` is requeued in doubt and resent with the same key; the POS holds it once."""
    await sim.faults(slow_ms=3000)
    agent = AgentProcess(procs, tmp_path, sim.port)
    agent.start()
    await agent.wait_ready(client)
    order = make_order("ord_in_doubt")
    key = f"{VENUE}:ord_in_doubt"
    response = await client.post(f"{agent.base}/v1/orders", json=order)
    assert response.status_code == 202

    async def in_flight() -> bool:
        state = (await client.get(f"{agent.base}/v1/orders/ord_in_doubt")).json()["state"]
        return state == "sending" and any(r["idempotency_key"] == key for r in await sim.order_posts())

    await poll(in_flight, timeout=5, what="order in sending with its POST at the POS")
    agent.kill()
    _, states, _ = outbox_rows(agent.db)
    assert states == {"ord_in_doubt": "sending"}
    await sim.faults(slow_ms=0)

    agent.start()
    await agent.wait_ready(client)

    async def injected() -> dict[str, Any] | None:
        body: dict[str, Any] = (await client.get(f"{agent.base}/v1/orders/ord_in_doubt")).json()
        return body if body["state"] == "injected" else None

    detail = await poll(injected, timeout=10, what="in-doubt order injected after restart")
    assert detail["idempotency_key"] == key
    assert "recovered_in_doubt" in [e["type"] for e in detail["events"]]
    requeued = agent.log_events("orders_in_doubt_requeued")
    assert requeued, f"no orders_in_doubt_requeued in the log:\n{agent.logs()}"
    assert requeued[0]["order_ids"] == ["ord_in_doubt"]

    # The first request may still complete at the POS after the kill; either way the POS holds the order once.
    await poll(lambda: _all_answered(sim), timeout=10, what="the POS answered every request")
    posts = await sim.order_posts()
    assert len(posts) >= 2
    assert {p["idempotency_key"] for p in posts} == {key}
    pos_orders = await sim.orders()
    assert [o["key"] for o in pos_orders] == [key]
    assert pos_orders[0]["order"]["id"] == "ord_in_doubt"


async def _all_answered(sim: SimProcess) -> bool:
    """Return whether every order POST at the simulator has been answered (status set)."""
    return all(p["status"] != 0 for p in await sim.order_posts())


async def test_sigterm_finishes_in_flight_calls_and_exits_zero(
    tmp_path: Path, procs: Processes, sim: SimProcess, client: httpx.AsyncClient
) -> None:
    """SIGTERM with POS calls in flight: exit 0 within 12 s, nothing in doubt, the outbox consistent with the POS."""
    agent = AgentProcess(procs, tmp_path, sim.port)
    agent.start()
    await agent.wait_ready(client)
    await sim.faults(slow_ms=1500)
    orders = [make_order(f"term-{n:02d}", notes=f"sigterm order {n}") for n in range(40)]
    answers = await asyncio.gather(*(client.post(f"{agent.base}/v1/orders", json=o) for o in orders))
    assert [a.status_code for a in answers] == [202] * len(orders)
    await poll(lambda: _some_posted(sim), timeout=5, what="POS calls in flight")

    took = await sigterm(agent, within=12)

    integrity, states, received = outbox_rows(agent.db)
    assert integrity == "ok"
    assert set(states) == {o["id"] for o in orders}
    assert set(states) <= received
    assert "sending" not in states.values(), f"SIGTERM left orders in doubt: {states}"
    injected = {i for i, s in states.items() if s == "injected"}
    assert injected, "the calls in flight at SIGTERM were not finished"
    assert set(states.values()) <= {"injected", "queued"}
    await poll(lambda: _all_answered(sim), timeout=5, what="the POS answered every request")
    assert {o["order"]["id"] for o in await sim.orders()} == injected, "the outbox and the POS disagree"

    # The next start finds nothing in doubt and sends the rest.
    await sim.faults(slow_ms=0)
    agent.start()
    await agent.wait_ready(client)
    await wait_drained(client, agent, timeout=10)
    assert not agent.log_events("orders_in_doubt_requeued")
    assert sorted(o["key"] for o in await sim.orders()) == sorted(f"{VENUE}:{o['id']}" for o in orders)
    print(f"\nSIGTERM: exit 0 after {took:.2f} s with {len(injected)} POS calls finished during the drain")


async def _some_posted(sim: SimProcess) -> bool:
    return bool(await sim.order_posts())
