"""Fuzzing what every POS driver makes of an answer: always one of the four inject results, never an exception.

Arbitrary status codes, headers (``Retry-After`` junk and HTTP-dates of any year) and bodies (bytes, JSON of any
shape, nesting bombs) go through the pure classification of the ``http``, ``lightspeed_k`` and ``square`` drivers.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import httpx
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agent.domain.states import ErrorClass
from drivers.pos import lightspeed_k
from drivers.pos.base import Accepted, Injected, InjectResult, Permanent, Readiness, ReadinessState, Transient
from drivers.pos.http_mapping import classify_confirmation, classify_readiness, classify_response
from drivers.pos.lightspeed_answers import classify_answer
from drivers.pos.lightspeed_notifications import readiness_from
from drivers.pos.retry_after import parse_retry_after
from drivers.pos.square_answers import classify_error, classify_probe, decode_body

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
FUZZ = settings(max_examples=150, deadline=None)
BOMB = b"[" * 20_000 + b"]" * 20_000  # deeper than any JSON parser recurses
WORDS = st.sampled_from(
    [
        "status", "ok", "pending", "error", "errors", "sold_out", "unknown_sku", "pos_reference", "skus", "sku",
        "ready", "conditions", "detail", "message", "category", "code", "field", "RATE_LIMITED", "NOT_FOUND",
        "AUTHENTICATION_ERROR", "INVALID_REQUEST_ERROR", "reason", "location", "ACTIVE", "INACTIVE", "tax",
        "reference has already been used", "enabled", "salesPeriodOpened", "acceptingOnlineOrders", "availableDevices",
    ]
)  # fmt: skip
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30), WORDS
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.one_of(WORDS, st.text(max_size=8)), inner, max_size=5)
    ),
    max_leaves=20,
)


def _dump(value: object) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


BODIES = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    JSON_VALUES.map(_dump),
    st.just(BOMB),
    st.just(b'{"error": "sold_out", "skus": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
)
STATUSES = st.one_of(st.integers(min_value=100, max_value=599), st.sampled_from([0, 99, 600, 999, -1, 2**31]))
HTTP_DATES = st.builds(
    lambda moment, minutes: format_datetime(moment.replace(tzinfo=timezone(timedelta(minutes=minutes)))),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.integers(min_value=-720, max_value=720),
).map(lambda text: text.replace("+0000", "GMT"))
RETRY_AFTER = st.one_of(
    st.text(max_size=40),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    HTTP_DATES,
    st.sampled_from(["nan", "inf", "-inf", "1e309", "-5", " 7 ", "Wed, 21 Oct 2015 07:28:00 GMT", "Fri, 31 Dec 9999"]),
)
HEADERS = st.dictionaries(
    st.sampled_from(["Retry-After", "retry-after", "Content-Type", "Location", "X-Other"]),
    st.one_of(RETRY_AFTER, st.sampled_from(["application/json", "text/html; charset=utf-8", ""])),
    max_size=4,
)


def assert_outcome(result: InjectResult) -> None:
    """The result is one of the four inject results, each well formed."""
    assert isinstance(result, Injected | Accepted | Transient | Permanent)
    if isinstance(result, Transient):
        assert result.reason
        assert result.retry_after is None or (math.isfinite(result.retry_after) and result.retry_after >= 0)
    if isinstance(result, Permanent):
        assert isinstance(result.error_class, ErrorClass) and result.reason
        assert all(isinstance(sku, str) for sku in result.skus)
    if isinstance(result, Injected | Accepted):
        assert result.pos_reference is None or isinstance(result.pos_reference, str)


def assert_readiness(readiness: Readiness) -> None:
    """A readiness is one of the known states with a text detail and boolean conditions."""
    assert isinstance(readiness.state, ReadinessState)
    assert isinstance(readiness.detail, str)
    assert all(isinstance(k, str) and isinstance(v, bool) for k, v in readiness.conditions.items())


@FUZZ
@given(value=st.one_of(st.none(), RETRY_AFTER))
def test_retry_after_is_a_finite_wait_or_none(value: str | None) -> None:
    """Any header value gives None or a finite, non-negative number of seconds."""
    wait = parse_retry_after(value, NOW)
    assert wait is None or (math.isfinite(wait) and wait >= 0)


@FUZZ
@given(status=STATUSES, headers=HEADERS, body=BODIES)
@example(status=503, headers={"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"}, body=BOMB)
@example(status=200, headers={}, body=BOMB)
def test_http_answers_are_always_an_outcome(status: int, headers: dict[str, str], body: bytes) -> None:
    """``http``: the order answer, the confirmation poll and the readiness check never raise."""
    assert_outcome(classify_response(status, headers, body, NOW))
    confirmation = classify_confirmation(status, headers, body)
    if confirmation is not None:
        assert_outcome(confirmation)
    assert_readiness(classify_readiness(status, headers, body, 1.0))


def _lightspeed_body(status: int, body: bytes) -> object:
    """The body as the Lightspeed driver decodes it from a real ``httpx.Response``."""
    return lightspeed_k._body(httpx.Response(status if 100 <= status <= 999 else 500, content=body))


@FUZZ
@given(status=STATUSES, body=BODIES, retry_after=st.one_of(st.none(), RETRY_AFTER))
@example(status=400, body=BOMB, retry_after=None)
def test_lightspeed_answers_are_always_an_outcome(status: int, body: bytes, retry_after: str | None) -> None:
    """``lightspeed_k``: create-order answers (and the readiness body) never raise."""
    decoded = _lightspeed_body(status, body)
    assert_outcome(classify_answer(status, decoded))
    assert_outcome(classify_answer(status, body))  # the raw bytes, as when the body is not JSON
    ready, conditions, detail = readiness_from(decoded)
    assert isinstance(ready, bool) and isinstance(detail, str)
    assert all(isinstance(v, bool) for v in conditions.values())
    wait = parse_retry_after(retry_after, NOW)  # the driver adds it to a transient result
    assert wait is None or (math.isfinite(wait) and wait >= 0)


@FUZZ
@given(
    status=STATUSES,
    body=BODIES,
    retry_after=st.one_of(st.none(), st.floats(min_value=0, max_value=1e6)),
    sent=st.dictionaries(st.sampled_from(["order", "idempotency_key"]), JSON_VALUES, max_size=2),
)
@example(status=400, body=BOMB, retry_after=None, sent={})
def test_square_answers_are_always_an_outcome(
    status: int, body: bytes, retry_after: float | None, sent: dict[str, Any]
) -> None:
    """``square``: the CreateOrder answer and the location probe never raise."""
    decoded = decode_body(body)
    assert_outcome(classify_error(status, decoded, retry_after, catalog={"PZ-MARG": "CAT1"}, sent=sent))
    assert_readiness(classify_probe(status, decoded, 1.0, "L1"))
