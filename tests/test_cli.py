"""The command line as a technician uses it, against a real agent on loopback."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from agent.domain.config import Settings
from tests.conftest import Sim, agent_settings, make_order, run_agent


def write_config(tmp_path: Path, settings: Settings, port: int) -> Path:
    """Write a config file pointing the CLI at an agent listening on ``port``."""
    path = tmp_path / "cli.toml"
    path.write_text(
        f'[venue]\nid = "{settings.venue.id}"\n[storage]\npath = "{settings.storage.path}"\n'
        f'[intake]\nlisten = "127.0.0.1:{port}"\n[pos]\ndriver = "simulator"\n'
        '[[printers]]\nname = "pass"\nconnection = "file"\n'
        f'path = "{tmp_path / "tickets.txt"}"\n'
    )
    return path


async def cli(*args: str) -> tuple[int, str, str]:
    """Run ``venue-agent`` in a subprocess without blocking the agent's event loop."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.cli.main", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_status_and_orders_commands(tmp_path: Path, sim: Sim) -> None:
    """status, orders list/show/cancel/reprint work against the running agent and exit 0."""
    sim.state.faults.update({"down": True})
    settings = agent_settings(tmp_path, sim.url)
    async with run_agent(settings) as running:
        assert running.agent.port is not None
        config = write_config(tmp_path, settings, running.agent.port)
        assert (await running.client.post("/v1/orders", json=make_order("ord_cli"))).status_code == 202
        code, out, _ = await cli("status", "--config", str(config))
        assert code == 0 and "READY" in out
        code, out, _ = await cli("status", "--config", str(config), "--json")
        assert json.loads(out)["pos"]["driver"] == "http"
        code, out, _ = await cli("orders", "list", "--config", str(config))
        assert code == 0 and "ord_cli" in out
        code, out, _ = await cli("orders", "show", "ord_cli", "--config", str(config))
        assert code == 0 and "2 x Margherita" in out and "received" in out
        code, out, _ = await cli("orders", "reprint", "ord_cli", "--config", str(config))
        assert code == 0 and "reprint_no 1" in out
        code, out, _ = await cli("orders", "cancel", "ord_cli", "--config", str(config))
        assert code == 0 and "cancelled" in out
        code, _, err = await cli("orders", "resubmit", "ord_cli", "--config", str(config))
        assert code == 2 and "only failed or skipped" in err
        code, _, err = await cli("orders", "show", "nope", "--config", str(config))
        assert code == 2 and "404" in err


async def test_status_without_an_agent_says_so(tmp_path: Path, sim: Sim) -> None:
    """status exits 1 and says the agent is not running when nothing listens."""
    settings = agent_settings(tmp_path, sim.url)
    config = write_config(tmp_path, settings, 9)  # port 9 (discard): nothing listens there
    code, out, _ = await cli("status", "--config", str(config))
    assert code == 1 and "NOT RUNNING" in out


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    """The demo injects orders, prints fallback tickets while the POS is down and summarises each order."""
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli.main", "demo", "--fast", "--output", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.split("What happened to each order:")[1]
    assert summary.count("injected") >= 5
    assert "scheduled" in summary and "failed" in summary and "cancelled" in summary
    tickets = (tmp_path / "demo" / "tickets.txt").read_text()
    assert tickets.count("FALLBACK - NOT IN POS") == 5
    for banner in ("MODIFIED", "DO NOT MAKE", "MAY BE A DUPLICATE", "BACKUP FOR GRILL", "COPY 3"):
        assert banner in tickets, banner
    assert "LATE - 25 MIN" in tickets and "!! SOLD OUT IN POS" in tickets and "!! ALLERGY:" in tickets
    listing = result.stdout.split("Every ticket that came out")[1].splitlines()[1:]
    previews = [line.split()[0] for line in listing if line.strip().endswith(".png") or ".png " in line]
    assert len(previews) == 8
    for name in previews:
        assert (tmp_path / "demo" / "tickets" / name).stat().st_size > 1000


def test_usage_errors_exit_2() -> None:
    """An unknown command is a usage error (exit 2)."""
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli.main", "frobnicate"], capture_output=True, text=True, check=False, timeout=30
    )
    assert result.returncode == 2
