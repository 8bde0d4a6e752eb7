"""Hostile intake bodies against the real ``venue-agent run`` process, and the bearer scheme.

Each case goes over one keep-alive connection: it must answer 422 ``application/problem+json`` naming the field
(or ``body``), store nothing, and leave that same connection usable for a valid order (202).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Sim, make_order
from tests.test_crash_recovery import AgentProcess, Processes
from tests.test_lightspeed_restart import PASSWORD, USER, config_text

pytestmark = pytest.mark.slow

TOKEN = "intake-s3cret"
PROBLEM_JSON = "application/problem+json"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def _raw(order: dict[str, Any], key: str, literal: str) -> bytes:
    """Return the order's JSON with the value of top-level ``key`` replaced by the raw JSON text ``literal``."""
    marker = "__RAW_VALUE__"
    text = json.dumps({**order, key: marker})
    return text.replace(json.dumps(marker), literal, 1).encode()


def _nesting(levels: int) -> str:
    return "[" * levels + "]" * levels


def _duplicate_id(order: dict[str, Any]) -> bytes:
    text = json.dumps(order)
    # The first "id" is the valid one; a second, different "id" in the same object must not silently win.
    return text.replace('"id": ', '"id": "ord_shadow", "id": ', 1).encode()


def _duplicate_nested(order: dict[str, Any]) -> bytes:
    text = json.dumps(order)
    return text.replace('"quantity": 2,', '"quantity": 2, "quantity": 1,', 1).encode()


ORDER_CASES: list[tuple[str, bytes, list[Any]]] = [
    ("nesting-1000", _raw(make_order(), "notes", _nesting(1000)), ["body"]),
    ("nesting-100000", _raw(make_order(), "notes", _nesting(100_000)), ["body"]),
    ("bare-nesting", _nesting(5000).encode(), ["body"]),
    ("int-5000-digits", _raw(make_order(), "total", "1" * 5000), ["total"]),
    ("negative-int-5000-digits", _raw(make_order(), "total", "-" + "9" * 5000), ["total"]),
    ("float-5000-digits", _raw(make_order(), "total", "0." + "1" * 5000), ["total"]),
    ("exponent-overflow", _raw(make_order(), "total", "1e999"), ["total"]),
    ("nan", _raw(make_order(), "total", "NaN"), ["total"]),
    ("duplicate-id", _duplicate_id(make_order()), ["id"]),
    ("duplicate-nested-key", _duplicate_nested(make_order()), ["items", 0, "quantity"]),
    ("lone-surrogate", _raw(make_order(), "notes", '"no \\ud800 cutlery"'), ["notes"]),
    ("created-at-epoch", _raw(make_order(), "created_at", "1763899205"), ["created_at"]),
    ("created-at-epoch-float", _raw(make_order(), "created_at", "1763899205.5"), ["created_at"]),
    ("created-at-epoch-string", _raw(make_order(), "created_at", '"1763899205"'), ["created_at"]),
    ("created-at-no-offset", _raw(make_order(), "created_at", '"2026-11-23T12:00:05"'), ["created_at"]),
    ("created-at-date-only", _raw(make_order(), "created_at", '"2026-11-23"'), ["created_at"]),
    ("created-at-no-seconds", _raw(make_order(), "created_at", '"2026-11-23T12:00+00:00"'), ["created_at"]),
    ("created-at-compact-offset", _raw(make_order(), "created_at", '"2026-11-23T12:00:05+0000"'), ["created_at"]),
    ("requested-at-epoch", _raw(make_order(), "requested_at", "1763906405"), ["requested_at"]),
    ("requested-at-no-offset", _raw(make_order(), "requested_at", '"2026-11-23T14:00:00"'), ["requested_at"]),
]


@pytest.fixture(name="agent")
async def _agent(tmp_path: Path, procs: Processes, sim: Sim) -> AsyncIterator[AgentProcess]:
    """A real agent process (Lightspeed driver, so the webhook is served) with an intake token."""
    agent = AgentProcess(procs, tmp_path, sim.port)
    text = config_text(tmp_path, agent_port=agent.port, sim_port=sim.port)
    agent.config.write_text(text.replace("[intake]\n", f'[intake]\ntoken = "{TOKEN}"\n', 1), encoding="utf-8")
    agent.start()
    async with httpx.AsyncClient(trust_env=False, timeout=10, headers=_bearer()) as probe:
        await agent.wait_ready(probe, timeout=20)
    yield agent


def _bearer(scheme: str = "Bearer", token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"{scheme} {token}"}


@pytest.fixture(name="one")
async def _one(agent: AgentProcess) -> AsyncIterator[httpx.AsyncClient]:
    """Return a client that can hold exactly one connection, so every request reuses it (or must reconnect)."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(
        base_url=agent.base, trust_env=False, timeout=20, limits=limits, headers=_bearer()
    ) as client:
        yield client


def _local_port(response: httpx.Response) -> int:
    """Return the client-side port of the TCP connection that carried ``response``; -1 once the agent closed it."""
    stream = response.extensions["network_stream"]
    try:
        return int(stream.get_extra_info("client_addr")[1])
    except OSError:
        return -1


def _assert_problem(response: httpx.Response, loc: list[Any], *, case: str) -> None:
    assert response.status_code == 422, f"{case}: {response.status_code} {response.text[:500]}"
    assert response.headers["content-type"].startswith(PROBLEM_JSON), case
    body = response.json()
    assert body["status"] == 422, case
    assert body["detail"], case
    locs = [e["loc"] for e in body["errors"]]
    assert loc in locs, f"{case}: {locs}"
    assert all(e["msg"] for e in body["errors"]), case


async def _stored(client: httpx.AsyncClient) -> list[Any]:
    response = await client.get("/v1/orders")
    assert response.status_code == 200, response.text
    orders: list[Any] = response.json()["orders"]
    return orders


async def test_hostile_order_bodies_get_422_and_keep_the_connection(one: httpx.AsyncClient) -> None:
    """Nesting bombs, huge numbers, duplicate keys, bad times: 422 naming the field, nothing stored, same connection."""
    first = await one.get("/v1/orders")
    port = _local_port(first)
    json_header = {"Content-Type": "application/json"}

    for case, body, loc in ORDER_CASES:
        response = await one.post("/v1/orders", content=body, headers=json_header)
        _assert_problem(response, loc, case=case)
        assert _local_port(response) == port, f"{case}: the agent dropped the keep-alive connection"
        assert await _stored(one) == [], case

    accepted = await one.post("/v1/orders", json=make_order("ord_after_hostile"))
    assert accepted.status_code == 202, accepted.text
    assert _local_port(accepted) == port
    assert [o["order_id"] for o in await _stored(one)] == ["ord_after_hostile"]


async def test_every_json_body_endpoint_uses_the_safe_parser(one: httpx.AsyncClient) -> None:
    """PUT, payment, POS authorize and the Lightspeed webhook refuse the same bodies with 422, on one connection."""
    held = make_order("ord_held", payment={"status": "pending", "method": "card", "amount": 1910, "currency": "GBP"})
    created = await one.post("/v1/orders", json=held)
    assert created.status_code == 202, created.text
    port = _local_port(created)
    json_header = {"Content-Type": "application/json"}
    bomb = _nesting(1000).encode()
    huge = ("1" * 5000).encode()
    targets: list[tuple[str, dict[str, str]]] = [
        ("/v1/orders/ord_held", {}),
        ("/v1/orders/ord_held/payment", {}),
        ("/v1/pos/authorize", {}),
        ("/v1/webhooks/lightspeed", {"Authorization": BASIC}),
    ]
    for path, auth in targets:
        method = "PUT" if path == "/v1/orders/ord_held" else "POST"
        for case, body, loc in (
            ("nesting", bomb, ["body"]),
            ("digits", huge, ["body"]),
            ("nan", b'{"status": "paid", "amount": NaN}', ["amount"]),
            ("duplicate", b'{"status": "paid", "status": "paid"}', ["status"]),
        ):
            response = await one.request(method, path, content=body, headers={**json_header, **auth})
            _assert_problem(response, loc, case=f"{method} {path} {case}")
            assert _local_port(response) == port, f"{method} {path} {case}: connection dropped"

    put_dup = await one.put("/v1/orders/ord_held", content=_duplicate_id(held), headers=json_header)
    _assert_problem(put_dup, ["id"], case="PUT duplicate id")
    put_epoch = await one.put("/v1/orders/ord_held", content=_raw(held, "created_at", "0"), headers=json_header)
    _assert_problem(put_epoch, ["created_at"], case="PUT epoch created_at")
    detail = (await one.get("/v1/orders/ord_held")).json()
    assert detail["state"] == "held"
    assert detail["order"]["created_at"] == "2026-11-23T12:00:05Z"  # not the epoch the refused PUT carried

    paid = await one.post("/v1/orders/ord_held/payment", json={"status": "paid"})
    assert paid.status_code == 200, paid.text
    assert _local_port(paid) == port


async def test_bearer_scheme_is_case_insensitive(agent: AgentProcess) -> None:
    """RFC 9110 §11.1: the auth scheme is case-insensitive; the token itself is not, and a wrong one is still 401."""
    async with httpx.AsyncClient(base_url=agent.base, trust_env=False, timeout=10) as client:
        for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
            right = await client.get("/v1/orders", headers=_bearer(scheme))
            assert right.status_code == 200, f"{scheme}: {right.text}"
            for header in (
                f"{scheme} {TOKEN.upper()}",
                f"{scheme} {TOKEN[:-1]}",
                f"{scheme} {TOKEN}x",
                scheme,
                f"{scheme}{TOKEN}",
                f"Basic {TOKEN}",
            ):
                refused = await client.get("/v1/orders", headers={"Authorization": header})
                assert refused.status_code == 401, f"{header!r}: {refused.text}"
                assert refused.headers["content-type"].startswith(PROBLEM_JSON)
                assert refused.headers["www-authenticate"].lower().startswith("bearer")


async def test_a_payment_the_order_cannot_hold_is_refused_not_a_500(one: httpx.AsyncClient) -> None:
    """Found by schemathesis: a payment is checked with the order's own field rules (422 naming it, not 500)."""
    held = make_order("ord_pay", payment={"status": "pending", "method": "card", "amount": 1910, "currency": "GBP"})
    assert (await one.post("/v1/orders", json=held)).status_code == 202
    for body, loc in (
        ({"status": "paid", "method": "card\u0002"}, ["method"]),
        ({"status": "paid", "method": "x" * 501}, ["method"]),
        ({"status": "paid", "amount": 100_000_001}, ["amount"]),
    ):
        response = await one.post("/v1/orders/ord_pay/payment", json=body)
        _assert_problem(response, loc, case=str(body)[:60])
    detail = (await one.get("/v1/orders/ord_pay")).json()
    assert (detail["state"], detail["order"]["payment"]["method"]) == ("held", "card")
    paid = await one.post("/v1/orders/ord_pay/payment", json={"status": "paid", "method": "Visa"})
    assert paid.status_code == 200, paid.text
