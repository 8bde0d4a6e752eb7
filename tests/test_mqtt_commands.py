"""Commands and orders over MQTT (docs/mqtt.md) against a real mosquitto and an agent in-process."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.domain.config import Settings
from agent.mqtt.commands import sign
from tests.conftest import RunningAgent, Sim, agent_settings, eventually, make_order, run_agent
from tests.fake_printer import FakeNetworkPrinter

# _broker and _persistent_broker are fixtures: importing them registers "broker" and "persistent_broker" here.
from tests.mosquitto import Mosquitto, _broker, _persistent_broker  # noqa: F401
from tests.test_intake_api import preorder, wait_ticket
from tests.test_lightspeed_e2e import lightspeed_settings, point_webhooks
from tests.test_mqtt import VENUE, P, Subscriber, mqtt_settings, subscribed

SECRET = "s3cret-for-commands"
REPLIES = (f"{P}/cmd/+/reply", f"{P}/orders/+/ack", f"{P}/orders/rejected")


class Console:
    """The ops console's side: publishes commands and orders, signed when it has the secret."""

    def __init__(self, client: aiomqtt.Client, running: RunningAgent, secret: str | None = None) -> None:
        self.client = client
        self.running = running
        self.secret = secret

    def signed(self, args: dict[str, Any], *, command: str, ts: float | None = None) -> dict[str, Any]:
        """Return ``args`` with ``ts`` (the agent's clock unless given) and ``sig`` for ``command`` on VENUE."""
        assert self.secret is not None
        body = {**args, "ts": self.running.clock.now().timestamp() if ts is None else ts}
        return body | {"sig": sign(body, self.secret, command=command, venue=VENUE)}

    async def command(self, name: str, args: dict[str, Any], properties: Properties | None = None) -> None:
        """Publish a command, signed when the console has the secret."""
        body = self.signed(args, command=name) if self.secret else args
        await self.client.publish(f"{P}/cmd/{name}", json.dumps(body), qos=1, properties=properties)

    async def raw(self, topic: str, payload: str | bytes) -> None:
        """Publish ``payload`` as is."""
        await self.client.publish(f"{P}/{topic}", payload, qos=1)


@asynccontextmanager
async def console(
    tmp_path: Path, sim: Sim, broker: Mosquitto, secret: str | None = None, settings: Settings | None = None
) -> AsyncIterator[tuple[RunningAgent, Console, Subscriber]]:
    """Run an agent with MQTT control, a console client and a reply subscriber; wait until the agent listens."""
    if settings is None:
        settings = mqtt_settings(tmp_path, sim, broker, **({"command_hmac_secret": secret} if secret else {}))
    async with (
        run_agent(settings) as running,
        subscribed(broker.port, *REPLIES, identifier="test-replies") as sub,
        aiomqtt.Client("127.0.0.1", broker.port, identifier="test-console", protocol=aiomqtt.ProtocolVersion.V5) as c,
    ):
        con = Console(c, running, secret)
        # The agent subscribes just after it connects: ask for its status until it answers.
        deadline = time.monotonic() + 5
        while not sub.on(f"{P}/cmd/status/reply"):
            assert time.monotonic() < deadline, "the agent never answered a status command"
            await con.command("status", {})
            await asyncio.sleep(0.1)
        sub.messages.clear()
        yield running, con, sub


async def reply(sub: Subscriber, name: str, count: int = 1) -> dict[str, Any]:
    """Wait for the ``count``-th reply to command ``name``; return it."""
    replies = await sub.wait(f"{P}/cmd/{name}/reply", lambda r: len(r) >= count, timeout=5)
    return dict(replies[count - 1])


async def ack(sub: Subscriber, order_id: str, count: int = 1) -> dict[str, Any]:
    """Wait for the ``count``-th ack of ``order_id``; return it."""
    acks = await sub.wait(f"{P}/orders/{order_id}/ack", lambda r: len(r) >= count, timeout=5)
    return dict(acks[count - 1])


# ---- commands ------------------------------------------------------------------------------------------------


async def test_status_replies_with_the_health_snapshot(tmp_path: Path, sim: Sim, broker: Mosquitto) -> None:
    """``status {}`` answers on P/cmd/status/reply with ok and the health snapshot."""
    async with console(tmp_path, sim, broker) as (_, con, sub):
        await con.command("status", {})
        answer = await reply(sub, "status")
    assert answer["ok"] is True
    for key in ("ts", "uptime_s", "version", "outbox", "pos", "printers"):
        assert key in answer["health"]


async def test_reply_on_the_mqtt5_response_topic_with_correlation_data(
    tmp_path: Path, sim: Sim, broker: Mosquitto
) -> None:
    """A request carrying a response topic is answered there, with its correlation data, not on /reply."""
    async with (
        console(tmp_path, sim, broker) as (_, con, sub),
        aiomqtt.Client("127.0.0.1", broker.port, identifier="test-rr", protocol=aiomqtt.ProtocolVersion.V5) as rr,
    ):
        await rr.subscribe("console/replies/42", qos=1)
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = "console/replies/42"
        props.CorrelationData = b"req-7"
        await con.command("status", {}, properties=props)
        async with asyncio.timeout(5):
            message = await anext(aiter(rr.messages))
        assert message.properties is not None
        assert getattr(message.properties, "CorrelationData", None) == b"req-7"
        assert isinstance(message.payload, bytes)
        assert json.loads(message.payload)["ok"] is True
        await asyncio.sleep(0.2)
        assert sub.on(f"{P}/cmd/status/reply") == []


async def test_resubmit_reprint_and_cancel(tmp_path: Path, sim: Sim, broker: Mosquitto) -> None:
    """resubmit injects a failed order; reprint prints a REPRINT ticket; cancel cancels, or refuses once injected."""
    async with console(tmp_path, sim, broker) as (running, con, sub):
        sim.state.faults.update({"sold_out_skus": ["PZ-MARG"]})
        await running.client.post("/v1/orders", json=make_order())
        await running.wait_state("ord_01HXTEST", "failed")
        sim.state.faults.update({"sold_out_skus": []})

        await con.command("resubmit", {"order_id": "ord_01HXTEST"})
        assert await reply(sub, "resubmit") == {"ok": True, "order_id": "ord_01HXTEST", "state": "queued"}
        await running.wait_state("ord_01HXTEST", "injected")

        await con.command("reprint", {"order_id": "ord_01HXTEST"})
        assert await reply(sub, "reprint") == {"ok": True, "order_id": "ord_01HXTEST", "reprint_no": 1}
        await wait_ticket(tmp_path, "REPRINT")

        await con.command("cancel", {"order_id": "ord_01HXTEST"})
        refused = await reply(sub, "cancel")
        assert refused["ok"] is False
        assert "POS" in refused["error"]

        await running.client.post("/v1/orders", json=preorder(running, "ord_later"))
        await con.command("cancel", {"order_id": "ord_later"})
        assert await reply(sub, "cancel", 2) == {"ok": True, "order_id": "ord_later", "state": "cancelled"}

        await con.command("resubmit", {"order_id": "nope"})
        assert "nope" in (await reply(sub, "resubmit", 2))["error"]
        await con.command("frobnicate", {})
        assert "unknown command" in (await reply(sub, "frobnicate"))["error"]
        await con.raw("cmd/cancel", b"{not json")
        assert (await reply(sub, "cancel", 3))["ok"] is False
        await con.command("lightspeed_webhook", {"type": "ORDER"})
        assert "lightspeed_k" in (await reply(sub, "lightspeed_webhook"))["error"]


async def test_print_test_prints_the_test_page_and_reports_each_printer(
    tmp_path: Path, sim: Sim, broker: Mosquitto
) -> None:
    """print_test {printer} prints on that printer; print_test {} tries all and says which did not print and why."""
    async with FakeNetworkPrinter.running("paper_out") as grill:
        printers = [
            {"name": "pass", "connection": "file", "path": str(tmp_path / "tickets.txt")},
            {"name": "grill", "connection": "network", "host": "127.0.0.1", "port": grill.port},
        ]
        mqtt = {"enabled": True, "host": "127.0.0.1", "port": broker.port, "health_interval_seconds": 1}
        settings = agent_settings(tmp_path, sim.url, mqtt=mqtt, printers=printers)
        async with console(tmp_path, sim, broker, settings=settings) as (_, con, sub):
            await con.command("print_test", {"printer": "pass"})
            one = await reply(sub, "print_test")
            assert one["ok"] is True
            assert one["printed"] is True
            assert [(r["printer"], r["printed"]) for r in one["printers"]] == [("pass", True)]
            await wait_ticket(tmp_path, "TEST PRINT - DO NOT MAKE")

            await con.command("print_test", {})
            both = await reply(sub, "print_test", 2)
            assert both["ok"] is True
            assert both["printed"] is False
            grill_result = next(r for r in both["printers"] if r["printer"] == "grill")
            assert grill_result["printed"] is False
            assert grill_result["before"] == "paper_out"
            assert grill_result["connection"] == f"network 127.0.0.1:{grill.port}"
            assert grill.jobs == []

            await con.command("print_test", {"printer": "bar"})
            unknown = await reply(sub, "print_test", 3)
            assert unknown["ok"] is False
            assert "no printer named 'bar'" in unknown["error"]
            assert "pass, grill" in unknown["error"]


async def test_relayed_lightspeed_notification_confirms_the_order(tmp_path: Path, sim: Sim, broker: Mosquitto) -> None:
    """lightspeed_webhook {...} relayed by the console does what the HTTP webhook does: SUCCESS → injected."""
    settings = lightspeed_settings(tmp_path, sim)
    settings = settings.model_copy(update={"mqtt": mqtt_settings(tmp_path, sim, broker).mqtt})
    async with console(tmp_path, sim, broker, settings=settings) as (running, con, sub):
        await point_webhooks(sim, running)
        await sim.state.apply_faults({"never_confirm": True})
        assert (await running.client.post("/v1/orders", json=make_order("ord_ls_mqtt"))).status_code == 202
        await running.wait_state("ord_ls_mqtt", "awaiting_pos")

        note = {
            "type": "ORDER",
            "status": "SUCCESS",
            "thirdPartyReference": "harbour-kitchen:ord_ls_mqtt",
            "ikentooAccountIdentifier": "A-5521",
        }
        await con.command("lightspeed_webhook", note)
        answer = await reply(sub, "lightspeed_webhook")
        assert answer["ok"] is True
        await running.wait_state("ord_ls_mqtt", "injected")
        shown = (await running.client.get("/v1/orders/ord_ls_mqtt")).json()
        assert shown["pos_reference"] == "A-5521"

        await con.command("lightspeed_webhook", {"type": "ORDER", "status": "SUCCESS"})
        assert (await reply(sub, "lightspeed_webhook", 2))["ok"] is False


# ---- signed commands -----------------------------------------------------------------------------------------


async def test_signed_commands_valid_wrong_stale_and_replayed(tmp_path: Path, sim: Sim, broker: Mosquitto) -> None:
    """With a secret: a valid signature runs; a wrong one, a stale ts or a replay is refused with an alert."""
    async with console(tmp_path, sim, broker, secret=SECRET) as (running, con, sub):
        await running.client.post("/v1/orders", json=preorder(running))
        valid = con.signed({"order_id": "ord_01HXTEST"}, command="cancel")
        await con.raw("cmd/cancel", json.dumps(valid))
        assert (await reply(sub, "cancel"))["state"] == "cancelled"

        wrong = con.signed({"order_id": "ord_01HXTEST"}, command="cancel") | {"sig": "0" * 64}
        stale = con.signed({"order_id": "ord_01HXTEST"}, command="cancel", ts=running.clock.now().timestamp() - 61)
        unsigned = {"order_id": "ord_01HXTEST"}
        for body in (wrong, stale, valid, unsigned):  # ``valid`` again is a replay
            await con.raw("cmd/cancel", json.dumps(body))
        answers = [await reply(sub, "cancel", n) for n in (2, 3, 4, 5)]
        assert all(a["ok"] is False for a in answers)
        assert "bad signature" in answers[0]["error"]
        assert "stale" in answers[1]["error"]
        assert "replayed" in answers[2]["error"]
        assert "sig" in answers[3]["error"]

        alerts = await eventually(
            lambda: running.agent.outbox.alerts(), lambda a: sum(x["alert"] == "command_refused" for x in a) >= 4
        )
        refused = [a for a in alerts if a["alert"] == "command_refused"]
        assert {a["severity"] for a in refused} == {"warning"}
        assert "cancel" in refused[0]["reason"]


# ---- orders over MQTT ----------------------------------------------------------------------------------------


async def test_order_over_mqtt_is_acked_after_commit_and_duplicates_are_noops(
    tmp_path: Path, sim: Sim, broker: Mosquitto
) -> None:
    """A valid order is acked accepted and stored; the same order again is acked duplicate, still one order."""
    async with console(tmp_path, sim, broker) as (running, con, sub):
        await con.raw("orders/new", json.dumps(make_order("ord_mqtt")))
        first = await ack(sub, "ord_mqtt")
        assert first["order_id"] == "ord_mqtt"
        assert first["accepted"] is True
        assert first["duplicate"] is False
        assert (await running.client.get("/v1/orders/ord_mqtt")).status_code == 200

        await con.raw("orders/new", json.dumps(make_order("ord_mqtt")))
        second = await ack(sub, "ord_mqtt", 2)
        assert second["accepted"] is True
        assert second["duplicate"] is True
        listed = (await running.client.get("/v1/orders")).json()["orders"]
        assert [o["order_id"] for o in listed] == ["ord_mqtt"]
        await running.wait_state("ord_mqtt", "injected")
        assert len(sim.accepted_keys()) == 1


async def test_invalid_orders_are_refused_and_the_loop_keeps_going(tmp_path: Path, sim: Sim, broker: Mosquitto) -> None:
    """Invalid JSON and an invalid order are acked accepted false with the errors; the next order goes through."""
    async with console(tmp_path, sim, broker) as (running, con, sub):
        await con.raw("orders/new", b"{oops")
        rejected = await sub.wait(f"{P}/orders/rejected", bool)
        assert rejected[0]["order_id"] is None
        assert rejected[0]["accepted"] is False
        assert "JSON" in rejected[0]["error"]

        await con.raw("orders/new", json.dumps(make_order("ord_bad", total=1)))
        bad = await ack(sub, "ord_bad")
        assert bad["accepted"] is False
        assert any(e["loc"][-1] == "total" for e in bad["errors"])
        assert (await running.client.get("/v1/orders/ord_bad")).status_code == 404

        await con.raw("orders/new", json.dumps(make_order("ord_next")))
        assert (await ack(sub, "ord_next"))["accepted"] is True


async def test_orders_need_no_command_signature(tmp_path: Path, sim: Sim, broker: Mosquitto) -> None:
    """The command secret guards commands only: an order on P/orders/new is taken as is."""
    async with console(tmp_path, sim, broker, secret=SECRET) as (_, con, sub):
        await con.raw("orders/new", json.dumps(make_order("ord_plain")))
        assert (await ack(sub, "ord_plain"))["accepted"] is True


async def test_orders_sent_while_the_agent_was_away_are_delivered(
    tmp_path: Path, sim: Sim, persistent_broker: Mosquitto
) -> None:
    """The agent's session persists: a QoS 1 order published while it is stopped is taken when it comes back."""
    broker = persistent_broker
    async with console(tmp_path, sim, broker):
        pass  # the agent connected once: the broker now holds its session and subscriptions
    async with (
        subscribed(broker.port, *REPLIES, identifier="test-replies") as sub,
        aiomqtt.Client("127.0.0.1", broker.port, identifier="test-console", protocol=aiomqtt.ProtocolVersion.V5) as c,
    ):
        await c.publish(f"{P}/orders/new", json.dumps(make_order("ord_offline")), qos=1)
        async with run_agent(mqtt_settings(tmp_path, sim, broker)) as running:
            assert (await ack(sub, "ord_offline"))["accepted"] is True
            assert (await running.client.get("/v1/orders/ord_offline")).status_code == 200
