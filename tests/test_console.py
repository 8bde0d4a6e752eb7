"""The fleet console: the pure fold and table, the command against a real Mosquitto, and the example ACL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from agent.cli.main import build_parser, main
from agent.fleet import watch as watch_module
from agent.fleet.console import connection_from_args
from agent.fleet.model import Fleet
from agent.fleet.screen import as_json, render_table
from agent.fleet.watch import Connection, split_broker, watch, watch_live
from tests.conftest import eventually

# _broker and _start_broker are fixtures: importing them registers "broker" and "start_broker" here.
from tests.mosquitto import BrokerTLS, Mosquitto, StartBroker, _broker, _start_broker  # noqa: F401
from tests.tls_ca import TestCA, _test_ca  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_ACL = REPO / "config" / "mosquitto" / "venue-agent-acl.conf"
NOW = 1_795_000_000.0  # 2026-11-18T...Z; the fold takes time as an argument
MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
needs_mosquitto = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(epoch))


def status(state: str, boot_id: str, seq: int, since: float = NOW - 600) -> bytes:
    body = {"state": state, "since": iso(since), "version": "0.1.0", "boot_id": boot_id, "seq": seq}
    return json.dumps(body).encode()


def health(**overrides: Any) -> bytes:
    body: dict[str, Any] = {
        "ts": iso(NOW),
        "uptime_s": 600,
        "version": "0.1.0",
        "outbox": {"held": 0, "scheduled": 1, "queued": 2, "retrying": 1, "awaiting_pos": 0, "failed": 1},
        "oldest_pending_age_s": 95.0,
        "pos": {"driver": "square", "state": "degraded", "latency_ms": 850, "circuit": "half_open"},
        "printers": [{"name": "kitchen", "state": "ok"}, {"name": "bar", "state": "paper_out"}],
        "disk_free_mb": 5120,
        "seq": 3,
    }
    body.update(overrides)
    return json.dumps(body).encode()


def alert(name: str, at: float) -> bytes:
    return json.dumps(
        {
            "ts": iso(at),
            "alert": name,
            "severity": "high",
            "order": {"id": "ord_1", "display_code": "A17"},
            "reason": "POS refused",
            "action": "enter it by hand",
        }
    ).encode()


# ---- the pure fold ---------------------------------------------------------------------------------------------------


def test_birth_makes_a_venue_online() -> None:
    fleet = Fleet("venues")
    fleet.apply("venues/harbour-kitchen/status", status("online", "boot-a", 0), now=NOW)
    row = fleet.venues["harbour-kitchen"]
    assert (row.state, row.boot_id, row.seq, row.version) == ("online", "boot-a", 0, "0.1.0")
    assert row.last_seen == NOW
    assert "online" in render_table(fleet.rows(), NOW)


def test_health_fills_outbox_pos_printers_and_disk() -> None:
    fleet = Fleet("venues")
    fleet.apply("venues/harbour-kitchen/health", health(), now=NOW)
    row = fleet.venues["harbour-kitchen"]
    assert row.state == "unknown"  # health without a status yet
    assert row.pending == 4
    assert row.outbox["failed"] == 1
    assert row.oldest_pending_age_s == 95.0
    assert row.pos["state"] == "degraded"
    assert row.printers_not_ok == ["bar:paper_out"]
    assert row.disk_free_mb == 5120
    line = render_table(fleet.rows(), NOW).splitlines()[1]
    assert "4/1" in line and "1m" in line and "degraded/half_open" in line and "bar:paper_out" in line


def test_alerts_stay_open_with_their_action_until_the_next_birth() -> None:
    fleet = Fleet("venues")
    fleet.apply("venues/hk/status", status("online", "boot-a", 0), now=NOW)
    for i, name in enumerate(["order_failed", "printer_paper_out", "disk_low", "pos_auth_required"]):
        fleet.apply("venues/hk/alerts", alert(name, NOW - 300 + i * 60), now=NOW)
    row = fleet.venues["hk"]
    assert row.open_alerts == 4
    table = render_table(fleet.rows(), NOW)
    assert "4 pos_auth_required(2m),disk_low(3m),printer_paper_out(4m)" in table
    # Every open alert is on its own line under its venue, newest first, with what to do.
    assert table.splitlines()[2] == "    ! pos_auth_required 2m ago: #A17 POS refused -> enter it by hand"
    assert len([line for line in table.splitlines() if line.startswith("    ! ")]) == 4
    first = as_json(fleet.rows())[0]["open_alerts"][0]
    assert (first["alert"], first["ts"], first["action"]) == ("pos_auth_required", iso(NOW - 120), "enter it by hand")

    fleet.apply("venues/hk/status", status("online", "boot-a", 0), now=NOW + 1)  # a duplicate birth
    assert fleet.venues["hk"].open_alerts == 4
    fleet.apply("venues/hk/status", status("online", "boot-b", 0, since=NOW + 5), now=NOW + 5)  # a restart
    assert fleet.venues["hk"].alerts == []


def test_a_stale_will_from_the_previous_boot_is_ignored() -> None:
    fleet = Fleet("venues")
    fleet.apply("venues/hk/status", status("online", "boot-a", 0), now=NOW)
    fleet.apply("venues/hk/status", status("online", "boot-b", 0, since=NOW + 10), now=NOW + 10)
    fleet.apply("venues/hk/status", status("offline", "boot-a", 0, since=NOW + 11), now=NOW + 11)
    row = fleet.venues["hk"]
    assert (row.state, row.boot_id, row.since) == ("online", "boot-b", iso(NOW + 10))
    assert row.last_seen == NOW + 11  # the broker still heard of the venue


def test_a_stale_will_from_an_earlier_connection_of_the_same_boot_is_ignored() -> None:
    fleet = Fleet("venues")
    fleet.apply("venues/hk/status", status("online", "boot-a", 2), now=NOW)
    fleet.apply("venues/hk/status", status("offline", "boot-a", 1), now=NOW + 1)
    assert fleet.venues["hk"].state == "online"


def test_a_real_offline_after_online_is_shown() -> None:
    fleet = Fleet("venues")
    fleet.apply("venues/hk/status", status("online", "boot-a", 2), now=NOW)
    fleet.apply("venues/hk/status", status("offline", "boot-a", 2, since=NOW + 30), now=NOW + 30)
    row = fleet.venues["hk"]
    assert (row.state, row.since) == ("offline", iso(NOW + 30))
    # And back online after a reconnect of the same boot.
    fleet.apply("venues/hk/status", status("online", "boot-a", 3, since=NOW + 60), now=NOW + 60)
    assert fleet.venues["hk"].state == "online"


def test_offline_and_alerting_venues_sort_first() -> None:
    fleet = Fleet("venues")
    fleet.apply("venues/a-fine/status", status("online", "b1", 0), now=NOW)
    fleet.apply("venues/b-alerting/status", status("online", "b2", 0), now=NOW)
    fleet.apply("venues/b-alerting/alerts", alert("order_failed", NOW - 5), now=NOW)
    fleet.apply("venues/c-offline/status", status("offline", "b3", 0), now=NOW)
    fleet.apply("venues/0-also-offline/status", status("offline", "b4", 0), now=NOW)
    assert [r["venue"] for r in as_json(fleet.rows())] == ["0-also-offline", "c-offline", "b-alerting", "a-fine"]
    lines = [line for line in render_table(fleet.rows(), NOW).splitlines() if not line.startswith("    ! ")]
    assert lines[0].startswith("VENUE")
    assert [line.split()[0] for line in lines[1:]] == ["0-also-offline", "c-offline", "b-alerting", "a-fine"]
    # Fixed width: the state column starts at the same offset on every line.
    assert [line[21:].split()[0] for line in lines] == ["STATE", "offline", "offline", "online", "online"]


def test_unusable_topics_and_payloads_are_ignored() -> None:
    fleet = Fleet("acme/venues")
    fleet.apply("acme/venues/hk/status", b"not json", now=NOW)
    fleet.apply("other/hk/status", status("online", "b", 0), now=NOW)
    fleet.apply("acme/venues/hk/cmd/status", b"{}", now=NOW)
    fleet.apply("acme/venues/hk/status", b"[1, 2]", now=NOW)
    assert fleet.venues == {}
    assert fleet.ignored == 4
    fleet.apply("acme/venues/hk/events", b'{"type": "order_state"}', now=NOW)
    assert fleet.venues["hk"].last_seen == NOW


def test_split_broker() -> None:
    assert split_broker("broker.example", 1883) == ("broker.example", 1883)
    assert split_broker("broker.example:8883", 1883) == ("broker.example", 8883)
    assert split_broker("[::1]:1884", 1883) == ("::1", 1884)
    with pytest.raises(ValueError, match="broker"):
        split_broker("host:0", 1883)


def test_defaults_come_from_the_config_mqtt_section_and_flags_win(tmp_path: Path) -> None:
    text = (REPO / "config" / "example.toml").read_text(encoding="utf-8")
    mqtt_at = text.index("[mqtt]")
    head, mqtt = text[:mqtt_at], text[mqtt_at:]
    mqtt = mqtt.replace('# host = "mqtt.example.net"', 'host = "mqtt.example.net"\nusername = "ops-console"', 1)
    mqtt = mqtt.replace("tls = false", "tls = true", 1)
    config = tmp_path / "agent.toml"
    config.write_text(head + mqtt, encoding="utf-8")
    (tmp_path / "pw").write_text("s3cret\n")

    conn = connection_from_args(build_parser().parse_args(["console", "--config", str(config)]))
    assert (conn.host, conn.port, conn.tls, conn.username, conn.prefix) == (
        "mqtt.example.net",
        8883,
        True,
        "ops-console",
        "venues",
    )
    args = ["console", "--config", str(config), "--broker", "127.0.0.1:1884", "--prefix", "acme/venues/"]
    conn = connection_from_args(
        build_parser().parse_args([*args, "--username", "me", "--password-file", str(tmp_path / "pw")])
    )
    assert (conn.host, conn.port, conn.prefix, conn.username, conn.password) == (
        "127.0.0.1",
        1884,
        "acme/venues",
        "me",
        "s3cret",
    )


def test_client_certificate_from_flags_or_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VENUE_AGENT_CONFIG", str(tmp_path / "absent.toml"))  # no config unless --config
    text = (REPO / "config" / "example.toml").read_text(encoding="utf-8")
    mqtt_at = text.index("[mqtt]")
    head, mqtt = text[:mqtt_at], text[mqtt_at:]
    mqtt = mqtt.replace('# host = "mqtt.example.net"', 'host = "mqtt.example.net"', 1)
    mqtt = mqtt.replace("tls = false", "tls = true", 1)
    mqtt = mqtt.replace("# cert_file", "cert_file", 1).replace("# key_file", "key_file", 1)
    config = tmp_path / "agent.toml"
    config.write_text(head + mqtt, encoding="utf-8")

    conn = connection_from_args(build_parser().parse_args(["console", "--config", str(config)]))
    assert (conn.tls, conn.port) == (True, 8883)
    assert (conn.cert_file, conn.key_file) == (Path("/etc/venue-agent/client.pem"), Path("/etc/venue-agent/client.key"))
    flags = ["--cert-file", "ops.pem", "--key-file", "ops.key"]
    conn = connection_from_args(build_parser().parse_args(["console", "--config", str(config), *flags]))
    assert (conn.cert_file, conn.key_file) == (Path("ops.pem"), Path("ops.key"))
    # A client certificate means TLS, and so the TLS port, even without --tls.
    conn = connection_from_args(build_parser().parse_args(["console", "--broker", "mqtt.example.net", *flags]))
    assert (conn.tls, conn.port, conn.cert_file) == (True, 8883, Path("ops.pem"))

    assert main(["console", "--broker", "mqtt.example.net", "--key-file", "ops.key", "--once", "0"]) == 2
    assert "--cert-file" in capsys.readouterr().err
    missing = tmp_path / "missing.pem"
    assert main(["console", "--broker", f"127.0.0.1:{free_port()}", "--cert-file", str(missing), "--once", "0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: MQTT broker 127.0.0.1:") and f"client certificate {missing}:" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("mode", [["--once", "0.5"], []], ids=["once", "live"])
def test_an_unreachable_broker_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], mode: list[str]
) -> None:
    """Once or live, a broker that is not there at the start is a one-line error and exit 1, not a retry loop."""
    monkeypatch.setenv("VENUE_AGENT_CONFIG", "/nonexistent/agent.toml")
    code = main(["console", "--broker", f"127.0.0.1:{free_port()}", *mode])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: MQTT broker 127.0.0.1:")
    assert err.count("\n") == 1


def test_no_broker_anywhere_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VENUE_AGENT_CONFIG", "/nonexistent/agent.toml")
    assert main(["console", "--once", "0"]) == 2
    assert "--broker" in capsys.readouterr().err


# ---- against a real broker -------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def mosquitto(tmp_path: Path, extra: str = "allow_anonymous true\n") -> Iterator[tuple[int, Path]]:
    """Run Mosquitto on a free loopback port; yield (port, log file)."""
    assert MOSQUITTO is not None
    port = free_port()
    log = tmp_path / "mosquitto.log"
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        # Run as whoever runs the tests: as root, Mosquitto would otherwise switch to a `mosquitto` user.
        f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
        f"log_dest file {log}\nlog_type all\n{extra}"
    )
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    pytest.fail(f"mosquitto did not start: {err} {log.read_text() if log.exists() else ''}")
                time.sleep(0.05)
        yield port, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


@asynccontextmanager
async def client(port: int, username: str | None = None, password: str | None = None) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client("127.0.0.1", port, username=username, password=password, timeout=5) as c:
        yield c


async def wait_for_log(log: Path, text: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while text not in (log.read_text(errors="replace") if log.exists() else ""):
        assert time.monotonic() < deadline, f"{text!r} never appeared in the broker log"
        await asyncio.sleep(0.05)


@needs_mosquitto
async def test_console_once_json_against_a_real_broker(tmp_path: Path) -> None:
    with mosquitto(tmp_path) as (port, log):
        async with client(port) as pub:
            await pub.publish("venues/harbour-kitchen/status", status("online", "boot-a", 0), qos=1, retain=True)
            await pub.publish("venues/harbour-kitchen/health", health(), qos=1, retain=True)
            await pub.publish("venues/dock-diner/status", status("offline", "boot-z", 4), qos=1, retain=True)
            await pub.publish("venues/dock-diner/health", health(printers=[]), qos=1, retain=True)

            env = {**os.environ, "VENUE_AGENT_CONFIG": str(tmp_path / "absent.toml")}
            proc = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "agent.cli.main", "console", "--broker", f"127.0.0.1:{port}"),
                *("--once", "1.5", "--json"),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
            # Alerts are not retained: send this one once the console has subscribed to them.
            await wait_for_log(log, "venues/+/alerts", timeout=10)
            await pub.publish("venues/harbour-kitchen/alerts", alert("order_failed", time.time()), qos=1)
            out, err = await asyncio.wait_for(proc.communicate(), 15)

    assert proc.returncode == 0, err.decode()
    rows = json.loads(out)
    assert [r["venue"] for r in rows] == ["dock-diner", "harbour-kitchen"]
    diner, kitchen = rows
    assert (diner["state"], diner["boot_id"], diner["seq"], diner["printers_not_ok"]) == ("offline", "boot-z", 4, [])
    assert (kitchen["state"], kitchen["boot_id"]) == ("online", "boot-a")
    assert kitchen["pending"] == 4 and kitchen["outbox"]["failed"] == 1
    assert kitchen["pos"]["state"] == "degraded"
    assert kitchen["printers_not_ok"] == ["bar:paper_out"]
    assert [a["alert"] for a in kitchen["open_alerts"]] == ["order_failed"]


@needs_mosquitto
@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd is not installed")
async def test_example_acl_isolates_venues(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    users = {"ops-console": "ops-pw", "harbour-kitchen": "hk-pw", "other-venue": "ov-pw"}
    for i, (user, password) in enumerate(users.items()):
        flags = ["-c", "-b"] if i == 0 else ["-b"]
        subprocess.run(["mosquitto_passwd", *flags, str(passwd), user, password], check=True, capture_output=True)
    passwd.chmod(0o600)
    extra = f"allow_anonymous false\npassword_file {passwd}\nacl_file {EXAMPLE_ACL}\n"

    with mosquitto(tmp_path, extra) as (port, _):
        async with (
            client(port, "ops-console", "ops-pw") as ops,
            client(port, "harbour-kitchen", "hk-pw") as venue,
        ):
            await ops.subscribe("venues/#", qos=1)
            await venue.subscribe("venues/+/cmd/#", qos=1)
            # The forbidden publish goes first, so by the time the allowed one arrives it would have too.
            await venue.publish("venues/other-venue/status", b'{"state":"offline","spoofed":true}', qos=1)
            await venue.publish("venues/harbour-kitchen/status", status("online", "boot-a", 0), qos=1)
            await ops.publish("venues/other-venue/cmd/status", b"{}", qos=1)
            await ops.publish("venues/harbour-kitchen/cmd/status", b"{}", qos=1)

            async def until(c: aiomqtt.Client, topic: str) -> list[str]:
                seen: list[str] = []
                async for message in c.messages:
                    seen.append(str(message.topic))
                    if seen[-1] == topic:
                        break
                return seen

            ops_seen = await asyncio.wait_for(until(ops, "venues/harbour-kitchen/status"), 5)
            venue_seen = await asyncio.wait_for(until(venue, "venues/harbour-kitchen/cmd/status"), 5)

    # Each forbidden message was sent before the allowed one that was received, so it was dropped, not late.
    assert "venues/other-venue/status" not in ops_seen
    assert venue_seen == ["venues/harbour-kitchen/cmd/status"]


# ---- reconnecting, and TLS with a client certificate --------------------------------------------------------------


class Lines:
    """Every line a stream has produced so far, read in the background."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.lines: list[str] = []
        self.task = asyncio.create_task(self._read(stream))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        async for line in stream:
            self.lines.append(line.decode().rstrip("\n"))

    async def wait(self, accept: Callable[[list[str]], bool], timeout: float = 10) -> list[str]:
        """Wait until ``accept(lines)`` holds; return the lines."""

        async def probe() -> list[str]:
            return list(self.lines)

        result: list[str] = await eventually(probe, accept, timeout=timeout)
        return result


def venues(lines: list[str]) -> dict[str, str]:
    """Venue -> state in the latest JSON redraw of a live console."""
    return {row["venue"]: row["state"] for row in json.loads(lines[-1])} if lines else {}


async def run_console(*args: str, tmp_path: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "VENUE_AGENT_CONFIG": str(tmp_path / "absent.toml")}
    return await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "agent.cli.main", "console", *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )


async def test_live_console_survives_a_broker_restart(tmp_path: Path, broker: Mosquitto) -> None:
    """Live: a broker restart is a line on stderr; the console reconnects, keeps what it knew and sees new venues."""
    async with client(broker.port) as pub:
        await pub.publish("venues/harbour-kitchen/status", status("online", "boot-a", 0), qos=1, retain=True)
    proc = await run_console("--broker", f"127.0.0.1:{broker.port}", "--json", tmp_path=tmp_path)
    assert proc.stdout is not None and proc.stderr is not None
    out, err = Lines(proc.stdout), Lines(proc.stderr)
    try:
        await out.wait(lambda lines: venues(lines) == {"harbour-kitchen": "online"})
        broker.stop()  # this broker keeps nothing: after the restart it no longer holds harbour-kitchen's status
        await err.wait(lambda lines: len(lines) >= 1)
        broker.start()
        async with client(broker.port) as pub:
            await pub.publish("venues/dock-diner/status", status("online", "boot-z", 1), qos=1, retain=True)
        await out.wait(lambda lines: venues(lines) == {"dock-diner": "online", "harbour-kitchen": "online"})
        assert proc.returncode is None
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()
        await asyncio.gather(out.task, err.task)
    lost, *retries, back = err.lines
    assert re.fullmatch(r"broker lost: .+; reconnecting in 1 s", lost), err.lines
    assert all(line.startswith("reconnect failed: ") for line in retries)  # none, unless this machine is slow
    assert back == f"reconnected to 127.0.0.1:{broker.port}"


async def test_live_reconnect_backs_off_doubling_to_a_cap(broker: Mosquitto) -> None:
    """While the broker stays away each retry is one line, the wait doubling to the cap; reconnecting resets it."""
    notices: list[str] = []
    fleet = Fleet()

    async def known() -> set[str]:
        return set(fleet.venues)

    async def seen() -> list[str]:
        return list(notices)

    async def announce(venue: str) -> None:
        async with client(broker.port) as pub:
            await pub.publish(f"venues/{venue}/status", status("online", "boot-a", 0), qos=1, retain=True)

    await announce("harbour-kitchen")
    conn = Connection("127.0.0.1", broker.port)
    live = asyncio.create_task(watch_live(conn, fleet, notice=notices.append, initial_delay=0.05, max_delay=0.2))
    try:
        await eventually(known, lambda v: v == {"harbour-kitchen"})
        broker.stop()
        await eventually(seen, lambda n: len(n) >= 5)
        broker.start()
        await announce("dock-diner")
        await eventually(known, lambda v: v == {"harbour-kitchen", "dock-diner"})
        assert notices[-1] == f"reconnected to 127.0.0.1:{broker.port}"
        lost_before = len(notices)
        broker.stop()
        await eventually(seen, lambda n: len(n) > lost_before)
    finally:
        live.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await live
    waits = [line.rsplit(" in ", 1)[1] for line in notices[:5]]
    assert waits == ["0.05 s", "0.1 s", "0.2 s", "0.2 s", "0.2 s"]
    assert notices[0].startswith("broker lost: ")
    assert all(line.startswith("reconnect failed: ") for line in notices[1:5])
    assert notices[lost_before].startswith("broker lost: ")
    assert notices[lost_before].endswith("reconnecting in 0.05 s")


async def test_console_over_tls_with_a_client_certificate(
    tmp_path: Path, test_ca: TestCA, start_broker: StartBroker
) -> None:
    """--ca-file with --cert-file/--key-file reaches a broker that admits only holders of a certificate from the CA."""
    server = test_ca.server()
    tls = BrokerTLS(test_ca.cert, server.cert, server.key, require_certificate=True, use_identity_as_username=True)
    broker = start_broker(tls=tls, allow_anonymous=False)
    venue, ops = test_ca.client("harbour-kitchen"), test_ca.client("ops-console")
    venue_tls = aiomqtt.TLSParameters(ca_certs=str(test_ca.cert), certfile=str(venue.cert), keyfile=str(venue.key))
    async with aiomqtt.Client("127.0.0.1", broker.port, tls_params=venue_tls, timeout=5) as pub:
        await pub.publish("venues/harbour-kitchen/status", status("online", "boot-a", 0), qos=1, retain=True)

    common = ("--broker", f"127.0.0.1:{broker.port}", "--ca-file", str(test_ca.cert), "--once", "1", "--json")
    proc = await run_console(*common, "--cert-file", str(ops.cert), "--key-file", str(ops.key), tmp_path=tmp_path)
    out, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, err.decode()
    assert [(r["venue"], r["state"]) for r in json.loads(out)] == [("harbour-kitchen", "online")]
    assert "u'ops-console'" in broker.log()  # the broker knew the console by its certificate's CN


async def test_an_alert_is_drawn_at_once_not_at_the_next_periodic_redraw(broker: Mosquitto) -> None:
    fleet = Fleet()
    ticks: list[tuple[float, int]] = []

    def tick(f: Fleet) -> None:
        ticks.append((time.monotonic(), f.venues["hk"].open_alerts if "hk" in f.venues else 0))

    conn = Connection("127.0.0.1", broker.port)
    live = asyncio.create_task(watch(conn, fleet, seconds=None, on_tick=tick))
    try:
        await eventually(lambda: _value(len(ticks)), lambda n: n == 1, timeout=10)
        await asyncio.sleep(0.5)  # the next periodic redraw is 1.5 s away
        async with client(broker.port) as pub:
            sent = time.monotonic()
            await pub.publish("venues/hk/alerts", alert("order_failed", time.time()), qos=1)
        shown = await eventually(lambda: _value([t for t, n in ticks if n == 1]), bool, timeout=5)
        assert shown[0] - sent < watch_module.REDRAW_SECONDS / 2
    finally:
        live.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await live


async def _value(x: Any) -> Any:
    return x
