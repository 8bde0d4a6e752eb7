"""The POS drivers end to end with ``venue-agent run`` as a real process and the simulator on loopback.

Lightspeed K-Series (two-phase: accepted, then a SUCCESS or FAILURE webhook) and Square (one-phase) are driven
the way a venue would meet them: orders posted to the agent's intake API, the outcome read back from the API,
the bodies the POS received read from the simulator, alerts and snoozes read from the outbox file (read-only)
and fallback tickets read from the file printer's text file. The simulator is served in the test's own event
loop (the ``sim`` fixture), so its state can be read directly.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from agent.domain.config import LightspeedKSettings
from agent.domain.models import parse_order
from drivers.pos.base import ALREADY_PRINTED_NOTE
from drivers.pos.lightspeed_mapping import LOCAL_PATH, TO_GO_PATH, build_order_request
from tests.conftest import Sim, make_order
from tests.test_crash_recovery import AgentProcess, Processes, SimProcess, poll, sigterm

pytestmark = pytest.mark.slow

VENUE = "harbour-kitchen"
LOCATION = 45454545
USER, PASSWORD = "lightspeed", "hook-secret"
CLIENT_ID, CLIENT_SECRET = "venue-agent", "client-secret"
SEED = "seed-refresh-token"
BANNER = "FALLBACK - NOT IN POS"
ORDER_PATHS = (TO_GO_PATH, LOCAL_PATH)
# The item line every make_order() order carries, as K-Series receives it.
MARGHERITA_LINE = {"sku": "PZ-MARG", "quantity": 2, "subItems": [{"sku": "MOD-BASIL", "quantity": 1}]}


# ---- configs ---------------------------------------------------------------------------------


def _q(value: object) -> str:
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def _common(tmp_path: Path, agent_port: int, *, injection: str = "") -> str:
    return f"""
[venue]
id = "{VENUE}"
timezone = "Europe/London"

[storage]
path = {_q(tmp_path / "outbox.db")}
min_free_mb = 0

[intake]
listen = "127.0.0.1:{agent_port}"

[injection]
{injection}

[fallback]
print_after_seconds = 600

[[printers]]
name = "pass"
connection = "file"
path = {_q(tmp_path / "tickets.txt")}

[discovery]
advertise = false

[logging]
level = "info"
format = "json"
"""


def lightspeed_config(tmp_path: Path, *, agent_port: int, sim_port: int, native_discounts: bool = False) -> str:
    """An agent config with the lightspeed_k driver pointed at the simulator."""
    return (
        _common(tmp_path, agent_port)
        + f"""
[pos]
driver = "lightspeed_k"
rate_limit_per_second = 50

[pos.lightspeed_k]
base_url = "http://127.0.0.1:{sim_port}"
business_location_id = {LOCATION}
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
refresh_token = "{SEED}"
endpoint_id = "venue-agent-hook"
webhook_username = "{USER}"
webhook_password = "{PASSWORD}"
native_discounts = {str(native_discounts).lower()}
"""
    )


def square_config(tmp_path: Path, *, agent_port: int, sim_port: int) -> str:
    """An agent config with the square driver pointed at the simulator; PZ-GHOST maps to an id Square lacks."""
    return (
        _common(tmp_path, agent_port, injection="backoff_base_seconds = 0.05\nbackoff_max_seconds = 0.2")
        + f"""
[pos]
driver = "square"
rate_limit_per_second = 50

[pos.square]
base_url = "http://127.0.0.1:{sim_port}"
location_id = "LSIM-HARBOUR"
access_token = "sq-sim-access-token"

[pos.square.catalog]
PZ-MARG = "SQ-VAR-MARG"
MOD-BASIL = "SQ-MOD-BASIL"
PZ-GHOST = "SQ-VAR-GHOST"
"""
    )


# ---- helpers ---------------------------------------------------------------------------------


@pytest.fixture(name="procs")
def _procs(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.close()


async def start_agent(
    procs: Processes, tmp_path: Path, sim: Sim, client: httpx.AsyncClient, **options: Any
) -> AgentProcess:
    """Start ``venue-agent run`` (Lightspeed unless ``square=True``) and wait until its API answers."""
    agent = AgentProcess(procs, tmp_path, sim.port)
    if options.pop("square", False):
        text = square_config(tmp_path, agent_port=agent.port, sim_port=sim.port)
    else:
        text = lightspeed_config(tmp_path, agent_port=agent.port, sim_port=sim.port, **options)
    agent.config.write_text(text, encoding="utf-8")
    agent.start()
    await agent.wait_ready(client)
    return agent


async def lightspeed(client: httpx.AsyncClient, sim: Sim, **settings: Any) -> dict[str, Any]:
    """Change (or with no settings, read) the simulator's Lightspeed dialect."""
    url = f"http://127.0.0.1:{sim.port}/_sim/lightspeed"
    response = await (client.post(url, json=settings) if settings else client.get(url))
    assert response.status_code == 200, response.text
    shown: dict[str, Any] = response.json()
    return shown


async def point_webhooks(client: httpx.AsyncClient, sim: Sim, agent: AgentProcess, **extra: Any) -> None:
    """Tell the simulator to deliver notifications to the agent's webhook (HTTP Basic), 0.05 s after accepting."""
    await lightspeed(
        client,
        sim,
        webhook_url=f"{agent.base}/v1/webhooks/lightspeed",
        webhook_username=USER,
        webhook_password=PASSWORD,
        confirm_delay_seconds=0.05,
        **extra,
    )


async def post(client: httpx.AsyncClient, agent: AgentProcess, order: dict[str, Any]) -> None:
    """Post an order to the agent; it must be acknowledged as new."""
    response = await client.post(f"{agent.base}/v1/orders", json=order)
    assert response.status_code == 202, response.text


async def detail(client: httpx.AsyncClient, agent: AgentProcess, order_id: str) -> dict[str, Any]:
    """The order as ``GET /v1/orders/{id}`` shows it."""
    response = await client.get(f"{agent.base}/v1/orders/{order_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_state(
    client: httpx.AsyncClient, agent: AgentProcess, order_id: str, *states: str, timeout: float = 10
) -> dict[str, Any]:
    """Poll the order until it is in one of ``states``; return its detail."""

    async def reached() -> dict[str, Any] | None:
        shown = await detail(client, agent, order_id)
        return shown if shown["state"] in states else None

    result: dict[str, Any] = await poll(reached, timeout=timeout, what=f"{order_id} in {states}", interval=0.02)
    return result


async def health(client: httpx.AsyncClient, agent: AgentProcess) -> dict[str, Any]:
    """``GET /v1/health``."""
    body: dict[str, Any] = (await client.get(f"{agent.base}/v1/health")).json()
    return body


async def wait_pos_state(
    client: httpx.AsyncClient, agent: AgentProcess, state: str, *, timeout: float
) -> dict[str, Any]:
    """Poll health until ``pos.state`` is ``state``; return the snapshot."""

    async def reached() -> dict[str, Any] | None:
        shown = await health(client, agent)
        return shown if shown["pos"]["state"] == state else None

    result: dict[str, Any] = await poll(reached, timeout=timeout, what=f"pos.state {state}", interval=0.05)
    return result


async def wait_ticket(client: httpx.AsyncClient, agent: AgentProcess, tmp_path: Path, order_id: str, code: str) -> str:
    """Wait until the order's ticket is recorded as printed; return its text from the file printer's file."""

    async def printed() -> bool:
        return any(t["state"] == "printed" for t in (await detail(client, agent, order_id))["tickets"])

    await poll(printed, timeout=10, what=f"ticket for {order_id} printed", interval=0.05)
    found = [t for t in tickets(tmp_path) if code in t]
    assert len(found) == 1, f"expected one ticket showing {code} in the tickets file, found {len(found)}"
    return found[0]


def tickets(tmp_path: Path) -> list[str]:
    """Every ticket the file printer wrote, in order."""
    path = tmp_path / "tickets.txt"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return [t for t in text.split("--- cut ---") if t.strip()]


def outbox_rows(tmp_path: Path, sql: str, *params: object) -> list[sqlite3.Row]:
    """Read the running agent's outbox file read-only (WAL lets a reader in)."""
    conn = sqlite3.connect(f"file:{tmp_path / 'outbox.db'}?mode=ro", uri=True, timeout=5)
    conn.row_factory = sqlite3.Row
    try:
        return list(conn.execute(sql, params).fetchall())
    finally:
        conn.close()


def alerts(tmp_path: Path, name: str) -> list[dict[str, Any]]:
    """The payloads of the alerts called ``name``, each with its order id."""
    rows = outbox_rows(tmp_path, "SELECT order_id, payload FROM alerts WHERE alert = ? ORDER BY seq", name)
    return [{"order_id": r["order_id"], **json.loads(r["payload"])} for r in rows]


async def one_alert(tmp_path: Path, name: str) -> None:
    """Wait until exactly one ``name`` alert is committed (health can show the state a moment before the row lands)."""

    async def committed() -> bool:
        return len(alerts(tmp_path, name)) >= 1

    await poll(committed, timeout=5, what=f"{name} alert")
    assert len(alerts(tmp_path, name)) == 1


def pos_posts(sim: Sim, reference: str) -> list[tuple[str, int]]:
    """(path, status) of every K-Series order POST the simulator received for ``reference``."""
    return [(r.path, r.status) for r in sim.state.requests if r.path in ORDER_PATHS and r.idempotency_key == reference]


def pos_body(sim: Sim, reference: str) -> dict[str, Any]:
    """The body the POS holds for ``reference`` (exactly one order under it)."""
    found = [r.order for r in sim.state.orders.values() if r.order.get("thirdPartyReference") == reference]
    assert len(found) == 1, f"the POS holds {len(found)} orders under {reference}"
    return found[0]


def ref(order_id: str) -> str:
    return f"{VENUE}:{order_id}"


def margherita_order(order_id: str, code: str, **changes: Any) -> dict[str, Any]:
    """make_order() with its own display code (so its ticket can be told apart)."""
    return make_order(order_id, display_code=code, **changes)


def priced(
    order_id: str, code: str, *, charges: dict[str, int], discounts: list[dict[str, Any]], **changes: Any
) -> dict[str, Any]:
    """A Margherita order (2 x (9.50 + 0.50 basil) = 20.00) with its total made to add up."""
    total = 2000 + sum(charges.values()) - sum(d["amount"] for d in discounts)
    payment = {"status": "paid", "method": "card", "amount": total, "currency": "GBP"}
    return margherita_order(
        order_id, code, charges=charges, discounts=discounts, payment=payment, total=total, **changes
    )


# ---- Lightspeed K-Series ---------------------------------------------------------------------


async def test_lightspeed_orders_through_a_real_agent_process(tmp_path: Path, procs: Processes, sim: Sim) -> None:
    """To-go, dine-in and delivery orders reach the POS as K-Series bodies; a sold-out one fails."""
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        # confirm_timeout_seconds is at least 60 for Lightspeed (config check refuses less): the never-confirmed
        # order is tested in-process with a FakeClock (test_lightspeed_e2e), not here in real time.
        agent = await start_agent(procs, tmp_path, sim, client)
        await point_webhooks(client, sim, agent)
        await sim.state.apply_faults({"sold_out_skus": ["PZ-DIAV"]})

        pickup = margherita_order("ord_ls_pickup", "LSPICK01")
        dine_in = margherita_order(
            "ord_ls_table", "LSTABLE1", fulfillment={"type": "dine_in", "table": "12", "covers": 3}
        )
        delivery = priced(
            "ord_ls_delivery",
            "LSDELIV1",
            fulfillment={
                "type": "delivery",
                "address": {"line1": "1 Quay Street", "city": "Bristol", "postcode": "BS1 4DJ"},
            },
            charges={"delivery_fee": 350, "service_charge": 125, "tip": 100},
            discounts=[
                {"kind": "discount", "code": "SUMMER10", "pos_id": None, "description": "10% off", "amount": 190}
            ],
        )
        diavola = {"name": "Diavola", "sku": "PZ-DIAV", "quantity": 1, "unit_price": 1100, "modifiers": []}
        sold_out = make_order(
            "ord_ls_soldout",
            display_code="LSSOLD01",
            items=[diavola],
            charges={"delivery_fee": 0, "service_charge": 0, "tip": 0},
            discounts=[],
            payment={"status": "paid", "method": "card", "amount": 1100, "currency": "GBP"},
            total=1100,
        )
        await asyncio.gather(*(post(client, agent, o) for o in (pickup, dine_in, delivery, sold_out)))

        # To-go pickup: accepted (awaiting_pos), then injected on the SUCCESS webhook with the POS account id.
        shown = await wait_state(client, agent, "ord_ls_pickup", "injected")
        assert [e["type"] for e in shown["events"] if e["type"] in ("awaiting_pos", "injected")] == [
            "awaiting_pos",
            "injected",
        ]
        assert pos_posts(sim, ref("ord_ls_pickup")) == [(TO_GO_PATH, 200)]
        hooks = (await client.get(f"http://127.0.0.1:{sim.port}/_sim/lightspeed/webhooks")).json()
        success = [h for h in hooks if h["thirdPartyReference"] == ref("ord_ls_pickup")]
        assert [(h["body"]["status"], h["status"]) for h in success] == [("SUCCESS", 200)]
        assert shown["pos_reference"] == success[0]["body"]["ikentooAccountIdentifier"]
        body = pos_body(sim, ref("ord_ls_pickup"))
        assert body["businessLocationId"] == LOCATION and body["collectionCode"] == "LSPICK01"
        assert body["customerInfo"]["firstName"] == "Sam"
        assert "tableNumber" not in body

        # Dine-in: a local order with its table number and covers.
        await wait_state(client, agent, "ord_ls_table", "injected")
        assert pos_posts(sim, ref("ord_ls_table")) == [(LOCAL_PATH, 200)]
        body = pos_body(sim, ref("ord_ls_table"))
        assert (body["tableNumber"], body["clientCount"]) == ("12", 3)

        # Delivery: fee, service charge and the discount (no pos_id) as open-price lines on the configured SKUs.
        await wait_state(client, agent, "ord_ls_delivery", "injected")
        assert pos_posts(sim, ref("ord_ls_delivery")) == [(TO_GO_PATH, 200)]
        body = pos_body(sim, ref("ord_ls_delivery"))
        assert body["items"] == [
            MARGHERITA_LINE,
            {"sku": "STOREKIT_DELIVERY", "quantity": 1, "customItemPrice": 3.5},
            {"sku": "STOREKIT_SERVICE_CHARGE", "quantity": 1, "customItemPrice": 1.25},
            {"sku": "STOREKIT_DISCOUNT", "quantity": 1, "customItemPrice": 1.9},
        ]
        assert body["payment"] == {"paymentMethod": "STOREKIT", "paymentAmount": 23.85, "tipAmount": 1}
        assert body["deliveryAddress"] == {"addressLine1": "1 Quay Street", "zip": "BS1 4DJ", "city": "Bristol"}

        # Sold out: the FAILURE webhook fails the order as unavailable and snoozes the SKU.
        shown = await wait_state(client, agent, "ord_ls_soldout", "failed")
        assert shown["error_class"] == "unavailable", shown
        snoozed = [e for e in shown["events"] if e["type"] == "snoozed"]
        assert len(snoozed) == 1, shown["events"]
        rows = outbox_rows(tmp_path, "SELECT sku, source, order_id, until FROM snoozes")
        assert [(r["sku"], r["source"], r["order_id"]) for r in rows] == [("PZ-DIAV", "lightspeed", "ord_ls_soldout")]
        assert rows[0]["until"] is not None
        failed = [a for a in alerts(tmp_path, "order_failed") if a["order_id"] == "ord_ls_soldout"]
        assert [a["error_class"] for a in failed] == ["unavailable"]
        assert "PZ-DIAV" in failed[0]["reason"]

        # The orders the POS confirmed got no ticket.
        assert not [t for t in tickets(tmp_path) if any(c in t for c in ("LSPICK01", "LSTABLE1", "LSDELIV1"))]


async def test_lightspeed_not_ready_prints_then_native_discounts(tmp_path: Path, procs: Processes, sim: Sim) -> None:
    """NOT_READY: a new order is printed, not sent; once READY it goes in marked. Native discounts as discountCode."""
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        await lightspeed(client, sim, not_ready=True)
        agent = await start_agent(procs, tmp_path, sim, client, native_discounts=True)
        await point_webhooks(client, sim, agent)
        shown = await wait_pos_state(client, agent, "down", timeout=10)
        assert shown["pos"]["conditions"]["availableDevices"] is False
        await one_alert(tmp_path, "pos_down")

        await post(client, agent, margherita_order("ord_ls_notready", "LSNOTRDY"))
        ticket = await wait_ticket(client, agent, tmp_path, "ord_ls_notready", "LSNOTRDY")
        assert BANNER in ticket
        assert (await detail(client, agent, "ord_ls_notready"))["state"] in ("queued", "retrying")
        assert not [r for r in sim.state.requests if r.path in ORDER_PATHS], "an order reached a POS that is not ready"
        assert [a["order_id"] for a in alerts(tmp_path, "fallback_printed")] == ["ord_ls_notready"]

        # READY again: the circuit's next probe (5 s after it opened) lets the printed order in, marked.
        await lightspeed(client, sim, not_ready=False)
        await wait_state(client, agent, "ord_ls_notready", "injected", timeout=15)
        assert ALREADY_PRINTED_NOTE in pos_body(sim, ref("ord_ls_notready"))["orderNote"]

        # native_discounts: the discount with a pos_id is the items' discountCode; the other one a discount line.
        native = priced(
            "ord_ls_native",
            "LSNATIVE",
            charges={"delivery_fee": 0, "service_charge": 0, "tip": 100},
            discounts=[
                {"kind": "discount", "code": "STAFF", "pos_id": "STAFF20", "description": "Staff", "amount": 200},
                {"kind": "discount", "code": "SUMMER10", "pos_id": None, "description": "10% off", "amount": 190},
            ],
        )
        await post(client, agent, native)
        await wait_state(client, agent, "ord_ls_native", "injected")
        assert pos_body(sim, ref("ord_ls_native"))["items"] == [
            {**MARGHERITA_LINE, "discountCode": "STAFF20"},
            {"sku": "STOREKIT_DISCOUNT", "quantity": 1, "customItemPrice": 1.9},
        ]
        assert len(tickets(tmp_path)) == 1


async def test_lightspeed_409_reference_already_used_counts_as_accepted(
    tmp_path: Path, procs: Processes, sim: Sim
) -> None:
    """The POS already holds the thirdPartyReference: the agent's 409 means accepted; the webhook injects it."""
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        agent = await start_agent(procs, tmp_path, sim, client)
        await point_webhooks(client, sim, agent)
        order = margherita_order("ord_ls_resent", "LSRESENT")
        reference = ref("ord_ls_resent")

        # Pre-seed the POS with the very body the agent sends, as if an earlier attempt had reached it; its
        # SUCCESS webhook is held back 2 s so that it lands after the agent's own attempt.
        token = await client.post(
            f"http://127.0.0.1:{sim.port}/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": "another-installation"},
            auth=(CLIENT_ID, CLIENT_SECRET),
        )
        assert token.status_code == 200, token.text
        settings = LightspeedKSettings(business_location_id=LOCATION, endpoint_id="venue-agent-hook")
        path, body = build_order_request(
            parse_order(order, venue_id=VENUE, currency="GBP"),
            settings=settings,
            idempotency_key=reference,
            already_printed=False,
            tz=ZoneInfo("Europe/London"),
            now=datetime.now(UTC),
        )
        await lightspeed(client, sim, confirm_delay_seconds=2.0)
        seeded = await client.post(
            f"http://127.0.0.1:{sim.port}{path}",
            json=body,
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
        )
        assert seeded.status_code == 200 and seeded.json() == {"status": "ok"}, seeded.text
        await lightspeed(client, sim, confirm_delay_seconds=0.05)

        await post(client, agent, order)
        waiting = await wait_state(client, agent, "ord_ls_resent", "awaiting_pos", timeout=2)
        assert waiting["error_class"] is None and waiting["last_error"] is None
        assert pos_posts(sim, reference) == [(TO_GO_PATH, 200), (TO_GO_PATH, 409)]

        shown = await wait_state(client, agent, "ord_ls_resent", "injected", timeout=10)
        assert pos_body(sim, reference) == body  # one order in the POS: the first one
        assert len(sim.state.orders) == 1
        assert shown["pos_reference"] == sim.state.orders[reference].pos_reference
        assert [e["type"] for e in shown["events"] if e["type"] in ("awaiting_pos", "injected", "failed")] == [
            "awaiting_pos",
            "injected",
        ]
        accepted = [e for e in agent.log_events("pos_order_accepted") if e["idempotency_key"] == reference]
        assert [e["status"] for e in accepted] == [409]
        assert not tickets(tmp_path)


async def test_lightspeed_crash_between_token_rotation_and_commit(tmp_path: Path, procs: Processes, sim: Sim) -> None:
    """SIGKILL while the POS rotated the refresh token but had not answered: auth_required, alert, then re-authorise."""
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        await lightspeed(client, sim, token_answer_delay_seconds=30)
        agent = await start_agent(procs, tmp_path, sim, client)
        await point_webhooks(client, sim, agent)

        async def token_request_held() -> bool:
            return (await lightspeed(client, sim))["pending_token_requests"] == 1

        await poll(token_request_held, timeout=10, what="the agent's refresh held by the POS after rotating")
        await post(client, agent, margherita_order("ord_ls_waiting", "LSWAIT01"))
        await wait_state(client, agent, "ord_ls_waiting", "sending")  # waiting for the token
        agent.kill()
        await lightspeed(client, sim, token_answer_delay_seconds=0)  # the answer now goes nowhere
        kv = dict(
            (r["key"], r["value"]) for r in outbox_rows(tmp_path, "SELECT key, value FROM kv WHERE key LIKE 'pos.%'")
        )
        prefix = f"pos.lightspeed_k.{LOCATION}"
        assert kv.get(f"{prefix}.refresh_started"), "the agent was not killed inside a refresh"
        assert not kv.get(f"{prefix}.refresh_token"), "the rotated token reached the disk: not the crash window"

        agent.start()
        await agent.wait_ready(client)
        await wait_pos_state(client, agent, "auth_required", timeout=10)
        # The order, requeued in doubt at start-up, is held back (or failed on credentials) until re-authorised.
        held = await wait_state(client, agent, "ord_ls_waiting", "queued", "retrying", "failed")
        assert held["error_class"] in (None, "auth"), held
        raised = alerts(tmp_path, "pos_auth_required")
        assert len(raised) == 1, raised
        assert "re-authorise" in raised[0]["action"]
        assert "venue-agent pos authorize" in raised[0]["reason"]
        assert "interrupted token refresh" in raised[0]["reason"]
        refused = [e for e in agent.log_events("pos_token_refresh_failed") if e.get("error") == "invalid_grant"]
        assert refused and refused[0]["interrupted"] is True
        assert not pos_posts(sim, ref("ord_ls_waiting"))

        # The technician re-authorises with a token from the portal (one the POS accepts).
        token_file = tmp_path / "token.txt"
        token_file.write_text("fresh-token-from-the-portal\n", encoding="utf-8")
        cli, log_path = procs.spawn(
            "authorize", "pos", "authorize", "--config", str(agent.config), "--file", str(token_file)
        )

        async def exited() -> bool:
            return cli.poll() is not None

        await poll(exited, timeout=15, what="venue-agent pos authorize exited", interval=0.05)
        said = log_path.read_text(encoding="utf-8")
        assert cli.returncode == 0, said
        assert said.startswith("authorised:"), said
        assert "fresh-token-from-the-portal" not in said

        shown = await wait_state(client, agent, "ord_ls_waiting", "injected", timeout=15)
        assert shown["pos_reference"]
        assert pos_posts(sim, ref("ord_ls_waiting")) == [(TO_GO_PATH, 200)]
        # Meanwhile the kitchen got the order on paper, so the POS gets it marked as already printed.
        assert BANNER in await wait_ticket(client, agent, tmp_path, "ord_ls_waiting", "LSWAIT01")
        assert ALREADY_PRINTED_NOTE in pos_body(sim, ref("ord_ls_waiting"))["orderNote"]
        await wait_pos_state(client, agent, "ok", timeout=5)


async def test_lightspeed_client_credentials_go_by_basic_to_a_real_pos_sim_process(
    tmp_path: Path, procs: Processes
) -> None:
    """``venue-agent run`` and ``venue-agent pos-sim`` as two processes: the token request authenticates the client
    with HTTP Basic and carries only the grant; a wrong client_secret is ``auth_required`` with an alert naming the
    client credentials (not re-authorisation), and the seed refresh token survives it; fixed and restarted, the
    order held meanwhile goes in."""
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        sim = SimProcess(procs, client)
        await sim.start(timeout=30)
        control = f"{sim.base}/_sim/lightspeed"
        strict = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "business_location_id": LOCATION}
        assert (await client.post(control, json=strict)).status_code == 200

        agent = AgentProcess(procs, tmp_path, sim.port)
        good = lightspeed_config(tmp_path, agent_port=agent.port, sim_port=sim.port)
        agent.config.write_text(good.replace(f'"{CLIENT_SECRET}"', '"a-mistyped-secret"'), encoding="utf-8")
        agent.start()
        await agent.wait_ready(client, timeout=30)  # a loaded CI box starts slowly
        await wait_pos_state(client, agent, "auth_required", timeout=20)
        await one_alert(tmp_path, "pos_auth_required")
        [alert] = alerts(tmp_path, "pos_auth_required")
        assert "invalid_client" in alert["reason"]
        assert "client credentials (pos.lightspeed_k.client_id / client_secret) are wrong" in alert["reason"]
        assert "restart the agent" in alert["action"] and "does not help" in alert["action"]
        refused = (await client.get(control)).json()["last_token_request"]
        assert refused == {"client_authentication": "basic", "form_fields": ["grant_type", "refresh_token"]}

        # An order arriving meanwhile waits: nothing reaches the POS with a client it refuses.
        await post(client, agent, margherita_order("ord_ls_basic", "LSBASIC1"))
        await wait_state(client, agent, "ord_ls_basic", "queued")
        assert not [o for o in (await client.get(f"{sim.base}/_sim/orders")).json()]

        # The technician corrects client_secret and restarts the agent. The simulator learns where to deliver its
        # notifications first: the restarted agent may inject the held order before its API is seen to answer.
        await sigterm(agent, within=15)
        webhooks = {
            "webhook_url": f"{agent.base}/v1/webhooks/lightspeed",
            "webhook_username": USER,
            "webhook_password": PASSWORD,
            "confirm_delay_seconds": 0.05,
        }
        assert (await client.post(control, json=webhooks)).status_code == 200
        agent.config.write_text(good, encoding="utf-8")
        agent.start()
        await agent.wait_ready(client, timeout=30)  # a loaded CI box starts slowly
        shown = await wait_state(client, agent, "ord_ls_basic", "injected", timeout=15)
        assert shown["pos_reference"]
        await wait_pos_state(client, agent, "ok", timeout=20)

        requests = (await client.get(f"{sim.base}/_sim/requests")).json()
        token_statuses = [r["status"] for r in requests if r["path"] == "/oauth/token"]
        # Refused once (the wrong secret; probes did not hammer it), then the same seed accepted: it was never spent.
        assert token_statuses == [401, 200], token_statuses
        used = (await client.get(control)).json()["last_token_request"]
        assert used == {"client_authentication": "basic", "form_fields": ["grant_type", "refresh_token"]}
        assert [o["key"] for o in (await client.get(f"{sim.base}/_sim/orders")).json()] == [ref("ord_ls_basic")]
        log_text = agent.logs()
        assert CLIENT_SECRET not in log_text and "a-mistyped-secret" not in log_text


# ---- Square ----------------------------------------------------------------------------------


async def test_square_orders_through_a_real_agent_process(tmp_path: Path, procs: Processes, sim: Sim) -> None:
    """Square: injected with Square's order id; an unknown catalog id fails as menu; a down POS prints a ticket."""
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        agent = await start_agent(procs, tmp_path, sim, client, square=True)

        await post(client, agent, margherita_order("ord_sq_1", "SQORDER1"))
        shown = await wait_state(client, agent, "ord_sq_1", "injected")
        assert list(sim.state.orders) == [ref("ord_sq_1")]
        record = sim.state.orders[ref("ord_sq_1")]
        assert shown["pos_reference"] == record.pos_reference
        assert record.order["location_id"] == "LSIM-HARBOUR"
        assert record.order["line_items"][0]["catalog_object_id"] == "SQ-VAR-MARG"

        ghost = {"name": "Ghost pepper pizza", "sku": "PZ-GHOST", "quantity": 1, "unit_price": 1200, "modifiers": []}
        await post(
            client,
            agent,
            make_order(
                "ord_sq_ghost",
                display_code="SQGHOST1",
                items=[ghost],
                charges={"delivery_fee": 0, "service_charge": 0, "tip": 0},
                discounts=[],
                payment={"status": "paid", "method": "card", "amount": 1200, "currency": "GBP"},
                total=1200,
            ),
        )
        shown = await wait_state(client, agent, "ord_sq_ghost", "failed")
        assert shown["error_class"] == "menu", shown
        assert [a["error_class"] for a in alerts(tmp_path, "order_failed")] == ["menu"]
        assert "SQ-VAR-GHOST" in shown["last_error"] or "PZ-GHOST" in shown["last_error"], shown["last_error"]
        assert list(sim.state.orders) == [ref("ord_sq_1")]

        await sim.state.apply_faults({"down": True, "retry_after_seconds": 0})
        await post(client, agent, margherita_order("ord_sq_down", "SQDOWN01"))
        ticket = await wait_ticket(client, agent, tmp_path, "ord_sq_down", "SQDOWN01")
        assert BANNER in ticket
        assert (await detail(client, agent, "ord_sq_down"))["state"] in ("queued", "retrying")
        assert (await health(client, agent))["pos"]["state"] == "down"
        await one_alert(tmp_path, "pos_down")
        assert list(sim.state.orders) == [ref("ord_sq_1")]
        assert not [t for t in tickets(tmp_path) if "SQORDER1" in t]
