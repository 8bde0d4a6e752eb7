"""``venue-agent pos authorize``: a new refresh token reaches the agent, or waits in the outbox for its start."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pytest

from agent.cli.main import main
from agent.domain.clock import FakeClock
from agent.outbox.store import Outbox


def write_config(tmp_path: Path, driver: str = "lightspeed_k") -> Path:
    """A config whose agent is not running (nothing listens on its intake port)."""
    path = tmp_path / "agent.toml"
    pos = (
        '[pos]\ndriver = "lightspeed_k"\n[pos.lightspeed_k]\nbusiness_location_id = 45454545\nclient_id = "c"\n'
        'client_secret = "s"\nrefresh_token = "seed"\nendpoint_id = "e"\n'
        if driver == "lightspeed_k"
        else '[pos]\ndriver = "http"\n[pos.http]\nurl = "http://127.0.0.1:9/orders"\n'
    )
    path.write_text(
        f'[venue]\nid = "harbour-kitchen"\n[storage]\npath = "{tmp_path / "outbox.db"}"\n'
        f'[intake]\nlisten = "127.0.0.1:9"\n{pos}',
        encoding="utf-8",
    )
    return path


async def test_authorize_without_a_running_agent_stores_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The token read from stdin is committed where the driver looks first, and is never printed."""
    outbox = Outbox(tmp_path / "outbox.db", clock=FakeClock(), min_free_mb=0)
    await outbox.open()
    await outbox.close()
    config = write_config(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO("  new-refresh-token-from-portal\n"))
    assert main(["pos", "authorize", "--config", str(config)]) == 0
    out = capsys.readouterr()
    assert "stored" in out.out and "new-refresh-token-from-portal" not in out.out + out.err
    conn = sqlite3.connect(tmp_path / "outbox.db")
    row = conn.execute("SELECT value FROM kv WHERE key = 'pos.lightspeed_k.45454545.refresh_token'").fetchone()
    conn.close()
    assert row == ("new-refresh-token-from-portal",)


def test_authorize_refuses_empty_input_and_other_drivers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing usable on stdin, or a driver without refresh tokens, is a usage error (exit 2)."""
    monkeypatch.setattr("sys.stdin", io.StringIO("two words\n"))
    assert main(["pos", "authorize", "--config", str(write_config(tmp_path))]) == 2
    assert "one refresh token" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setattr("sys.stdin", io.StringIO("token\n"))
    assert main(["pos", "authorize", "--config", str(write_config(other, driver="http"))]) == 2
    assert "only 'lightspeed_k'" in capsys.readouterr().err
