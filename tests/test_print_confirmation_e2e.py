"""``venue-agent run`` with a black-hole printer and a healthy backup: the ticket must reach the backup.

The black hole accepts the TCP connection and never reads or answers: a ticket fits in the kernel's send
buffer, so the write completes and only the missing answer after it shows that nothing was printed.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Sim, make_order
from tests.fake_printer import FakeNetworkPrinter
from tests.test_crash_recovery import AgentProcess, Processes, poll
from tests.test_printing_e2e import CUT, _down_pos, _procs, config_text, lines, post

pytestmark = pytest.mark.slow
__all__ = ["_down_pos", "_procs"]  # the fixtures, shared with test_printing_e2e

REPRINT = "MAY BE A DUPLICATE"  # the second line of REPRINT - MAY BE A DUPLICATE at 48 columns
# Default timeouts: connect 3 s, status 1 s per reply; the stuck printer costs about two status timeouts.
BOUND_SECONDS = 12.0


@pytest.fixture(name="stuck")
async def _stuck() -> AsyncIterator[FakeNetworkPrinter]:
    async with FakeNetworkPrinter.running("black_hole") as printer:
        yield printer


@pytest.fixture(name="backup")
async def _backup() -> AsyncIterator[FakeNetworkPrinter]:
    async with FakeNetworkPrinter.running() as printer:
        yield printer


def alert_rows(tmp_path: Path) -> list[dict[str, Any]]:
    """Every alert in the running agent's outbox (read-only; WAL allows it)."""
    conn = sqlite3.connect(f"file:{tmp_path / 'outbox.db'}?mode=ro", uri=True, timeout=2)
    try:
        rows = conn.execute("SELECT alert, severity, payload FROM alerts ORDER BY seq").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()
    return [{"alert": r[0], "severity": r[1], **json.loads(r[2])} for r in rows]


async def test_black_hole_printer_fails_over_to_the_backup_marked_reprint(
    tmp_path: Path, procs: Processes, down_pos: Sim, stuck: FakeNetworkPrinter, backup: FakeNetworkPrinter
) -> None:
    """POS down, first printer a black hole: the backup prints the REPRINT copy; records, health and alert say so."""
    agent = AgentProcess(procs, tmp_path, down_pos.port)
    config = config_text(tmp_path, agent_port=agent.port, sim_port=down_pos.port, printer_port=stuck.port)
    config = config.replace(
        "[discovery]",
        f'[[printers]]\nname = "bar"\nconnection = "network"\nhost = "127.0.0.1"\nport = {backup.port}\n'
        'profile = "TM-T20II"\ncolumns = 48\n\n[discovery]',
    )
    agent.config.write_text(config, encoding="utf-8")
    agent.start()
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        await agent.wait_ready(client)
        posted = time.monotonic()
        await post(client, agent, make_order("ord_hole_1"))

        async def on_backup() -> bool:
            return bool(backup.jobs) and CUT in backup.jobs[0]

        # print_after_seconds = 1, then the black hole's two status timeouts, then the backup.
        await poll(on_backup, timeout=BOUND_SECONDS + 10, what="ticket on the backup printer")
        assert time.monotonic() - posted < BOUND_SECONDS
        text = lines(backup.jobs[0])
        assert "FALLBACK - NOT IN POS" in text and REPRINT in text
        assert stuck.connections >= 1

        async def recorded() -> dict[str, Any] | None:
            detail: dict[str, Any] = (await client.get(f"{agent.base}/v1/orders/ord_hole_1")).json()
            printed = [t for t in detail["tickets"] if t["state"] == "printed"]
            return detail if printed else None

        detail = await poll(recorded, timeout=5, what="ticket recorded as printed")
        assert [(t["state"], t["printer"]) for t in detail["tickets"]] == [("printed", "bar")]
        unconfirmed = [e for e in detail["events"] if e["type"] == "print_unconfirmed"]
        assert [e["detail"]["printer"] for e in unconfirmed] == ["pass"], detail["events"]

        health = (await client.get(f"{agent.base}/v1/health")).json()
        states = {p["name"]: p["state"] for p in health["printers"]}
        assert states["bar"] == "ok" and states["pass"] in ("offline", "unknown"), health

        async def alerted() -> list[dict[str, Any]]:
            return [a for a in alert_rows(tmp_path) if a["alert"] == "printer_offline" and a.get("printer") == "pass"]

        rows = await poll(alerted, timeout=5, what="printer_offline alert for the stuck printer")
        assert "never confirmed" in rows[0]["reason"] and "bar" in rows[0]["action"], rows[0]
        assert agent.log_events("print_unconfirmed")
