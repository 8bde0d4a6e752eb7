"""Lightspeed K-Series end to end: the real agent (in-process), the simulator's K-Series dialect on loopback.

The simulator accepts orders with 200 and confirms them later by POSTing a notification to the agent's
``/v1/webhooks/lightspeed`` with HTTP Basic, as Lightspeed does; the agent moves each order from
``awaiting_pos`` to ``injected`` or ``failed`` on that notification.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from agent.domain.clock import FakeClock
from agent.outbox import snoozes
from tests import lightspeed_contract as ref
from tests.conftest import RunningAgent, Sim, agent_settings, eventually, make_order, run_agent

WEBHOOK_USER, WEBHOOK_PASSWORD = "lightspeed", "hook-secret"


def lightspeed_settings(tmp_path: Path, sim: Sim, **fallback: Any) -> Any:
    """Agent settings with the lightspeed_k driver pointed at the simulator."""
    return agent_settings(
        tmp_path,
        sim.url,
        pos={
            "driver": "lightspeed_k",
            "http": None,
            "lightspeed_k": {
                "base_url": f"http://127.0.0.1:{sim.port}",
                "business_location_id": 45454545,
                "client_id": "venue-agent",
                "client_secret": "client-secret",
                "refresh_token": "seed-refresh-token",
                "endpoint_id": "venue-agent-hook",
                "webhook_username": WEBHOOK_USER,
                "webhook_password": WEBHOOK_PASSWORD,
            },
        },
        fallback=fallback or {"print_after_seconds": 600},
    )


async def point_webhooks(sim: Sim, running: RunningAgent, **extra: Any) -> None:
    """Tell the simulator where to deliver notifications (the agent's webhook, with Basic auth)."""
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.post(
            f"http://127.0.0.1:{sim.port}/_sim/lightspeed",
            json={
                "webhook_url": f"http://127.0.0.1:{running.agent.port}/v1/webhooks/lightspeed",
                "webhook_username": WEBHOOK_USER,
                "webhook_password": WEBHOOK_PASSWORD,
                "confirm_delay_seconds": 0.05,
                **extra,
            },
        )
        assert response.status_code == 200, response.text


async def detail(running: RunningAgent, order_id: str) -> dict[str, Any]:
    """The order as the agent's API shows it."""
    body: dict[str, Any] = (await running.client.get(f"/v1/orders/{order_id}")).json()
    return body


async def test_to_go_order_is_injected_on_the_success_webhook(tmp_path: Path, sim: Sim) -> None:
    """Accepted (awaiting_pos), then the SUCCESS notification makes it injected with the POS account id."""
    async with run_agent(lightspeed_settings(tmp_path, sim)) as running:
        await point_webhooks(sim, running)
        response = await running.client.post("/v1/orders", json=make_order("ord_ls_1"))
        assert response.status_code == 202
        await running.wait_state("ord_ls_1", "injected")
        shown = await detail(running, "ord_ls_1")
        assert shown["pos_reference"]
        body = sim.state.orders[next(iter(sim.state.orders))].order
        assert body["thirdPartyReference"] == "harbour-kitchen:ord_ls_1"
        assert body["customerInfo"]["firstName"] == "Sam"


async def test_dine_in_goes_to_the_local_endpoint_with_table_and_covers(tmp_path: Path, sim: Sim) -> None:
    """A dine-in order is a local order with its table number and covers."""
    order = make_order("ord_ls_2", fulfillment={"type": "dine_in", "table": "12", "covers": 3})
    async with run_agent(lightspeed_settings(tmp_path, sim)) as running:
        await point_webhooks(sim, running)
        assert (await running.client.post("/v1/orders", json=order)).status_code == 202
        await running.wait_state("ord_ls_2", "injected")
    body = next(iter(sim.state.orders.values())).order
    assert str(body["tableNumber"]) == "12" and body["clientCount"] == 3


async def test_sold_out_failure_fails_the_order_and_snoozes_the_sku_until_eight(tmp_path: Path, sim: Sim) -> None:
    """A FAILURE for a sold-out item fails the order as unavailable and snoozes its SKU until 08:00."""
    async with run_agent(lightspeed_settings(tmp_path, sim)) as running:
        await point_webhooks(sim, running)
        await sim.state.apply_faults({"sold_out_skus": ["PZ-MARG"]})
        assert (await running.client.post("/v1/orders", json=make_order("ord_ls_3"))).status_code == 202
        await running.wait_state("ord_ls_3", "failed")
        shown = await detail(running, "ord_ls_3")
        assert shown["error_class"] == "unavailable"
        now = running.clock.now()
        active = await running.agent.outbox.read(lambda c: snoozes.active(c, now=now))
        assert [s.sku for s in active] == ["PZ-MARG"] and active[0].source == "lightspeed"
        assert active[0].until == snoozes.snooze_until(now, running.agent.settings.venue.tz)


async def test_webhook_needs_basic_auth_and_ignores_unknown_references(tmp_path: Path, sim: Sim) -> None:
    """Wrong credentials get 401; a notification for an order the agent does not know is ignored, 200."""
    async with run_agent(lightspeed_settings(tmp_path, sim)) as running:
        url = "/v1/webhooks/lightspeed"
        unknown = {"type": "ORDER", "status": "SUCCESS", "thirdPartyReference": "someone-else:1"}
        refused = await running.client.post(url, json=unknown, auth=("lightspeed", "wrong"))
        assert refused.status_code == 401
        with capture_logs() as logs:
            ignored = await running.client.post(url, json=unknown, auth=(WEBHOOK_USER, WEBHOOK_PASSWORD))
        assert ignored.status_code == 200 and ignored.json()["status"] == "ignored"
        assert any(e["event"] == "webhook_unknown_reference" for e in logs)
        garbage = await running.client.post(url, json={"hello": "world"}, auth=(WEBHOOK_USER, WEBHOOK_PASSWORD))
        assert garbage.status_code == 422


async def test_never_confirmed_order_gets_a_fallback_ticket_and_unconfirmed(tmp_path: Path, sim: Sim) -> None:
    """No notification within confirm_timeout_seconds: failed/unconfirmed and a fallback ticket."""
    settings = lightspeed_settings(tmp_path, sim)
    async with run_agent(settings) as running:
        await point_webhooks(sim, running)
        await sim.state.apply_faults({"never_confirm": True})
        assert (await running.client.post("/v1/orders", json=make_order("ord_ls_4"))).status_code == 202
        await running.wait_state("ord_ls_4", "awaiting_pos")
        await running.advance(settings.injection.confirm_timeout_seconds + 2)
        await running.wait_state("ord_ls_4", "failed")
        shown = await detail(running, "ord_ls_4")
        assert shown["error_class"] == "unconfirmed"

        async def printed() -> bool:
            return any(t["state"] == "printed" for t in (await detail(running, "ord_ls_4"))["tickets"])

        await eventually(printed, bool)
        # A late SUCCESS still wins: the POS has the order after all.
        late = {"type": "ORDER", "status": "SUCCESS", "thirdPartyReference": "harbour-kitchen:ord_ls_4"}
        answer = await running.client.post("/v1/webhooks/lightspeed", json=late, auth=(WEBHOOK_USER, WEBHOOK_PASSWORD))
        assert answer.json()["status"] == "applied"
        await running.wait_state("ord_ls_4", "injected")


@pytest.mark.parametrize("replays", [2])
async def test_replayed_success_is_a_no_op(tmp_path: Path, sim: Sim, replays: int) -> None:
    """The same SUCCESS notification delivered again changes nothing."""
    async with run_agent(lightspeed_settings(tmp_path, sim)) as running:
        await point_webhooks(sim, running)
        assert (await running.client.post("/v1/orders", json=make_order("ord_ls_5"))).status_code == 202
        await running.wait_state("ord_ls_5", "injected")
        before = await detail(running, "ord_ls_5")
        note = {"type": "ORDER", "status": "SUCCESS", "thirdPartyReference": "harbour-kitchen:ord_ls_5"}
        for _ in range(replays):
            again = await running.client.post(
                "/v1/webhooks/lightspeed", json=note, auth=(WEBHOOK_USER, WEBHOOK_PASSWORD)
            )
            assert again.json()["status"] == "duplicate"
        assert (await detail(running, "ord_ls_5"))["pos_reference"] == before["pos_reference"]


async def test_revoked_token_pauses_injection_until_pos_authorize(tmp_path: Path, sim: Sim) -> None:
    """A refused refresh token pauses injection with an alert; POST /v1/pos/authorize with a new one resumes it."""
    async with httpx.AsyncClient(trust_env=False) as control:
        await control.post(
            f"http://127.0.0.1:{sim.port}/_sim/lightspeed",
            json={"accept_unknown_refresh_tokens": False},
        )
    async with run_agent(lightspeed_settings(tmp_path, sim)) as running:
        await point_webhooks(sim, running, accept_unknown_refresh_tokens=True)
        async with httpx.AsyncClient(trust_env=False) as control:
            # Expire the access token too: under load the agent may have refreshed before the revocation.
            revoke = {"revoke_refresh_tokens": True, "expire_access_tokens": True}
            await control.post(f"http://127.0.0.1:{sim.port}/_sim/lightspeed", json=revoke)
        assert (await running.client.post("/v1/orders", json=make_order("ord_ls_6"))).status_code == 202

        async def pos_state() -> str:
            return str((await running.client.get("/v1/health")).json()["pos"]["state"])

        await eventually(pos_state, lambda s: s == "auth_required")
        assert await running.state_of("ord_ls_6") in ("queued", "retrying", "failed")
        alerts = await running.agent.outbox.alerts()
        assert any("re-authorise" in a["action"] for a in alerts)
        async with httpx.AsyncClient(trust_env=False) as control:
            await control.post(
                f"http://127.0.0.1:{sim.port}/_sim/lightspeed", json={"accept_unknown_refresh_tokens": True}
            )
        answer = await running.client.post("/v1/pos/authorize", json={"refresh_token": "fresh-token-from-portal"})
        assert answer.status_code == 200 and answer.json()["authorized"] is True
        await running.wait_state("ord_ls_6", "injected", timeout=10)


async def test_readiness_not_ready_opens_the_circuit_and_prints_a_fallback(tmp_path: Path, sim: Sim) -> None:
    """The POS reports NOT_READY: health shows the four conditions, and the kitchen gets the ticket at once."""
    async with httpx.AsyncClient(trust_env=False) as control:
        await control.post(f"http://127.0.0.1:{sim.port}/_sim/lightspeed", json={"not_ready": True})
    async with run_agent(lightspeed_settings(tmp_path, sim)) as running:
        await point_webhooks(sim, running)

        async def health() -> dict[str, Any]:
            await running.advance(61)
            body: dict[str, Any] = (await running.client.get("/v1/health")).json()
            return body

        shown = await eventually(health, lambda h: h["pos"]["state"] == "down" and h["pos"]["conditions"])
        assert shown["pos"]["conditions"]["availableDevices"] is False
        assert (await running.client.post("/v1/orders", json=make_order("ord_ls_7"))).status_code == 202

        async def printed() -> bool:
            await running.advance(1)
            return any(t["state"] == "printed" for t in (await detail(running, "ord_ls_7"))["tickets"])

        await eventually(printed, bool)
        assert "harbour-kitchen:ord_ls_7" not in {o.order.get("thirdPartyReference") for o in sim.state.orders.values()}


async def test_restriction_notifications_snooze_and_flag_later_tickets(tmp_path: Path, sim: Sim) -> None:
    """RESTRICTED (none left) snoozes the SKU and later tickets flag it; NOT_RESTRICTED releases it."""
    async with run_agent(lightspeed_settings(tmp_path, sim, print_after_seconds=0)) as running:
        await point_webhooks(sim, running)
        auth = (WEBHOOK_USER, WEBHOOK_PASSWORD)
        url = "/v1/webhooks/lightspeed"
        sold_out = {"type": "ITEM", "sku": "PZ-MARG", "status": "RESTRICTED", "count": 0}
        answer = await running.client.post(url, json=sold_out, auth=auth)
        assert answer.status_code == 200 and answer.json()["status"] == "snoozed"
        now = running.clock.now()
        assert [s.sku for s in await running.agent.outbox.read(lambda c: snoozes.active(c, now=now))] == ["PZ-MARG"]

        await sim.state.apply_faults({"never_confirm": True})
        assert (await running.client.post("/v1/orders", json=make_order("ord_ls_8"))).status_code == 202
        await running.wait_state("ord_ls_8", "awaiting_pos")
        assert (await running.client.post("/v1/orders/ord_ls_8/reprint")).status_code == 202

        async def ticket_text() -> str:
            return (tmp_path / "tickets.txt").read_text(encoding="utf-8") if (tmp_path / "tickets.txt").exists() else ""

        text = await eventually(ticket_text, lambda t: "REPRINT" in t)
        assert "!! SOLD OUT IN POS" in text

        back = {"type": "ITEM", "sku": "PZ-MARG", "status": "NOT_RESTRICTED"}
        assert (await running.client.post(url, json=back, auth=auth)).json()["status"] == "snoozed"
        assert await running.agent.outbox.read(lambda c: snoozes.active(c, now=now)) == []


async def test_sold_out_the_night_the_clocks_go_forward_snoozes_until_eight_bst(tmp_path: Path, sim: Sim) -> None:
    """At 21:00 GMT on 28 March 2026 a sold-out item is snoozed until 08:00 BST (07:00 UTC), not 08:00 GMT."""
    clock = FakeClock(datetime(2026, 3, 28, 21, 0, tzinfo=UTC))
    async with run_agent(lightspeed_settings(tmp_path, sim), clock=clock) as running:
        await point_webhooks(sim, running)
        await sim.state.apply_faults({"sold_out_skus": ["PZ-MARG"]})
        assert (await running.client.post("/v1/orders", json=make_order("ord_ls_9"))).status_code == 202
        await running.wait_state("ord_ls_9", "failed")
        active = await running.agent.outbox.read(lambda c: snoozes.active(c, now=clock.now()))
        assert [(s.sku, s.until) for s in active] == [("PZ-MARG", datetime(2026, 3, 29, 7, 0, tzinfo=UTC))]


async def test_resubmit_after_a_pos_refusal_uses_a_fresh_reference(tmp_path: Path, sim: Sim) -> None:
    """Lightspeed remembers thirdPartyReferences: after a FAILURE, a re-submission goes under a new one and lands."""
    async with run_agent(lightspeed_settings(tmp_path, sim)) as running:
        await point_webhooks(sim, running)
        await sim.state.apply_faults({"sold_out_skus": ["PZ-MARG"]})
        assert (await running.client.post("/v1/orders", json=make_order("ord_ls_10"))).status_code == 202
        await running.wait_state("ord_ls_10", "failed")
        await sim.state.apply_faults({"sold_out_skus": []})
        assert (await running.client.post("/v1/orders/ord_ls_10/resubmit")).status_code == 202
        await running.wait_state("ord_ls_10", "injected")
        references = [o.order["thirdPartyReference"] for o in sim.state.orders.values()]
        assert references == ["harbour-kitchen:ord_ls_10", "harbour-kitchen:ord_ls_10:s1"]


async def test_webhook_without_configured_credentials_is_refused_and_payments_are_ignored(
    tmp_path: Path, sim: Sim
) -> None:
    """No webhook credentials configured: 403 naming the keys. A PAYMENT notification is acknowledged, ignored."""
    settings = lightspeed_settings(tmp_path, sim)
    assert settings.pos.lightspeed_k is not None
    open_settings = settings.model_copy(
        update={
            "pos": settings.pos.model_copy(
                update={
                    "lightspeed_k": settings.pos.lightspeed_k.model_copy(
                        update={"webhook_username": None, "webhook_password": None}
                    )
                }
            )
        }
    )
    async with run_agent(open_settings) as running:
        refused = await running.client.post("/v1/webhooks/lightspeed", json={"type": "ORDER"})
        assert refused.status_code == 403 and "webhook_username" in refused.json()["detail"]
    async with run_agent(settings) as running:
        payment = {"type": "PAYMENT", "status": "SUCCESS", "thirdPartyReference": "x"}
        answer = await running.client.post(
            "/v1/webhooks/lightspeed", json=payment, auth=(WEBHOOK_USER, WEBHOOK_PASSWORD)
        )
        assert answer.status_code == 200 and answer.json()["status"] == "ignored"


async def test_success_for_an_order_waiting_to_be_resent_makes_it_injected(tmp_path: Path, sim: Sim) -> None:
    """The POS's answer was lost (the order waits in retrying), but its SUCCESS notification arrives: injected."""
    async with run_agent(lightspeed_settings(tmp_path, sim)) as running:
        await sim.state.apply_faults({"down": True})
        assert (await running.client.post("/v1/orders", json=make_order("ord_ls_11"))).status_code == 202
        # Whether the send failed (retrying) or the open circuit held it back (queued), it waits to be resent.
        await running.wait_state("ord_ls_11", "retrying", "queued")
        note = {"type": "ORDER", "status": "SUCCESS", "thirdPartyReference": "harbour-kitchen:ord_ls_11"}
        answer = await running.client.post("/v1/webhooks/lightspeed", json=note, auth=(WEBHOOK_USER, WEBHOOK_PASSWORD))
        assert answer.json() == {"status": "applied", "order_id": "ord_ls_11", "state": "injected"}


OUR_LOCATION = 45454545
AUTH = (WEBHOOK_USER, WEBHOOK_PASSWORD)


async def test_another_locations_item_notification_does_not_snooze_our_skus(tmp_path: Path, sim: Sim) -> None:
    """One webhook endpoint may serve several venues: an ITEM for another businessLocationId is logged, ignored."""
    async with run_agent(lightspeed_settings(tmp_path, sim)) as running:
        url = "/v1/webhooks/lightspeed"
        theirs = {**ref.ITEM_RESTRICTED, "sku": "PZ-MARG", "count": 0}  # the OAS example's location, not ours
        with capture_logs() as logs:
            answer = await running.client.post(url, json=theirs, auth=AUTH)
        assert answer.status_code == 200 and answer.json()["status"] == "ignored"
        [logged] = [e for e in logs if e["event"] == "webhook_other_location"]
        assert logged["skus"] == ["PZ-MARG"] and logged["ours"] == OUR_LOCATION
        now = running.clock.now()
        assert await running.agent.outbox.read(lambda c: snoozes.active(c, now=now)) == []

        # The same notification for our location snoozes; a mixed list applies only our entry.
        mixed = [{**theirs, "sku": "PZ-DIAV"}, {**theirs, "businessLocationId": OUR_LOCATION}]
        assert (await running.client.post(url, json=mixed, auth=AUTH)).json()["status"] == "snoozed"
        assert [s.sku for s in await running.agent.outbox.read(lambda c: snoozes.active(c, now=now))] == ["PZ-MARG"]


async def test_readiness_notifications_open_and_close_the_circuit_at_once(tmp_path: Path, sim: Sim) -> None:
    """Lightspeed pushes NOT_READY: the circuit opens without waiting for a probe; READY lets the order in."""
    async with run_agent(lightspeed_settings(tmp_path, sim)) as running:
        await point_webhooks(sim, running)

        async def health() -> dict[str, Any]:
            body: dict[str, Any] = (await running.client.get("/v1/health")).json()
            return body

        def probes() -> int:
            return len([r for r in sim.state.requests if r.path == "/o/op/1/onlineOrderReadiness" and r.status])

        await eventually(lambda: asyncio.sleep(0, probes()), lambda n: n == 1)  # the start-up probe: READY
        await eventually(health, lambda h: h["pos"]["state"] == "ok" and h["pos"]["conditions"])

        # The POS app is closed: the simulator pushes NOT_READY to the webhook (the clock does not move).
        async with httpx.AsyncClient(trust_env=False) as control:
            await control.post(f"http://127.0.0.1:{sim.port}/_sim/lightspeed", json={"not_ready": True})
        shown = await eventually(health, lambda h: h["pos"]["state"] == "down")
        assert shown["pos"]["conditions"]["availableDevices"] is False
        await eventually(running.agent.outbox.alerts, lambda alerts: any(a["alert"] == "pos_down" for a in alerts))
        assert (await running.client.post("/v1/orders", json=make_order("ord_ls_push"))).status_code == 202
        await running.wait_state("ord_ls_push", "queued", "retrying")
        assert "harbour-kitchen:ord_ls_push" not in sim.state.orders

        # Open again: READY is pushed and the waiting order goes in, still without a probe.
        async with httpx.AsyncClient(trust_env=False) as control:
            await control.post(f"http://127.0.0.1:{sim.port}/_sim/lightspeed", json={"not_ready": False})
        await running.wait_state("ord_ls_push", "injected")
        assert probes() == 1  # no probe in between: the clock never moved
        pushed = [d["body"] for d in (await _deliveries(sim)) if d["body"].get("type") == "ORDER_API"]
        assert [b["status"] for b in pushed] == ["NOT_READY", "READY"]
        assert all(b["businessLocationId"] == OUR_LOCATION for b in pushed)


async def test_stale_or_foreign_readiness_notifications_change_nothing(tmp_path: Path, sim: Sim) -> None:
    """A readiness for another location, or one older than the last applied (lastUpdatedAt), is ignored."""
    async with run_agent(lightspeed_settings(tmp_path, sim)) as running:
        url = "/v1/webhooks/lightspeed"

        async def pos_state() -> str:
            return str((await running.client.get("/v1/health")).json()["pos"]["state"])

        async def probed() -> bool:
            return bool((await running.client.get("/v1/health")).json()["pos"]["conditions"])

        await eventually(probed, bool)  # the start-up probe is done; the clock never moves, so no other one
        assert await pos_state() == "ok"
        foreign = await running.client.post(url, json=ref.READINESS_NOT_READY, auth=AUTH)
        assert foreign.json()["status"] == "ignored" and await pos_state() == "ok"

        ours_down = {**ref.READINESS_NOT_READY, "businessLocationId": OUR_LOCATION}
        answer = await running.client.post(url, json=ours_down, auth=AUTH)
        assert answer.json() == {"status": "readiness", "order_id": None, "state": "open"}
        older_up = {**ref.READINESS_READY, "businessLocationId": OUR_LOCATION, "lastUpdatedAt": "2025-10-04T09:39:59Z"}
        assert (await running.client.post(url, json=older_up, auth=AUTH)).json()["status"] == "ignored"
        assert await pos_state() == "down"
        newer_up = {**older_up, "lastUpdatedAt": "2025-10-04T09:41:00Z"}
        assert (await running.client.post(url, json=newer_up, auth=AUTH)).json()["state"] == "closed"
        assert await pos_state() == "ok"
        bad = {**ours_down, "status": "SOMETIMES"}
        assert (await running.client.post(url, json=bad, auth=AUTH)).status_code == 422


async def test_success_with_the_account_id_as_a_string_injects_the_order(tmp_path: Path, sim: Sim) -> None:
    """The OAS's own SUCCESS example carries ikentooAccountId as a string; the agent takes it (and a number)."""
    async with run_agent(lightspeed_settings(tmp_path, sim)) as running:
        await sim.state.apply_faults({"never_confirm": True})
        for order_id, account_id in (("ord_ls_str", "2114502594134196"), ("ord_ls_num", 304087979524124)):
            assert (await running.client.post("/v1/orders", json=make_order(order_id))).status_code == 202
            await running.wait_state(order_id, "awaiting_pos")
            note = {"status": "SUCCESS", "type": "ORDER", "thirdPartyReference": f"harbour-kitchen:{order_id}"}
            note["ikentooAccountId"] = account_id
            answer = await running.client.post("/v1/webhooks/lightspeed", json=note, auth=AUTH)
            assert answer.json() == {"status": "applied", "order_id": order_id, "state": "injected"}
            assert (await detail(running, order_id))["pos_reference"] == str(account_id)


async def _deliveries(sim: Sim) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(trust_env=False) as client:
        shown: list[dict[str, Any]] = (await client.get(f"http://127.0.0.1:{sim.port}/_sim/lightspeed/webhooks")).json()
    return shown
