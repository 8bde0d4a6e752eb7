"""Kitchen tickets end to end: ``venue-agent run`` as a process, a down POS, a fake network printer on loopback.

The agent must get a fallback ticket onto the printer when the POS cannot take an order, and a SIGKILL
between the decision to print and the printer taking the bytes must cost at most one extra copy, marked
as a possible duplicate, never the ticket.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from drivers.pos.sim_state import Faults, SimulatorState
from drivers.printers.decode import decode_escpos
from tests.conftest import Sim, make_order, run_simulator
from tests.fake_printer import FakeNetworkPrinter
from tests.test_crash_recovery import AgentProcess, Processes, poll

pytestmark = pytest.mark.slow

CUT = b"\x1dV"


def config_text(tmp_path: Path, *, agent_port: int, sim_port: int, printer_port: int) -> str:
    """An agent config: POS on the simulator, fallback after 1 s, one network printer on loopback."""

    def q(value: object) -> str:
        return json.dumps(str(value))

    return f"""
[venue]
id = "harbour-kitchen"
timezone = "Europe/London"

[storage]
path = {q(tmp_path / "outbox.db")}
min_free_mb = 0

[intake]
listen = "127.0.0.1:{agent_port}"

[injection]
backoff_base_seconds = 0.2
backoff_max_seconds = 1

[fallback]
print_after_seconds = 1

[pos]
driver = "http"
timeout_seconds = 2

[pos.http]
url = "http://127.0.0.1:{sim_port}/orders"

[[printers]]
name = "pass"
connection = "network"
host = "127.0.0.1"
port = {printer_port}
profile = "TM-T20II"
columns = 48

[discovery]
advertise = false

[logging]
level = "info"
format = "json"
"""


@pytest.fixture(name="procs")
def _procs(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.close()


@pytest.fixture(name="down_pos")
async def _down_pos() -> AsyncIterator[Sim]:
    async with run_simulator(SimulatorState(faults=Faults(down=True))) as sim:
        yield sim


@pytest.fixture(name="printer")
async def _printer() -> AsyncIterator[FakeNetworkPrinter]:
    async with FakeNetworkPrinter.running() as printer:
        yield printer


def start_agent(procs: Processes, tmp_path: Path, sim: Sim, printer: FakeNetworkPrinter) -> AgentProcess:
    """Start ``venue-agent run`` on a fresh config (same outbox across restarts)."""
    agent = AgentProcess(procs, tmp_path, sim.port)
    agent.config.write_text(
        config_text(tmp_path, agent_port=agent.port, sim_port=sim.port, printer_port=printer.port), encoding="utf-8"
    )
    agent.start()
    return agent


def job_state(tmp_path: Path) -> str | None:
    """The state of the first print job, read from the agent's outbox while it runs (WAL allows it)."""
    conn = sqlite3.connect(f"file:{tmp_path / 'outbox.db'}?mode=ro", uri=True, timeout=2)
    try:
        row = conn.execute("SELECT state FROM print_jobs ORDER BY id LIMIT 1").fetchone()
    except sqlite3.OperationalError:
        return None
    finally:
        conn.close()
    return None if row is None else str(row[0])


def lines(job: bytes) -> list[str]:
    """The stripped text lines the kitchen reads on one ticket."""
    return [line.text.strip() for line in decode_escpos(job).lines]


async def post(client: httpx.AsyncClient, agent: AgentProcess, order: dict[str, Any]) -> None:
    """Post an order and check it was acknowledged."""
    response = await client.post(f"{agent.base}/v1/orders", json=order)
    assert response.status_code == 202, response.text


async def test_pos_down_the_kitchen_gets_the_ticket_on_the_network_printer(
    tmp_path: Path, procs: Processes, down_pos: Sim, printer: FakeNetworkPrinter
) -> None:
    """With the POS down, the fallback ticket reaches the printer as ESC/POS, cut, with status read around it."""
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        agent = start_agent(procs, tmp_path, down_pos, printer)
        await agent.wait_ready(client)
        await post(client, agent, make_order("ord_e2e_1"))

        async def printed() -> bool:
            return bool(printer.jobs) and CUT in printer.jobs[0]

        await poll(printed, timeout=15, what="fallback ticket on the printer")
        text = lines(printer.jobs[0])
        assert "FALLBACK - NOT IN POS" in text and "K7Q2M9XA" in text
        assert printer.queries >= 2  # status before and after the job
        await printer.idle(timeout=3)  # the connection was closed after the job

        async def recorded() -> bool:
            detail = (await client.get(f"{agent.base}/v1/orders/ord_e2e_1")).json()
            return any(t["state"] == "printed" for t in detail["tickets"])

        await poll(recorded, timeout=5, what="ticket recorded as printed")
        health = (await client.get(f"{agent.base}/v1/health")).json()
        assert [(p["name"], p["state"]) for p in health["printers"]] == [("pass", "ok")]


@pytest.mark.parametrize("moment", ["before_the_bytes", "after_the_bytes"])
async def test_sigkill_mid_print_costs_at_most_one_copy_marked_reprint(
    tmp_path: Path, procs: Processes, down_pos: Sim, printer: FakeNetworkPrinter, moment: str
) -> None:
    """Killed while printing: after restart the ticket prints (again), marked as a possible duplicate."""
    printer.mode = "silent"  # every status read waits its full timeout: a window to kill the agent in
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        agent = start_agent(procs, tmp_path, down_pos, printer)
        await agent.wait_ready(client)
        await post(client, agent, make_order("ord_e2e_2"))

        async def at_moment() -> bool:
            if moment == "before_the_bytes":
                return job_state(tmp_path) == "printing" and not printer.jobs
            return bool(printer.jobs) and CUT in printer.jobs[0]

        await poll(at_moment, timeout=15, what=f"agent printing ({moment})", interval=0.005)
        agent.kill()
        copies_before = len(printer.jobs)
        printer.mode = "ok"

        agent = start_agent(procs, tmp_path, down_pos, printer)
        await agent.wait_ready(client)

        async def reprinted() -> bool:
            return len(printer.jobs) > copies_before and CUT in printer.jobs[-1]

        await poll(reprinted, timeout=15, what="ticket printed after restart")
        await printer.idle(timeout=3)
        assert len(printer.jobs) == copies_before + 1 <= 2
        last = lines(printer.jobs[-1])
        assert "FALLBACK - NOT IN POS" in last and "MAY BE A DUPLICATE" in last and "COPY 2" in last
        assert agent.log_events("print_jobs_in_doubt"), agent.logs()[-2000:]
