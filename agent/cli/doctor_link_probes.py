"""``venue-agent doctor``: measuring the agent's links. Each probe gathers facts for a verdict in
agent/cli/doctor_links.py, bounded in time; the rules of doctor_probes.py hold (the running agent is never disturbed).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.client import Client as PahoClient

from agent import __version__
from agent.cli.doctor_links import MqttFacts, PosFacts, PrinterFacts
from agent.cli.operator import Context
from agent.outbox import readonly as outbox_readonly

PRINTER_TIMEOUT = 10.0
MQTT_TIMEOUT = 10.0
MQTT_RETAINED_WAIT = 1.5
MQTT_ECHO_WAIT = 2.0
# MQTT CONNACK codes: 3.1.1 (4, 5) and 5 (134 bad user name or password, 135 not authorised, 138 banned).
MQTT_AUTH_CODES = (4, 5, 134, 135, 138, 140)
MQTT_UNSUPPORTED_PROTOCOL = (1, 132)


# ---- POS ---------------------------------------------------------------------------------------------


class ReadOnlyKv:
    """The outbox's key/value table for a driver, read-only: a token refresh (which must write) is refused, noted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.refused_write = False

    async def kv_get(self, key: str) -> str | None:
        """Return the stored value, or None (also when the outbox cannot be read)."""

        def read() -> str | None:
            try:
                conn = outbox_readonly.connect(self.path)
            except (sqlite3.Error, OSError):
                return None
            try:
                row = conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
            except sqlite3.Error:
                return None
            finally:
                conn.close()
            return str(row[0]) if row else None

        return await asyncio.to_thread(read)

    async def kv_put(self, key: str, value: str) -> None:
        """Refuse: doctor writes nothing (a refresh would rotate the single-use token behind the agent's back)."""
        self.refused_write = True
        msg = "doctor does not write the outbox"
        raise PermissionError(msg)


async def pos_facts(ctx: Context, health: dict[str, Any] | None) -> PosFacts:
    """Probe the POS with the driver's own readiness check, bounded by twice its timeout plus a margin."""
    from drivers.pos.errors import PosConfigError
    from drivers.pos.registry import build_driver

    settings = ctx.settings
    name = settings.pos.driver
    unread = ctx.unreadable("pos")
    if unread:
        return PosFacts(name, problem="secret", detail=f"this user cannot read {unread[0].key}")
    agent_pos = (health or {}).get("pos") or {}
    agent_state = str(agent_pos["state"]) if agent_pos.get("state") else None
    agent_detail = f" ({agent_pos['last_error']})" if agent_pos.get("last_error") else ""
    store = ReadOnlyKv(ctx.outbox)
    try:
        driver = build_driver(settings, store=store)
    except PosConfigError as exc:
        return PosFacts(name, problem="config", detail=str(exc))
    limit = 2 * settings.pos.timeout_seconds + 2
    try:
        readiness = await asyncio.wait_for(driver.probe(), limit)
    except TimeoutError:
        detail = f"no answer within {limit:g} s"
        return PosFacts(name, problem="timeout", detail=detail, agent_state=agent_state, agent_detail=agent_detail)
    finally:
        await driver.aclose()
    if store.refused_write:
        return PosFacts(name, problem="token_refresh", agent_state=agent_state, agent_detail=agent_detail)
    return PosFacts(
        name,
        state=readiness.state.value,
        latency_ms=readiness.latency_ms,
        detail=readiness.detail,
        conditions=dict(readiness.conditions),
        agent_state=agent_state,
        agent_detail=agent_detail,
    )


# ---- printers ----------------------------------------------------------------------------------------


async def printer_facts(ctx: Context, name: str, health: dict[str, Any] | None) -> PrinterFacts:
    """Read one printer's code page and DLE EOT status (serial/USB from the running agent's health)."""
    from agent.printing.print_test import where
    from agent.printing.tickets import PrinterSetup
    from drivers.printers.errors import PrinterConfigError, PrinterError
    from drivers.printers.transports import build_transport

    printer = next(p for p in ctx.settings.printers if p.name == name)
    facts: dict[str, Any] = {"name": name, "where": where(printer), "confirm": printer.confirm}
    facts["writes_text"] = printer.writes_text
    if not printer.writes_text:
        try:
            facts["code_page"] = (await asyncio.to_thread(getattr, PrinterSetup(printer), "code_page")).name
        except PrinterConfigError as exc:
            return PrinterFacts(status="unknown", code_page_error=str(exc), **facts)
    seen = {p.get("name"): p for p in (health or {}).get("printers", [])}
    if printer.connection in ("serial", "usb") and name in seen:
        state = str(seen[name].get("state"))
        status = "cover_open" if state == "error" else state
        return PrinterFacts(status=status, detail=str(seen[name].get("detail") or ""), from_agent=True, **facts)
    try:
        reading = await asyncio.wait_for(build_transport(printer).status(), PRINTER_TIMEOUT)
    except TimeoutError:
        return PrinterFacts(status="offline", detail=f"no answer within {PRINTER_TIMEOUT:g} s", **facts)
    except PrinterError as exc:
        return PrinterFacts(status="offline", detail=str(exc), **facts)
    return PrinterFacts(status=reading.status.value, detail=reading.detail, **facts)


# ---- MQTT --------------------------------------------------------------------------------------------


async def mqtt_facts(ctx: Context, *, agent_ready: bool) -> MqttFacts:
    """Connect as ``venue-agent-<id>-doctor``, read the retained status, publish it back unchanged (QoS 1)."""
    mqtt = ctx.settings.mqtt
    if not mqtt.enabled:
        return MqttFacts(False)
    broker = f"{mqtt.host}:{mqtt.port}{' (TLS)' if mqtt.tls else ''}"
    topic = f"{mqtt.topic_prefix}/{ctx.settings.venue.id}/status"
    unread = ctx.unreadable("mqtt")
    if unread:
        return MqttFacts(True, broker, "secret", f"not checked: this user cannot read {unread[0].key}", topic=topic)
    protocol = aiomqtt.ProtocolVersion.V5
    for _ in range(2):
        try:
            async with asyncio.timeout(MQTT_TIMEOUT):
                return await _mqtt_round(ctx, protocol, broker, topic, agent_ready)
        except MqttConnectError as exc:
            if protocol is aiomqtt.ProtocolVersion.V5 and exc.rc in MQTT_UNSUPPORTED_PROTOCOL:
                protocol = aiomqtt.ProtocolVersion.V311
                continue
            detail = f"the broker refused the connection: {exc}"
            if exc.rc in MQTT_AUTH_CODES:
                return MqttFacts(True, broker, "auth", detail, topic=topic)
            return MqttFacts(True, broker, "connect", detail, topic=topic)
        except TimeoutError:
            return MqttFacts(True, broker, "timeout", f"no answer within {MQTT_TIMEOUT:g} s", topic=topic)
        except aiomqtt.MqttError as exc:
            text = str(exc)
            if "SSL" in text or "certificate" in text.lower():
                return MqttFacts(True, broker, "tls", f"TLS failed: {text}", topic=topic)
            return MqttFacts(True, broker, "connect", f"cannot connect: {text}", topic=topic)
    return MqttFacts(True, broker, "connect", "the broker speaks neither MQTT 5 nor 3.1.1", topic=topic)


async def _mqtt_round(
    ctx: Context, protocol: aiomqtt.ProtocolVersion, broker: str, topic: str, agent_ready: bool
) -> MqttFacts:
    mqtt = ctx.settings.mqtt
    assert mqtt.host is not None and mqtt.port is not None
    tls = None
    if mqtt.tls:
        tls = aiomqtt.TLSParameters(
            ca_certs=str(mqtt.ca_file) if mqtt.ca_file else None,
            certfile=str(mqtt.cert_file) if mqtt.cert_file else None,
            keyfile=str(mqtt.key_file) if mqtt.key_file else None,
        )
    v5 = protocol is aiomqtt.ProtocolVersion.V5
    session: dict[str, Any] = {"clean_start": True} if v5 else {"clean_session": True}
    client = aiomqtt.Client(
        mqtt.host,
        mqtt.port,
        # Never the agent's own client id: connecting under it would take the agent's session over.
        identifier=f"venue-agent-{ctx.settings.venue.id}-doctor",
        protocol=protocol,
        username=mqtt.username,
        password=mqtt.password.get_secret_value() if mqtt.password else None,
        tls_params=tls,
        keepalive=10,
        **session,
    )
    name = "MQTT 5" if v5 else "MQTT 3.1.1"
    async with client:
        codes = _capture_puback(client._client)  # aiomqtt 2.x drops the PUBACK reason code; paho has it
        granted = await client.subscribe(topic, qos=1)
        readable = all(_code(c) < 0x80 for c in granted)
        retained = await _next_message(client, MQTT_RETAINED_WAIT) if readable else None
        if retained is not None and retained.retain and isinstance(retained.payload, bytes):
            payload: bytes = retained.payload  # the agent's own status, republished unchanged (not retained)
            agent_status = _state_of(payload)
        else:
            # No status to copy: a state consumers ignore (status consumers know only online/offline).
            body = {"state": "doctor", "since": datetime.now(UTC).isoformat(), "version": __version__}
            payload, agent_status = json.dumps(body | {"agent_running": agent_ready}).encode(), None
        await client.publish(topic, payload, qos=1, retain=False)
        if v5:
            code = codes[-1] if codes else 0
            if code >= 0x80:
                detail = f"connected ({name}), but the broker refused the publish to {topic} (reason code {code})"
                return MqttFacts(True, broker, "publish", detail, name, topic)
            return MqttFacts(True, broker, "ok", "", name, topic, True, agent_status)
        echo = await _next_message(client, MQTT_ECHO_WAIT) if readable else None
        confirmed = True if echo is not None and not echo.retain else None
        return MqttFacts(True, broker, "ok", "", name, topic, confirmed, agent_status)


def _capture_puback(paho: PahoClient) -> list[int]:
    codes: list[int] = []
    original: Any = paho.on_publish  # aiomqtt registers the 5-argument (VERSION2) callback

    def on_publish(client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        codes.append(_code(reason_code))
        if original is not None:
            original(client, userdata, mid, reason_code, properties)

    paho.on_publish = on_publish
    return codes


def _code(reason: Any) -> int:
    """Return the number of a paho ReasonCode (or of a plain int code)."""
    return int(getattr(reason, "value", reason) or 0)


async def _next_message(client: aiomqtt.Client, seconds: float) -> aiomqtt.Message | None:
    try:
        async with asyncio.timeout(seconds):
            async for message in client.messages:
                return message
    except TimeoutError:
        return None
    return None


def _state_of(payload: bytes) -> str | None:
    try:
        state = json.loads(payload).get("state")
    except (ValueError, AttributeError):
        return None
    return str(state) if state else None
