"""Contract tests: the agent's Lightspeed K-Series code against payloads written from the published reference.

The fixtures are in ``tests/lightspeed_contract.py``, each with its source. Requests the agent sends must match
them; answers and notifications as published must be read as docs/lightspeed-k.md says.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from agent.domain.clock import FakeClock
from agent.domain.config import AccountProfiles, LightspeedKSettings
from agent.domain.models import Order
from agent.domain.states import ErrorClass
from drivers.pos.base import Accepted, Permanent
from drivers.pos.errors import NotificationInvalid
from drivers.pos.lightspeed_answers import classify_answer
from drivers.pos.lightspeed_limits import limit_violations
from drivers.pos.lightspeed_mapping import build_order_request
from drivers.pos.lightspeed_notifications import (
    Restriction,
    classify_readiness,
    classify_restriction,
    classify_webhook,
)
from drivers.pos.oauth import AuthRequired, TokenManager
from drivers.pos.sim_lightspeed_validation import validate_order
from tests import lightspeed_contract as ref

PREFIX = "pos.lightspeed_k.45454565682155"


class MemoryStore:
    """A key/value store in memory (the outbox's kv table stands behind it in the driver)."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    async def kv_get(self, key: str) -> str | None:
        return self.values.get(key)

    async def kv_put(self, key: str, value: str) -> None:
        self.values[key] = value


@asynccontextmanager
async def tokens_answering(
    status: int, body: dict[str, Any], seen: list[httpx.Request]
) -> AsyncIterator[tuple[TokenManager, MemoryStore]]:
    """A TokenManager whose token endpoint answers ``status``/``body`` (the published answer) and records requests."""

    def endpoint(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=body)

    store = MemoryStore()
    client = httpx.AsyncClient(transport=httpx.MockTransport(endpoint))
    manager = TokenManager(
        token_url="https://api.lsk.lightspeed.app/oauth/token",
        client_id=ref.TOKEN_CLIENT_ID,
        client_secret=ref.TOKEN_CLIENT_SECRET,
        seed_refresh_token=ref.TOKEN_REFRESH_TOKEN,
        store=store,
        client=client,
        clock=FakeClock().now,
        key_prefix=PREFIX,
    )
    async with client:
        yield manager, store


async def test_the_token_request_is_rfc_6749s_own_example() -> None:
    """Byte for byte: POST, path, Basic client authentication, form with the grant and the token only."""
    seen: list[httpx.Request] = []
    async with tokens_answering(200, ref.TOKEN_ANSWER, seen) as (tokens, store):
        assert await tokens.access_token() == ref.TOKEN_ANSWER["access_token"]
    [request] = seen
    assert request.method == ref.TOKEN_REQUEST["method"]
    assert request.url.path == ref.TOKEN_REQUEST["path"]
    for name, value in ref.TOKEN_REQUEST["headers"].items():
        assert request.headers[name] == value
    assert request.content.decode() == ref.TOKEN_REQUEST["body"]
    # The published answer is read: the rotated refresh token is stored before the access token is used.
    assert store.values[f"{PREFIX}.refresh_token"] == ref.TOKEN_ANSWER["refresh_token"]


@pytest.mark.parametrize(
    ("status", "body", "says", "not_says"),
    [
        (401, ref.TOKEN_INVALID_CLIENT, "client_id / client_secret) are wrong", "venue-agent pos authorize"),
        (400, ref.TOKEN_INVALID_GRANT, "venue-agent pos authorize", "client_secret"),
    ],
)
async def test_the_two_token_refusals_are_told_apart(
    status: int, body: dict[str, Any], says: str, not_says: str
) -> None:
    async with tokens_answering(status, body, []) as (tokens, _):
        with pytest.raises(AuthRequired) as failure:
            await tokens.access_token()
    assert says in failure.value.reason and not_says not in failure.value.reason


def test_the_published_to_go_body_passes_the_simulators_validation_and_every_limit() -> None:
    """The simulator is no stricter than the reference: the OAS's own example body is accepted."""
    assert validate_order(copy.deepcopy(ref.TO_GO_BODY), local=False, location=None) == []
    assert limit_violations(ref.TO_GO_BODY) == []


def test_an_order_maps_to_the_published_to_go_body() -> None:
    """An order carrying the example's values becomes the example body (the note is ours to write)."""
    order = Order.model_validate(
        {
            "schema_version": 1,
            "id": "ord_contract",
            "source": "web",
            "display_code": "ABC-1234",
            "created_at": "2024-04-04T09:00:00+00:00",
            "requested_at": "2024-04-04T09:42:00+00:00",
            "fulfillment": {"type": "pickup"},
            "customer": {"name": "Jane Doe", "phone": "+14155552671", "email": "jane.doe@example.com"},
            "items": [
                {
                    "name": "Boots",
                    "sku": "UGG-BB-PUR-06",
                    "quantity": 1,
                    "unit_price": 1200,
                    "modifiers": [{"name": "Laces", "sku": "ABC-123", "quantity": 1, "unit_price": 0}],
                }
            ],
            "charges": {"tip": 200},
            "payment": {"status": "paid", "method": "card", "amount": 1400, "currency": "GBP"},
            "total": 1400,
        }
    )
    settings = LightspeedKSettings(
        business_location_id=ref.TO_GO_BODY["businessLocationId"],
        endpoint_id=ref.TO_GO_BODY["endpointId"],
        account_profiles=AccountProfiles(pickup="TOGOORDER"),
        payment_method="OOPAYMENT",
    )
    path, body = build_order_request(
        order,
        settings=settings,
        idempotency_key=ref.TO_GO_BODY["thirdPartyReference"],
        already_printed=False,
        tz=ZoneInfo("UTC"),
        now=datetime(2024, 4, 4, 9, 0, tzinfo=UTC),
        max_attempt_ms=60_000,
    )
    assert path == "/o/op/1/order/toGo"
    expected = {k: v for k, v in ref.TO_GO_BODY.items() if k not in ("orderNote", "orderCollectionTimeAsIso8601")}
    assert {k: v for k, v in body.items() if k not in ("orderNote", "orderCollectionTimeAsIso8601")} == expected
    assert datetime.fromisoformat(body["orderCollectionTimeAsIso8601"]) == datetime.fromisoformat(
        ref.TO_GO_BODY["orderCollectionTimeAsIso8601"]
    )


def test_the_published_answers_to_the_create_call() -> None:
    assert classify_answer(200, ref.TO_GO_ANSWER) == Accepted(pos_reference=None)
    assert classify_answer(409, ref.TO_GO_DUPLICATE) == Accepted(pos_reference=None)


@pytest.mark.parametrize(
    ("payload", "pos_reference"),
    [
        (ref.ORDER_SUCCESS, "A123080.14"),
        ({k: v for k, v in ref.ORDER_SUCCESS.items() if k != "ikentooAccountIdentifier"}, "2114502594134196"),
        (ref.ORDER_SUCCESS_NUMERIC_ID, "A17700.3"),
        (
            {k: v for k, v in ref.ORDER_SUCCESS_NUMERIC_ID.items() if k not in ("ikentooAccountIdentifier", "account")},
            "304087979524124",
        ),
    ],
)
def test_success_takes_the_account_id_as_a_string_or_a_number(payload: dict[str, Any], pos_reference: str) -> None:
    outcome = classify_webhook(payload)
    assert (outcome.status, outcome.pos_reference) == ("SUCCESS", pos_reference)


def test_the_published_failure() -> None:
    outcome = classify_webhook(ref.ORDER_FAILURE)
    assert outcome.status == "FAILURE" and outcome.error_class is ErrorClass.REJECTED
    assert "A consumer already exists for this email address" in outcome.reason
    result = Permanent(outcome.error_class, outcome.reason)
    assert result.error_class is ErrorClass.REJECTED


def test_the_published_item_notifications_carry_their_location() -> None:
    assert classify_restriction(ref.ITEM_RESTRICTED) == [Restriction("UGG-BB-PUR-06", False, 247158188015618)]
    assert classify_restriction(ref.ITEM_NOT_RESTRICTED) == [Restriction("UGG-BB-PUR-06", False, 247158188015618)]
    assert classify_restriction({**ref.ITEM_RESTRICTED, "count": 0}) == [
        Restriction("UGG-BB-PUR-06", True, 247158188015618)
    ]


def test_the_published_readiness_notifications() -> None:
    ready = classify_readiness(ref.READINESS_READY)
    assert (ready.business_location_id, ready.ready) == (247158188015618, True)
    assert ready.last_updated_at == datetime(2025, 10, 4, 9, 40, tzinfo=UTC)
    not_ready = classify_readiness(ref.READINESS_NOT_READY)
    assert not not_ready.ready and not_ready.conditions == dict.fromkeys(
        ("enabled", "salesPeriodOpened", "acceptingOnlineOrders", "availableDevices"), False
    )
    assert "the sales period is closed" in not_ready.detail


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({**ref.READINESS_READY, "status": "MAYBE"}, "with status 'MAYBE'"),
        ({k: v for k, v in ref.READINESS_READY.items() if k != "status"}, "with status None"),
        ({**ref.READINESS_READY, "businessLocationId": "here"}, "businessLocationId 'here'"),
        (ref.ITEM_RESTRICTED, "type ORDER_API"),
    ],
)
def test_a_readiness_notification_that_is_not_one_is_refused(payload: dict[str, Any], match: str) -> None:
    with pytest.raises(NotificationInvalid, match=match):
        classify_readiness(payload)
