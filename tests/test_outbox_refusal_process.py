"""A damaged or missing outbox is never silently replaced: ``venue-agent run`` in a real process refuses it.

The agent takes 20 orders while the POS is down (acknowledged, pending), is SIGKILLed, and its outbox is then
truncated to 0 bytes or deleted: the next start exits 2 (the unit's RestartPreventExitStatus) with what happened
and what to do, and creates no new empty outbox; ``venue-agent outbox init --force`` is the way on.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from agent.outbox import identity
from tests.conftest import make_order
from tests.test_crash_recovery import BIN, AgentProcess, Processes, SimProcess, _child_env, poll

pytestmark = pytest.mark.slow

EXIT_REFUSED = 2


@pytest.fixture(name="client")
async def _client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        yield client


@pytest.fixture(name="sim")
async def _sim(procs: Processes, client: httpx.AsyncClient) -> SimProcess:
    sim = SimProcess(procs, client)
    await sim.start()
    return sim


async def exit_code(agent: AgentProcess, *, timeout: float = 20) -> int:
    """Wait for the agent to exit by itself; return its exit code."""

    async def exited() -> bool:
        assert agent.popen is not None
        return agent.popen.poll() is not None

    await poll(exited, timeout=timeout, what="agent exit", interval=0.05)
    assert agent.popen is not None
    return agent.popen.returncode


def outbox_init(agent: AgentProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``venue-agent outbox init`` on the agent's config."""
    return subprocess.run(
        [str(BIN), "outbox", "init", "--config", str(agent.config), *args],
        capture_output=True,
        text=True,
        env=_child_env(),
        timeout=60,
        check=False,
    )


async def twenty_pending_then_kill(agent: AgentProcess, sim: SimProcess, client: httpx.AsyncClient) -> str:
    """Start the agent, post 20 orders with the POS down (all 202), SIGKILL it; return the outbox id."""
    await sim.faults(down=True)
    agent.start()
    await agent.wait_ready(client, timeout=20)
    for i in range(20):
        response = await client.post(f"{agent.base}/v1/orders", json=make_order(f"pend-{i:02d}"))
        assert response.status_code == 202, response.text
    health = (await client.get(f"{agent.base}/v1/health")).json()
    assert sum(health["outbox"][s] for s in ("queued", "retrying", "awaiting_pos", "sending")) == 20
    outbox_id = str(health["storage"]["outbox_id"])
    agent.kill()
    return outbox_id


def assert_refused(agent: AgentProcess, code: int, reason: str) -> None:
    """Assert the agent refused the outbox: exit 2, the message, the structured event."""
    logs = agent.logs()
    assert code == EXIT_REFUSED, logs[-3000:]
    assert "cannot start" in logs and str(agent.db) in logs
    assert "restore outbox.db from a backup" in logs and "venue-agent outbox init --force" in logs
    assert [e["reason"] for e in agent.log_events("outbox_refused")] == [reason], logs[-3000:]
    assert not agent.log_events("agent_ready")


@pytest.mark.timeout(120)
async def test_truncated_outbox_is_refused_until_init_force(
    tmp_path: Path, procs: Processes, sim: SimProcess, client: httpx.AsyncClient
) -> None:
    """An outbox truncated to 0 bytes after 20 acked orders: start exits 2; `outbox init --force`, then it starts."""
    agent = AgentProcess(procs, tmp_path, sim.port)
    old_id = await twenty_pending_then_kill(agent, sim, client)
    wal = Path(f"{agent.db}-wal")
    wal_bytes = wal.read_bytes()
    assert wal_bytes, "a SIGKILL leaves the write-ahead log behind"
    agent.db.write_bytes(b"")  # truncate to 0 bytes; the -wal stays
    agent.start()
    assert_refused(agent, await exit_code(agent), "empty")
    assert agent.db.stat().st_size == 0, "no new empty outbox was created in its place"

    status = subprocess.run(
        [str(BIN), "status", "--json", "--config", str(agent.config)],
        capture_output=True,
        text=True,
        env=_child_env(),
        timeout=60,
        check=False,
    )
    assert status.returncode == 1 and json.loads(status.stdout)["refused"]["reason"] == "empty", status
    assert wal.read_bytes() == wal_bytes, "neither the agent nor status let SQLite delete the -wal"

    refused = outbox_init(agent)
    assert refused.returncode == EXIT_REFUSED and "--force" in refused.stderr, refused
    assert agent.db.stat().st_size == 0

    forced = outbox_init(agent, "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    result = json.loads(forced.stdout)
    assert result["outbox_id"] != old_id
    assert str(agent.db) in result["moved"], "the truncated file is moved aside, not deleted"
    assert Path(result["moved"][str(agent.db)]).exists()
    assert Path(result["moved"][str(wal)]).read_bytes() == wal_bytes, "its -wal too, for recovery"
    assert not wal.exists() or wal.read_bytes() != wal_bytes
    assert identity.read_marker(identity.marker_path(agent.db)).outbox_id == result["outbox_id"]  # type: ignore[union-attr]

    await sim.faults(down=False)
    agent.start()
    await agent.wait_ready(client, timeout=20)
    health = (await client.get(f"{agent.base}/v1/health")).json()
    assert health["storage"]["outbox_id"] == result["outbox_id"]
    assert not any(health["outbox"].values()), health["outbox"]


@pytest.mark.timeout(120)
async def test_deleted_outbox_is_refused(
    tmp_path: Path, procs: Processes, sim: SimProcess, client: httpx.AsyncClient
) -> None:
    """An outbox deleted after 20 acked orders: start exits 2 and creates no file; init --force gets it going."""
    agent = AgentProcess(procs, tmp_path, sim.port)
    await twenty_pending_then_kill(agent, sim, client)
    agent.db.unlink()
    agent.start()
    assert_refused(agent, await exit_code(agent), "missing")
    assert not agent.db.exists(), "no new empty outbox was created"
    assert outbox_init(agent, "--force").returncode == 0
    agent.start()
    await agent.wait_ready(client, timeout=20)


@pytest.mark.timeout(60)
async def test_first_run_starts_and_reports_quick_check(
    tmp_path: Path, procs: Processes, sim: SimProcess, client: httpx.AsyncClient
) -> None:
    """A fresh install (no marker, no outbox) starts, writes the marker, shows quick_check in health; init refuses."""
    agent = AgentProcess(procs, tmp_path, sim.port)
    assert not agent.db.exists() and not identity.marker_path(agent.db).exists()
    agent.start()
    await agent.wait_ready(client, timeout=20)
    storage = (await client.get(f"{agent.base}/v1/health")).json()["storage"]
    assert storage["integrity"] == "ok" and storage["integrity_checked_at"]
    assert storage["integrity_detail"] is None
    marker = identity.read_marker(identity.marker_path(agent.db))
    assert marker is not None and marker.outbox_id == storage["outbox_id"]
    busy = outbox_init(agent, "--force")  # never under a running agent
    assert busy.returncode == 1 and "stop it first" in busy.stderr, busy
    assert identity.read_marker(identity.marker_path(agent.db)) == marker
