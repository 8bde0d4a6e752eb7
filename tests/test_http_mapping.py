"""The ``http`` POS contract as pure functions: request building, signatures, answers, Retry-After."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from agent.domain.models import Order
from agent.domain.states import ErrorClass
from drivers.pos.base import (
    ALREADY_PRINTED_NOTE,
    Accepted,
    Injected,
    InjectRequest,
    InjectResult,
    Permanent,
    ReadinessState,
    Transient,
)
from drivers.pos.http_mapping import (
    build_request,
    classify_confirmation,
    classify_readiness,
    classify_response,
    sign,
    verify_signature,
)
from drivers.pos.retry_after import parse_retry_after

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
T = 1_795_000_000
SECRET = b"s3cret-shared-with-the-pos"
NGINX_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


def make_order(notes: str | None = "No cutlery") -> Order:
    """Return a small valid order."""
    return Order.model_validate(
        {
            "schema_version": 1,
            "id": "ord_1",
            "source": "web",
            "created_at": "2026-11-23T12:00:05+00:00",
            "fulfillment": {"type": "pickup"},
            "customer": {"name": "Sam Reed"},
            "items": [{"name": "Margherita", "sku": "PZ-MARG", "quantity": 2, "unit_price": 950}],
            "payment": {"status": "paid", "amount": 1900, "currency": "GBP"},
            "total": 1900,
            "notes": notes,
        }
    )


def js(data: Any) -> bytes:
    """Encode ``data`` as a JSON body."""
    return json.dumps(data).encode()


JSON = {"Content-Type": "application/json"}


def test_request_carries_order_json_and_idempotency_key() -> None:
    """The body is the order's JSON and the headers carry the key and the JSON content type."""
    order = make_order()
    headers, body = build_request(InjectRequest(order, "venue:ord_1"), hmac_secret=None, now_unix=T)
    assert json.loads(body) == order.model_dump(mode="json")
    assert headers == {"Content-Type": "application/json", "Idempotency-Key": "venue:ord_1"}


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    """With a secret the request is signed ``t=<unix>,v1=<hex hmac-sha256 of "t." + body>``."""
    headers, body = build_request(InjectRequest(make_order(), "k"), hmac_secret=SECRET, now_unix=T)
    header = headers["X-Venue-Agent-Signature"]
    assert re.fullmatch(rf"t={T},v1=[0-9a-f]{{64}}", header)
    expected = hmac.new(SECRET, f"{T}.".encode() + body, hashlib.sha256).hexdigest()
    assert header == f"t={T},v1={expected}"


def test_signature_verifies_only_the_signed_body_secret_and_time() -> None:
    """A signature checks out for its body, secret and a time within tolerance, and nothing else."""
    body = b'{"id":"ord_1"}'
    header = sign(body, SECRET, T)
    assert verify_signature(header, body, SECRET, T + 299)
    assert not verify_signature(header, body + b" ", SECRET, T)
    assert not verify_signature(header, body, b"other", T)
    assert not verify_signature(header, body, SECRET, T + 301)
    assert not verify_signature(header, body, SECRET, T - 301)
    assert verify_signature(header, body, SECRET, T + 30, tolerance=60)


@pytest.mark.parametrize("header", [None, "", "garbage", "t=abc,v1=00", f"t={T}", "v1=00", f"t={T},v1=zz"])
def test_malformed_signature_is_rejected(header: str | None) -> None:
    """A missing or malformed signature header never verifies and never raises."""
    assert not verify_signature(header, b"{}", SECRET, T)


def test_signature_with_several_v1_values_verifies_if_one_matches() -> None:
    """Secret rotation: any of several v1 values may match."""
    good = sign(b"{}", SECRET, T)
    assert verify_signature(f"t={T},v1={'0' * 64},{good.split(',')[1]}", b"{}", SECRET, T)


@pytest.mark.parametrize(
    ("notes", "expected"),
    [
        (None, ALREADY_PRINTED_NOTE),
        ("", ALREADY_PRINTED_NOTE),
        ("No cutlery", f"{ALREADY_PRINTED_NOTE} - No cutlery"),
        (f"{ALREADY_PRINTED_NOTE} - No cutlery", f"{ALREADY_PRINTED_NOTE} - No cutlery"),
    ],
)
def test_already_printed_order_notes_start_with_the_marker(notes: str | None, expected: str) -> None:
    """An order injected after its fallback ticket has the marker at the start of its notes, once."""
    request = InjectRequest(make_order(notes), "k", already_printed=True)
    _, body = build_request(request, hmac_secret=None, now_unix=T)
    assert json.loads(body)["notes"] == expected


def test_order_not_printed_keeps_its_notes() -> None:
    """Without the fallback flag the notes go unchanged."""
    _, body = build_request(InjectRequest(make_order("No cutlery"), "k"), hmac_secret=None, now_unix=T)
    assert json.loads(body)["notes"] == "No cutlery"


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, js({"pos_reference": "R1"}), Injected("R1")),
        (201, js({"pos_reference": 123}), Injected("123")),
        (201, b"", Injected(None)),
        (204, b"", Injected(None)),
        (200, b"OK", Injected(None)),
        (200, js(["not", "an", "object"]), Injected(None)),
        (202, js({"status": "pending", "pos_reference": "R2"}), Accepted("R2")),
        (202, js({"pos_reference": "R3"}), Injected("R3")),
        (409, js({"error": "duplicate", "pos_reference": "R1"}), Injected("R1", duplicate=True)),
        (409, b"", Injected(None, duplicate=True)),
    ],
)
def test_success_answers(status: int, body: bytes, expected: InjectResult) -> None:
    """2xx is injected (202 pending is accepted, two-phase) and 409 is injected as a duplicate."""
    assert classify_response(status, JSON, body, NOW) == expected


@pytest.mark.parametrize(
    ("status", "body", "error_class", "skus"),
    [
        (422, js({"error": "validation", "detail": "table is required"}), ErrorClass.REJECTED, ()),
        (400, js({"message": "bad request"}), ErrorClass.REJECTED, ()),
        (400, js({"error": "unknown_sku", "skus": ["X-1", "X-2"]}), ErrorClass.MENU, ("X-1", "X-2")),
        (422, js({"error": "unknown_sku", "sku": "X-1"}), ErrorClass.MENU, ("X-1",)),
        (401, js({"error": "auth_expired"}), ErrorClass.AUTH, ()),
        (403, b"", ErrorClass.AUTH, ()),
        (423, js({"error": "sold_out", "skus": ["PZ-MARG"]}), ErrorClass.UNAVAILABLE, ("PZ-MARG",)),
        (423, b"", ErrorClass.UNAVAILABLE, ()),
        (400, js({"error": "sold_out", "skus": ["A"]}), ErrorClass.UNAVAILABLE, ("A",)),
        (409, js({"error": "sold_out", "skus": ["A"]}), ErrorClass.UNAVAILABLE, ("A",)),
        (404, js({"detail": "no such route"}), ErrorClass.REJECTED, ()),
        (405, b"", ErrorClass.REJECTED, ()),
        (413, b"", ErrorClass.REJECTED, ()),
    ],
)
def test_permanent_answers(status: int, body: bytes, error_class: ErrorClass, skus: tuple[str, ...]) -> None:
    """4xx answers are permanent, classed rejected, menu, auth or unavailable as docs/http-pos.md says."""
    result = classify_response(status, JSON, body, NOW)
    assert isinstance(result, Permanent)
    assert (result.error_class, result.skus, result.status) == (error_class, skus, status)
    assert f"POS answered {status}" in result.reason


def test_permanent_reason_quotes_the_pos_and_names_skus() -> None:
    """The reason is a sentence with the POS's own words and the SKUs concerned."""
    body = js({"error": "sold_out", "skus": ["PZ-MARG"], "detail": "Margherita is sold out"})
    result = classify_response(423, JSON, body, NOW)
    assert isinstance(result, Permanent)
    assert "sold out" in result.reason
    assert "PZ-MARG" in result.reason
    assert "Margherita is sold out" in result.reason


@pytest.mark.parametrize(
    ("status", "headers", "retry_after"),
    [
        (429, {"Retry-After": "7"}, 7.0),
        (429, {"retry-after": "1.5"}, 1.5),
        (429, {}, None),
        (500, {}, None),
        (502, {"Retry-After": "soon"}, None),
        (503, {"Retry-After": format_datetime(NOW + timedelta(seconds=30), usegmt=True)}, 30.0),
        (504, {"Retry-After": "-3"}, 0.0),
    ],
)
def test_retryable_answers(status: int, headers: dict[str, str], retry_after: float | None) -> None:
    """429 and 5xx are transient and carry the POS's Retry-After in seconds."""
    result = classify_response(status, {**JSON, **headers}, js({"error": "busy"}), NOW)
    assert isinstance(result, Transient)
    assert (result.retry_after, result.status, result.in_doubt) == (retry_after, status, False)


def test_redirect_is_transient_and_names_the_target() -> None:
    """A redirect is not followed: it is transient and the reason points at the url setting."""
    result = classify_response(302, {"Location": "https://pos.example/login"}, b"", NOW)
    assert isinstance(result, Transient)
    assert "https://pos.example/login" in result.reason


def test_html_error_page_is_summarised_not_crashed_on() -> None:
    """A proxy's HTML error page becomes a short readable reason."""
    result = classify_response(502, {"Content-Type": "text/html; charset=utf-8"}, NGINX_502, NOW)
    assert isinstance(result, Transient)
    assert "POS answered 502 with a non-JSON body (text/html): 502 Bad Gateway" in result.reason
    assert "<" not in result.reason
    assert "\n" not in result.reason


def test_non_json_bodies_never_crash() -> None:
    """Binary, truncated or huge bodies are classified like any other answer."""
    for body in (b"\xff\xfe\x00garbage", b'{"pos_reference": ', b"x" * 100_000):
        assert classify_response(200, {}, body, NOW) == Injected(None)
        rejected = classify_response(422, {}, body, NOW)
        assert isinstance(rejected, Permanent)
        assert rejected.error_class is ErrorClass.REJECTED
        assert "non-JSON body (no content type)" in rejected.reason
        assert len(rejected.reason) < 300


def test_html_auth_page_is_still_auth() -> None:
    """A 403 HTML page from a proxy is an auth failure with a readable reason."""
    result = classify_response(403, {"content-type": "text/html"}, b"<h1>Forbidden</h1>", NOW)
    assert isinstance(result, Permanent)
    assert result.error_class is ErrorClass.AUTH
    assert "(text/html): Forbidden" in result.reason


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 1.5 ", 1.5),
        ("0", 0.0),
        ("-5", 0.0),
        (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
        ("Mon, 23 Nov 2026 12:02:00 GMT", 120.0),
        ("Mon, 23 Nov 2026 11:00:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
        ("inf", None),
        ("Mon, 99 Foo 2026 99:99:99 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    """Retry-After is seconds or an HTTP-date; negative means now; garbage means not given."""
    assert parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, js({"status": "pending"}), None),
        (200, js({"status": "injected", "pos_reference": "R9"}), Injected("R9")),
        (404, js({"error": "not_found"}), None),
        (500, NGINX_502, None),
        (200, b"<html></html>", None),
    ],
)
def test_confirmation_pending_injected_or_unknown(status: int, body: bytes, expected: InjectResult | None) -> None:
    """A two-phase status is None while pending or unknown, and injected once the POS confirms."""
    assert classify_confirmation(status, JSON, body) == expected


@pytest.mark.parametrize(
    ("error", "error_class"),
    [("sold_out", ErrorClass.UNAVAILABLE), ("unknown_sku", ErrorClass.MENU), ("tax_setup", ErrorClass.REJECTED)],
)
def test_confirmation_failure_is_classified(error: str, error_class: ErrorClass) -> None:
    """A two-phase failure is permanent, classified from its error code, with the POS's detail."""
    body = js({"status": "failed", "error": error, "skus": ["A"], "detail": "computer says no"})
    result = classify_confirmation(200, JSON, body)
    assert isinstance(result, Permanent)
    assert result.error_class is error_class
    assert "computer says no" in result.reason
    assert "POS reported the order failed" in result.reason


def test_readiness_answers() -> None:
    """/ready maps to ready, not ready (with conditions), auth required or unreachable; 404 means no endpoint."""
    ready = js({"ready": True, "conditions": {"pos_online": True}})
    not_ready = js({"ready": False, "conditions": {"pos_online": True, "app_open": False}})
    assert classify_readiness(200, JSON, ready, 3.0).state is ReadinessState.READY
    result = classify_readiness(200, JSON, not_ready, 3.0)
    assert result.state is ReadinessState.NOT_READY
    assert result.conditions == {"pos_online": True, "app_open": False}
    assert "app_open" in result.detail
    assert classify_readiness(401, JSON, b"", 3.0).state is ReadinessState.AUTH_REQUIRED
    assert classify_readiness(503, {}, NGINX_502, 3.0).state is ReadinessState.UNREACHABLE
    for status in (404, 405, 501):
        missing = classify_readiness(status, {}, b"Not Found", 3.0)
        assert (missing.state, missing.detail, missing.latency_ms) == (
            ReadinessState.UNSUPPORTED,
            "no readiness endpoint",
            3.0,
        )
