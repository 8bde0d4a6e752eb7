"""Operator commands on an installed box, run as a technician does (``sudo venue-agent ...``): no systemd environment.

The box is laid out in a temporary root exactly as the package and docs/install.md say: /etc/venue-agent/agent.toml,
/etc/venue-agent/credentials/intake-token handed over by a ``LoadCredential=`` drop-in to the shipped unit, and the
service's state directory /var/lib/venue-agent. The agent runs as a real process with the environment systemd gives
it ($STATE_DIRECTORY, $CREDENTIALS_DIRECTORY holding a copy of the credential); the commands run in-process with
neither variable set and the module constants pointed into the temporary root.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from agent.cli import operator
from agent.cli.main import main
from agent.domain import config, credentials
from agent.outbox import snoozes
from tests.conftest import make_order
from tests.test_crash_recovery import Processes, free_port

pytestmark = pytest.mark.slow

SHIPPED_UNIT = Path(__file__).resolve().parent.parent / "systemd" / "venue-agent.service"
TOKEN = "intake-secret-value-7f3a"


@dataclass
class Box:
    """The temporary root and the places in it a command must find by itself."""

    root: Path
    port: int
    config: Path
    credential: Path
    dropin: Path
    state: Path
    procs: Processes

    @property
    def outbox(self) -> Path:
        """Return where the service keeps its outbox."""
        return self.state / "outbox.db"

    def start_agent(self) -> None:
        """Start ``venue-agent run`` as systemd would, and wait until it answers."""
        run_credentials = self.root / "run" / "credentials" / "venue-agent.service"
        run_credentials.mkdir(parents=True, exist_ok=True)
        (run_credentials / "intake-token").write_text(self.credential.read_text())
        env = {"STATE_DIRECTORY": str(self.state), "CREDENTIALS_DIRECTORY": str(run_credentials)}
        popen, log = self.procs.spawn("agent", "run", "--config", str(self.config), env=env)
        deadline = time.monotonic() + 15
        with httpx.Client(trust_env=False, timeout=2) as client:
            while True:
                if popen.poll() is not None:
                    pytest.fail(f"the agent exited with {popen.returncode}: {log.read_text()}")
                try:
                    response = client.get(f"http://127.0.0.1:{self.port}/v1/health", headers=self.auth)
                    if response.status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"the agent did not answer within 15 s: {log.read_text()}")
                time.sleep(0.05)

    @property
    def auth(self) -> dict[str, str]:
        """Return the intake's Authorization header."""
        return {"Authorization": f"Bearer {TOKEN}"}

    def agent_log(self) -> str:
        """Return what the agent logged."""
        return "".join(p.read_text(errors="replace") for p in self.procs.logs.glob("agent-*.log"))


@pytest.fixture(name="box")
def _box(tmp_path: Path, procs: Processes, monkeypatch: pytest.MonkeyPatch) -> Iterator[Box]:
    """Lay out an installed box under ``tmp_path/root`` and point the agent's lookups at it."""
    root = tmp_path / "root"
    etc = root / "etc" / "venue-agent"
    (etc / "credentials").mkdir(parents=True)
    credential = etc / "credentials" / "intake-token"
    credential.write_text(TOKEN + "\n")
    credential.chmod(0o600)
    lib_units, etc_units = root / "lib" / "systemd" / "system", root / "etc" / "systemd" / "system"
    lib_units.mkdir(parents=True)
    (lib_units / "venue-agent.service").write_text(SHIPPED_UNIT.read_text(encoding="utf-8"))
    dropin = etc_units / "venue-agent.service.d" / "override.conf"
    dropin.parent.mkdir(parents=True)
    dropin.write_text(f"[Service]\nLoadCredential=intake-token:{credential}\n")
    state = root / "var" / "lib" / "venue-agent"
    state.mkdir(parents=True)
    port = free_port()
    config_path = etc / "agent.toml"
    config_path.write_text(
        f"""
[venue]
id = "harbour-kitchen"
timezone = "Europe/London"
[intake]
listen = "127.0.0.1:{port}"
token_file = "intake-token"
[fallback]
print_after_seconds = 3600
[pos]
driver = "http"
timeout_seconds = 1
[pos.http]
url = "http://127.0.0.1:9/orders"
[[printers]]
name = "pass"
connection = "file"
path = "{tmp_path / "tickets.txt"}"
[discovery]
advertise = false
[logging]
format = "json"
""",
        encoding="utf-8",
    )
    for name in ("CREDENTIALS_DIRECTORY", "STATE_DIRECTORY", "VENUE_AGENT_CONFIG", "INVOCATION_ID", "JOURNAL_STREAM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(config, "SYSTEM_CONFIG", config_path)
    monkeypatch.setattr(credentials, "UNIT_DIRS", (etc_units, lib_units))
    monkeypatch.setattr(credentials, "CREDENTIALS_DIR", etc / "credentials")
    monkeypatch.setattr(operator, "STATE_ROOT", root / "var" / "lib")
    yield Box(root, port, config_path, credential, dropin, state, procs)


def test_every_operator_command_finds_the_secrets_and_the_outbox_by_itself(
    box: Box, capsys: pytest.CaptureFixture[str]
) -> None:
    """config check, status, orders, snoozes and doctor work with no --config and no systemd variables."""
    box.start_agent()
    with httpx.Client(trust_env=False, timeout=5) as client:
        response = client.post(f"http://127.0.0.1:{box.port}/v1/orders", json=make_order("ord_box"), headers=box.auth)
        assert response.status_code == 202
    capsys.readouterr()

    assert main(["config", "check"]) == 0
    out = capsys.readouterr().out
    assert f"{box.config}: OK" in out
    found_by = f"{box.credential} (LoadCredential=intake-token in {box.dropin})"
    assert f"secret       intake.token_file = 'intake-token': {found_by}, readable" in out
    assert f"outbox       {box.outbox} (the service's state directory {box.state}" in out

    assert main(["status"]) == 0
    assert "READY" in capsys.readouterr().out

    assert main(["orders", "list"]) == 0
    assert "ord_box" in capsys.readouterr().out

    assert main(["snoozes", "list"]) == 0
    assert f"venue-agent: outbox {box.outbox} (the service's state directory" in capsys.readouterr().err

    assert main(["doctor", "--json"]) == 2  # the POS (port 9) is down: that is a failure, and the only one
    report = json.loads(capsys.readouterr().out)
    levels = {c["check"]: c["level"] for c in report["checks"]}
    assert report["outbox"] == str(box.outbox)
    assert levels["config"] == levels["secret"] == levels["agent"] == levels["outbox"] == "ok"
    assert levels["pos"] == "fail"
    assert TOKEN not in json.dumps(report)


def test_a_user_who_cannot_read_the_token_still_lists_orders_from_the_outbox(
    box: Box, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the intake token, read-only commands fall back to the outbox file and say why; changes say sudo."""
    box.start_agent()
    with httpx.Client(trust_env=False, timeout=5) as client:
        response = client.post(f"http://127.0.0.1:{box.port}/v1/orders", json=make_order("ord_box"), headers=box.auth)
        assert response.status_code == 202
    box.credential.unlink()  # what a non-root technician meets: the root-only file cannot be read
    capsys.readouterr()

    assert main(["orders", "list"]) == 0
    captured = capsys.readouterr()
    assert "ord_box" in captured.out
    assert "cannot read intake.token_file" in captured.err and "reading the outbox file instead" in captured.err
    assert f"venue-agent: outbox {box.outbox}" in captured.err

    assert main(["orders", "show", "ord_box"]) == 0
    assert "2 x Margherita" in capsys.readouterr().out

    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "agent: RUNNING, but" in out and "cannot read intake.token_file" in out and "queued" in out

    assert main(["config", "show"]) == 0
    assert 'token_file = "intake-token"' in capsys.readouterr().out

    assert main(["orders", "cancel", "ord_box"]) == 1
    assert "run the command with sudo" in capsys.readouterr().err

    assert main(["config", "check"]) == 2  # as root a missing secret is a real problem
    assert f"cannot read token_file '{box.credential}'" in capsys.readouterr().err


def test_config_check_names_a_credential_the_unit_does_not_hand_over(
    box: Box, capsys: pytest.CaptureFixture[str]
) -> None:
    """A secret found in /etc/venue-agent/credentials but missing from LoadCredential= fails the check."""
    box.dropin.unlink()
    assert main(["config", "check"]) == 2
    err = capsys.readouterr().err
    assert "intake.token_file: the service gets no credential 'intake-token'" in err
    assert f"LoadCredential=intake-token:{box.credential}" in err


def test_snoozes_clear_goes_through_the_running_agent(box: Box, capsys: pytest.CaptureFixture[str]) -> None:
    """With the agent running, ``snoozes clear`` asks it (no second writer) and it logs the release."""
    box.start_agent()
    now = datetime.now(UTC)
    conn = sqlite3.connect(box.outbox, timeout=10)
    with conn:
        snoozes.snooze(conn, ["PA-LOB"], until=now + timedelta(hours=3), source="lightspeed", reason="x", now=now)
    conn.close()
    capsys.readouterr()
    assert main(["snoozes", "clear", "PA-LOB", "NOPE"]) == 0
    captured = capsys.readouterr()
    assert "released: PA-LOB" in captured.out and "not snoozed: NOPE" in captured.err
    assert "venue-agent: outbox" not in captured.err  # the file was not opened by the command
    deadline = time.monotonic() + 5
    while "snoozes_cleared" not in box.agent_log():
        assert time.monotonic() < deadline, box.agent_log()
        time.sleep(0.05)
    with httpx.Client(base_url=f"http://127.0.0.1:{box.port}", trust_env=False, headers=box.auth) as client:
        for body in ({}, {"skus": []}, {"skus": ["A"], "all": True}, {"all": "yes"}, [1]):
            assert client.post("/v1/snoozes/clear", json=body).status_code == 422, body
        assert client.post("/v1/snoozes/clear", json={"all": True}).json() == {"released": [], "not_snoozed": []}


def test_a_member_of_the_group_gets_a_warning_not_a_failure_for_a_root_only_secret(
    box: Box, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a non-root user a root-only secret cannot be checked: config check says so and still exits 0.

    This machine runs the tests as root, for whom no file is unreadable: the permission refusal is simulated.
    """
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    monkeypatch.setattr(operator, "_denied", lambda path: True)
    box.credential.unlink()
    assert main(["config", "check"]) == 0
    out = capsys.readouterr().out
    assert "intake.token_file: cannot check" in out and "run 'sudo venue-agent config check'" in out
    assert "token set (not readable by this user)" in out
    assert main(["doctor", "--json"]) == 2  # the agent is not running: that fails; the secret only warns
    secret = next(c for c in json.loads(capsys.readouterr().out)["checks"] if c["check"] == "secret")
    assert secret["level"] == "warn" and "sudo venue-agent doctor" in secret["todo"]
