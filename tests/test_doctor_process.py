"""``venue-agent doctor`` against real parts: the agent and pos-sim as processes, a fake ESC/POS printer on TCP 9100
(tests/fake_printer.py), a real mosquitto. Doctor itself runs as a process, as a technician runs it.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import sys
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import make_order
from tests.fake_printer import FakeNetworkPrinter
from tests.mosquitto import BrokerTLS, Mosquitto, StartBroker, _start_broker  # noqa: F401 - registers the fixture
from tests.test_crash_recovery import Processes, SimProcess, _child_env, free_port, poll
from tests.tls_ca import make_ca

pytestmark = pytest.mark.slow

TOKEN = "intake-token-9c1e-secret"
MQTT_PASSWORD = "mqtt-password-4b2d-secret"


@dataclass
class Venue:
    """A running venue: agent, POS simulator, printer, broker, and the config doctor reads."""

    config: Path
    agent_port: int
    sim: SimProcess
    printer: FakeNetworkPrinter
    broker: Mosquitto
    client: httpx.AsyncClient

    async def post_order(self, order_id: str) -> None:
        """Submit one order through intake."""
        response = await self.client.post(
            f"http://127.0.0.1:{self.agent_port}/v1/orders",
            json=make_order(order_id),
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert response.status_code == 202, response.text


def write_config(
    tmp_path: Path, *, agent_port: int, sim_port: int, printer_port: int, broker_port: int, mqtt_extra: str = ""
) -> Path:
    """Write the venue's config: a token file, an MQTT password, a network printer, the simulator as POS."""
    token_file = tmp_path / "intake-token"
    token_file.write_text(TOKEN + "\n")
    path = tmp_path / "agent.toml"
    path.write_text(
        f"""
[venue]
id = "harbour-kitchen"
timezone = "Europe/London"
[storage]
path = "{tmp_path / "outbox.db"}"
[intake]
listen = "127.0.0.1:{agent_port}"
token_file = "{token_file}"
[fallback]
print_after_seconds = 3600
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
[mqtt]
enabled = true
host = "127.0.0.1"
port = {broker_port}
username = "harbour-kitchen"
password = "{MQTT_PASSWORD}"
{mqtt_extra}
[discovery]
advertise = false
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture(name="venue")
async def _venue(tmp_path: Path, procs: Processes, start_broker: StartBroker) -> AsyncIterator[Venue]:
    """Start every part and wait until the agent answers."""
    broker = start_broker()
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client, FakeNetworkPrinter.running() as printer:
        sim = SimProcess(procs, client)
        await sim.start()
        agent_port = free_port()
        config = write_config(
            tmp_path, agent_port=agent_port, sim_port=sim.port, printer_port=printer.port, broker_port=broker.port
        )
        popen, log = procs.spawn("agent", "run", "--config", str(config))

        async def ready() -> bool:
            if popen.poll() is not None:
                pytest.fail(f"the agent exited: {log.read_text()}")
            try:
                headers = {"Authorization": f"Bearer {TOKEN}"}
                response = await client.get(f"http://127.0.0.1:{agent_port}/v1/health", headers=headers)
            except httpx.TransportError:
                return False
            return response.status_code == 200

        await poll(ready, timeout=15, what="agent ready")
        yield Venue(config, agent_port, sim, printer, broker, client)


async def doctor(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``venue-agent doctor`` in a process without blocking the fake printer's event loop."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent.cli.main",
        "doctor",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**_child_env(), **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def levels(report: dict[str, Any]) -> dict[str, str]:
    """Return check name -> level from ``doctor --json``."""
    return {c["check"]: c["level"] for c in report["checks"]}


async def test_everything_ok(venue: Venue) -> None:
    """A healthy venue: every check ok (the clock is whatever this machine's is), one line each, exit 0."""
    await venue.post_order("ord_ok")
    code, out, _ = await doctor("--config", str(venue.config), "--json")
    report = json.loads(out)
    found = levels(report)
    assert set(found) == {
        "config",
        "secret",
        "agent",
        "outbox",
        "orders",
        "disk",
        "clock",
        "pos",
        "printer pass",
        "mqtt",
    }
    assert {k: v for k, v in found.items() if k != "clock"} == dict.fromkeys(set(found) - {"clock"}, "ok")
    assert code == (0 if found["clock"] == "ok" else 1) == report["exit"]
    details = {c["check"]: c["detail"] for c in report["checks"]}
    assert "ready" in details["pos"] and "CP858: ready" in details["printer pass"]
    assert "ACL lets it publish to venues/harbour-kitchen/status" in details["mqtt"]
    assert "the agent's status there: online" in details["mqtt"]
    assert venue.printer.queries > 0  # it really asked the printer (DLE EOT)

    code, out, _ = await doctor("--config", str(venue.config))
    lines = [line for line in out.splitlines() if not line.startswith(" ")]
    assert len(lines) == len(found)
    for line in lines:  # "<level padded to 5> <check padded to 16> <detail>"
        assert line[:6] in ("ok    ", "warn  ", "fail  ") and line[6:22].rstrip() in found, line
        assert line[22] == " " and line[23] != " ", line
    assert ("what to do:" in out) == (found["clock"] != "ok")


async def test_failures_say_what_to_do(venue: Venue) -> None:
    """POS down, printer offline, broker unreachable, disk below storage.min_free_mb: each fails; exit 2."""
    await venue.sim.faults(down=True)
    await venue.printer.stop()
    venue.broker.stop()
    env = {"VENUE_AGENT_STORAGE__MIN_FREE_MB": str(100 * 1024 * 1024)}  # 100 TB: more than any disk here
    code, out, _ = await doctor("--config", str(venue.config), env=env)
    assert code == 2
    for check in ("pos", "printer pass", "mqtt", "disk"):
        line = next(line for line in out.splitlines() if re.match(rf"^\w+ +{check} ", line))
        assert line.startswith("fail"), line
    assert "NOT REACHABLE" in out and "OFFLINE: connection refused" in out and "REFUSING ORDERS NOW" in out
    assert "Connection refused" in out  # the broker
    assert out.count("what to do:") >= 4


async def test_a_broker_acl_that_refuses_the_status_topic_fails(tmp_path: Path, start_broker: StartBroker) -> None:
    """Connected, but the broker's ACL lets the venue only read: the MQTT 5 PUBACK refusal is a failure."""
    broker = start_broker(acl="topic read venues/#\n")
    config = write_config(tmp_path, agent_port=9, sim_port=9, printer_port=9, broker_port=broker.port)
    code, out, _ = await doctor("--config", str(config), "--json")
    mqtt = next(c for c in json.loads(out)["checks"] if c["check"] == "mqtt")
    assert mqtt["level"] == "fail" and "refused the publish to venues/harbour-kitchen/status" in mqtt["detail"]
    assert "ACL" in mqtt["todo"] and code == 2


async def test_tls_with_the_wrong_ca_fails_and_with_the_right_one_passes(
    tmp_path: Path, start_broker: StartBroker
) -> None:
    """A broker certificate from another CA than mqtt.ca_file is a TLS failure; the right CA connects."""
    real, impostor = make_ca(tmp_path / "ca"), make_ca(tmp_path / "other-ca", "someone else")
    server = real.server()
    broker = start_broker(tls=BrokerTLS(real.cert, server.cert, server.key))
    results = {}
    for name, ca in (("wrong", impostor), ("right", real)):
        directory = tmp_path / name
        directory.mkdir()
        extra = f'tls = true\nca_file = "{ca.cert}"'
        config = write_config(
            directory, agent_port=9, sim_port=9, printer_port=9, broker_port=broker.port, mqtt_extra=extra
        )
        _, out, _ = await doctor("--config", str(config), "--json")
        results[name] = next(c for c in json.loads(out)["checks"] if c["check"] == "mqtt")
    assert results["wrong"]["level"] == "fail" and "TLS failed" in results["wrong"]["detail"]
    assert "ca_file" in results["wrong"]["todo"]
    assert results["right"]["level"] == "ok" and "(TLS)" in results["right"]["detail"]


def read_bundle(path: Path) -> dict[str, str]:
    """Return every member of a bundle by name."""
    with tarfile.open(path, "r:gz") as archive:
        return {
            m.name.removeprefix("venue-agent-doctor/"): archive.extractfile(m).read().decode()  # type: ignore[union-attr]
            for m in archive.getmembers()
        }


async def test_bundle_has_no_secret_and_customer_data_only_on_request(venue: Venue, tmp_path: Path) -> None:
    """The archive holds the redacted config, the report, the journal (or a note) and outbox statistics."""
    await venue.post_order("ord_bundle")
    bundle = tmp_path / "support.tar.gz"
    code, _, err = await doctor("--config", str(venue.config), "--bundle", str(bundle))
    assert code in (0, 1) and f"wrote {bundle}" in err
    assert bundle.stat().st_mode & 0o777 == 0o600
    files = read_bundle(bundle)
    assert {"README.txt", "doctor.txt", "doctor.json", "config.toml", "config-check.json", "outbox-stats.json"} <= set(
        files
    )
    assert "journal.jsonl" in files or "journal-note.txt" in files
    assert "orders.json" not in files
    everything = "".join(files.values())
    assert TOKEN not in everything and MQTT_PASSWORD not in everything
    assert "Sam Reed" not in everything and "+447700900123" not in everything
    stats = json.loads(files["outbox-stats.json"])
    assert stats["rows"]["orders"] == 1 and sum(stats["orders_by_state"].values()) == 1
    assert 'password = "***"' in files["config.toml"]
    assert json.loads(files["doctor.json"])["checks"][0]["check"] == "config"

    with_orders = tmp_path / "with-orders.tar.gz"
    await doctor("--config", str(venue.config), "--bundle", str(with_orders), "--with-orders")
    files = read_bundle(with_orders)
    assert "Sam Reed" in files["orders.json"] and json.loads(files["orders.json"])[0]["order_id"] == "ord_bundle"
    assert TOKEN not in "".join(files.values()) and MQTT_PASSWORD not in "".join(files.values())


async def test_a_config_that_does_not_load_still_gets_a_redacted_bundle(tmp_path: Path) -> None:
    """A broken config fails (exit 2) and its bundle carries the file's keys with every secret value replaced."""
    path = tmp_path / "agent.toml"
    path.write_text('[venue]\nid = "Bad Id"\n[intake]\ntoken = "inline-secret-value"\n[pos]\ndriver = "http"\n')
    bundle = tmp_path / "b.tar.gz"
    code, out, _ = await doctor("--config", str(path), "--bundle", str(bundle))
    assert code == 2 and out.startswith("fail  config") and "venue.id" in out
    files = read_bundle(bundle)
    assert "inline-secret-value" not in "".join(files.values())
    assert 'token = "***"' in files["config-invalid-redacted.toml"]


def _stored_refresh_token(outbox: Path) -> str | None:
    conn = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT value FROM kv WHERE key = 'pos.lightspeed_k.45454545.refresh_token'").fetchone()
    finally:
        conn.close()
    return str(row[0]) if row else None


async def test_lightspeed_is_probed_with_the_agents_token_and_never_rotated(tmp_path: Path, procs: Processes) -> None:
    """Doctor reads the cached access token; it never spends the single-use refresh token (only the agent may)."""
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        sim = SimProcess(procs, client)
        await sim.start()
        port = free_port()
        config = tmp_path / "agent.toml"
        config.write_text(
            f"""
[venue]
id = "harbour-kitchen"
timezone = "Europe/London"
[storage]
path = "{tmp_path / "outbox.db"}"
[intake]
listen = "127.0.0.1:{port}"
[pos]
driver = "lightspeed_k"
timeout_seconds = 2
[pos.lightspeed_k]
base_url = "{sim.base}"
business_location_id = 45454545
client_id = "venue-agent"
client_secret = "client-secret"
refresh_token = "seed-refresh-token"
endpoint_id = "venue-agent-hook"
[discovery]
advertise = false
""",
            encoding="utf-8",
        )

        async def tokens_issued() -> int:
            return int((await client.get(f"{sim.base}/_sim/lightspeed")).json()["live_access_tokens"])

        _, out, _ = await doctor("--config", str(config), "--json")
        pos = next(c for c in json.loads(out)["checks"] if c["check"] == "pos")
        assert pos["level"] == "warn" and "single-use" in pos["detail"] and "start the agent" in pos["todo"]
        assert await tokens_issued() == 0  # the seed was not spent

        popen, log = procs.spawn("agent", "run", "--config", str(config))

        async def agent_has_a_token() -> bool:
            assert popen.poll() is None, log.read_text()
            return await tokens_issued() == 1 and _stored_refresh_token(tmp_path / "outbox.db") is not None

        await poll(agent_has_a_token, timeout=15, what="the agent's first token refresh")
        stored = _stored_refresh_token(tmp_path / "outbox.db")
        _, out, _ = await doctor("--config", str(config), "--json")
        pos = next(c for c in json.loads(out)["checks"] if c["check"] == "pos")
        assert pos["level"] == "ok" and "lightspeed_k: ready" in pos["detail"], pos
        assert await tokens_issued() == 1 and _stored_refresh_token(tmp_path / "outbox.db") == stored
