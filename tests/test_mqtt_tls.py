"""The agent's MQTT login against a real mosquitto: TLS with the venue's CA, client certificates, passwords.

When the broker refuses the agent (wrong password, a certificate the CA did not sign), the agent keeps taking orders and
says so once at warning level, without the password in any log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from structlog.testing import capture_logs

from agent import __version__
from tests.conftest import RunningAgent, Sim, eventually, make_order, run_agent
from tests.mosquitto import BrokerTLS, Mosquitto, StartBroker, _start_broker  # noqa: F401
from tests.test_mqtt import mqtt_settings
from tests.tls_ca import KeyPair, TestCA, _test_ca, make_ca  # noqa: F401

VENUE = "harbour-kitchen"
P = f"venues/{VENUE}"
AGENT_PASSWORD = "hk-Secret-7f3c9a"  # distinctive, so a leak into a log line is found by substring


async def online_status(
    broker: Mosquitto,
    *,
    tls: aiomqtt.TLSParameters | None = None,
    username: str | None = None,
    password: str | None = None,
    timeout: float = 10,
) -> dict[str, Any]:
    """Connect as an ops console and return the agent's first ``online`` status (retained or live)."""
    async with aiomqtt.Client(
        "127.0.0.1",
        broker.port,
        identifier="test-ops-console",
        protocol=aiomqtt.ProtocolVersion.V5,
        username=username,
        password=password,
        tls_params=tls,
        timeout=5,
    ) as client:
        await client.subscribe(f"{P}/status", qos=1)
        async with asyncio.timeout(timeout):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                status: dict[str, Any] = json.loads(message.payload)
                if status["state"] == "online":
                    return status
    raise AssertionError("the subscription ended without an online status")


def tls_broker(start_broker: StartBroker, server: KeyPair, ca: TestCA, **options: Any) -> Mosquitto:
    """Start a broker whose only listener is TLS with ``server``'s certificate; client certs checked against ``ca``."""
    return start_broker(tls=BrokerTLS(ca.cert, server.cert, server.key, **options))


async def assert_takes_orders(running: RunningAgent, sim: Sim, order_id: str) -> None:
    """The intake accepts an order at once and it reaches the POS, whatever MQTT is doing."""
    response = await running.client.post("/v1/orders", json=make_order(order_id))
    assert response.status_code == 202
    await running.wait_state(order_id, "injected")
    assert len(sim.accepted_keys()) == 1


def client_connected(broker: Mosquitto) -> bool:
    """Whether the broker has accepted the agent's connection (its log names the client id on CONNACK)."""
    return f"as venue-agent-{VENUE} " in broker.log()


async def test_tls_with_the_venue_ca(tmp_path: Path, sim: Sim, test_ca: TestCA, start_broker: StartBroker) -> None:
    """tls = true with ca_file: the agent verifies the broker against the venue's CA and reports online over TLS."""
    broker = tls_broker(start_broker, test_ca.server(), test_ca)
    settings = mqtt_settings(tmp_path, sim, broker, tls=True, ca_file=str(test_ca.cert))
    async with run_agent(settings) as running:
        status = await online_status(broker, tls=aiomqtt.TLSParameters(ca_certs=str(test_ca.cert)))
        assert running.agent.mqtt is not None
        assert (status["boot_id"], status["version"]) == (running.agent.mqtt.boot_id, __version__)
    # The listener speaks only TLS: a plaintext client gets no MQTT session, so the status above came over TLS.
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="plain", timeout=1):
            pass


async def test_tls_with_a_client_certificate(
    tmp_path: Path, sim: Sim, test_ca: TestCA, start_broker: StartBroker
) -> None:
    """A broker that requires client certificates admits the agent by its cert_file/key_file, named by the cert's CN."""
    broker = tls_broker(
        start_broker, test_ca.server(), test_ca, require_certificate=True, use_identity_as_username=True
    )
    agent_cert, ops_cert = test_ca.client(VENUE), test_ca.client("ops-console")
    settings = mqtt_settings(
        tmp_path,
        sim,
        broker,
        tls=True,
        ca_file=str(test_ca.cert),
        cert_file=str(agent_cert.cert),
        key_file=str(agent_cert.key),
    )
    ops_tls = aiomqtt.TLSParameters(ca_certs=str(test_ca.cert), certfile=str(ops_cert.cert), keyfile=str(ops_cert.key))
    async with run_agent(settings) as running:
        status = await online_status(broker, tls=ops_tls)
        assert running.agent.mqtt is not None
        assert status["boot_id"] == running.agent.mqtt.boot_id
    # The broker took the certificate's CN as the agent's username: what a per-venue ACL is keyed on.
    assert re.search(rf"as venue-agent-{VENUE} \(.*u'{VENUE}'\)", broker.log())


@pytest.mark.parametrize("source", ["password", "password_file"])
async def test_username_and_password_accepted(tmp_path: Path, sim: Sim, start_broker: StartBroker, source: str) -> None:
    """A broker with a password file admits the agent with its username and password (inline or from a file)."""
    broker = start_broker(passwords={VENUE: AGENT_PASSWORD, "ops-console": "ops-pw"})
    secret: dict[str, str] = {"password": AGENT_PASSWORD}
    if source == "password_file":
        (tmp_path / "mqtt-password").write_text(AGENT_PASSWORD + "\n", encoding="utf-8")
        secret = {"password_file": str(tmp_path / "mqtt-password")}
    settings = mqtt_settings(tmp_path, sim, broker, username=VENUE, **secret)
    async with run_agent(settings) as running:
        status = await online_status(broker, username="ops-console", password="ops-pw")
        assert running.agent.mqtt is not None
        assert status["boot_id"] == running.agent.mqtt.boot_id


async def test_wrong_password_warns_once_and_orders_still_flow(
    tmp_path: Path, sim: Sim, start_broker: StartBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """Refused login: the agent takes orders, warns once (later retries at debug), and never logs the password."""
    caplog.set_level(logging.DEBUG)  # the standard library's loggers too (aiomqtt, paho), at every level
    broker = start_broker(passwords={VENUE: "the-right-one"})
    settings = mqtt_settings(tmp_path, sim, broker, username=VENUE, password=AGENT_PASSWORD)
    with capture_logs() as logs:
        async with run_agent(settings) as running:
            await assert_takes_orders(running, sim, "ord_bad_password")

            def failures() -> list[dict[str, Any]]:
                return [e for e in logs if e["event"] == "mqtt_unavailable"]

            # The reporter backs off 1 s after the first refusal, so the second attempt comes about a second later.
            await eventually(_now(failures), lambda f: len(f) >= 2, timeout=5)
    refused = failures()
    assert [e["log_level"] for e in refused] == ["warning"] + ["debug"] * (len(refused) - 1)
    # Mosquitto 2.0 answers a wrong password "Not authorized" (135); newer releases "Bad user name or password" (134).
    assert any(words in refused[0]["reason"].lower() for words in ("not authorized", "bad user name or password"))
    assert not [e for e in logs if e["event"] == "mqtt_connected"]
    assert not client_connected(broker)
    leaks = [e for e in logs if AGENT_PASSWORD in repr(e)]
    assert leaks == []
    assert AGENT_PASSWORD not in caplog.text


@pytest.mark.parametrize("mismatch", ["signed by another CA", "issued for another host"])
async def test_a_broker_certificate_the_ca_does_not_vouch_for_is_refused(
    tmp_path: Path, sim: Sim, test_ca: TestCA, start_broker: StartBroker, mismatch: str
) -> None:
    """The agent does not talk to a broker whose certificate fails verification, and keeps taking orders."""
    if mismatch == "signed by another CA":
        server = make_ca(tmp_path / "other-ca", "an impostor CA").server()
    else:
        server = test_ca.server("elsewhere", hosts=("mqtt.example.net",))
    broker = tls_broker(start_broker, server, test_ca)
    settings = mqtt_settings(tmp_path, sim, broker, tls=True, ca_file=str(test_ca.cert))
    with capture_logs() as logs:
        async with run_agent(settings) as running:
            await assert_takes_orders(running, sim, "ord_wrong_cert")

            def failures() -> list[dict[str, Any]]:
                return [e for e in logs if e["event"] == "mqtt_unavailable"]

            refused = await eventually(_now(failures), bool)
    assert refused[0]["log_level"] == "warning"
    assert "certificate verify failed" in refused[0]["reason"].lower()
    assert not [e for e in logs if e["event"] == "mqtt_connected"]
    assert not client_connected(broker)


def _now(read: Any) -> Any:
    """Wrap a plain function as the async probe ``eventually`` wants."""

    async def probe() -> Any:
        return read()

    return probe
