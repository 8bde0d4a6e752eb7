"""Fuzzing the parsers that face the outside: the JSON body decoder, the order model and Lightspeed notifications.

The only outcomes allowed are a value or the module's own error naming where (``BodyInvalid`` / ``OrderInvalid``
with non-empty locations, ``NotificationInvalid`` for the Lightspeed driver); any other exception is a bug.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from agent.api.intake import credentials_match
from agent.api.jsonbody import MAX_DEPTH, MAX_NUMBER_LENGTH, decode_json, nesting_depth
from agent.api.problems import problem
from agent.domain.errors import BodyInvalid, OrderInvalid
from agent.domain.models import Order, parse_order
from drivers.pos.errors import NotificationInvalid
from drivers.pos.lightspeed_notifications import (
    classify_restriction,
    classify_webhook,
    notification_type,
    readiness_from,
)
from tests.conftest import BASE_ORDER

FUZZ = settings(max_examples=150, deadline=timedelta(seconds=2), suppress_health_check=[HealthCheck.too_slow])
VENUE = "harbour-kitchen"

# RFC 3339 §5.6 date-time, written out again here as the oracle: T/t, seconds, fraction, Z/z or +hh:mm.
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", re.IGNORECASE | re.ASCII)

# ---- strategies ----------------------------------------------------------------------------------------------

small_ints = st.integers(min_value=-(10**30), max_value=10**30)
# Values a Python caller (the MQTT relay, say) might hand over: anything json.loads can return, and more.
wild_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**5000), max_value=10**5000),
    st.floats(),
    st.text(),
    st.text(st.characters(categories=["Cs", "Cc", "Zs", "Lo", "So"]), max_size=8),
)
# Values the strict decoder returns: no NaN, no infinity, no lone surrogates, numbers of bounded length.
json_scalars = st.one_of(
    st.none(), st.booleans(), small_ints, st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20)
)


def json_values(scalars: st.SearchStrategy[Any] = json_scalars, leaves: int = 20) -> st.SearchStrategy[Any]:
    """Return JSON-shaped values (lists and string-keyed objects) built from ``scalars``."""
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=leaves,
    )


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*path, index))
    return found


@st.composite
def mutated_orders(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> Any:
    """Return the valid base order with one to three places replaced, deleted or given an extra key."""
    order: Any = copy.deepcopy(BASE_ORDER)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(order)))
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if not path:
            if action == "replace":
                order = draw(values)
            continue
        parent = order
        for part in path[:-1]:
            parent = parent[part]
        if action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent[path[-1]], dict):
            key = draw(st.sampled_from(["id", "name", "quantity", "modifiers", "extra"]) | st.text(max_size=6))
            parent[path[-1]][key] = draw(values)
    return order


def _assert_order_outcome(data: Any) -> None:
    """Validate ``data`` as an order: an Order, or OrderInvalid naming a location for every error."""
    try:
        order = parse_order(data, venue_id=VENUE, currency="GBP")
    except OrderInvalid as exc:
        _assert_errors(exc)
    else:
        assert isinstance(order, Order)
        order.model_dump_json().encode("utf-8")  # what the outbox stores must be storable
        order.content_hash()


def _assert_errors(exc: OrderInvalid) -> None:
    assert exc.errors, "a refusal must say why"
    for error in exc.errors:
        assert error.loc, f"an error without a location: {error}"
        assert error.msg
    # The 422 answer naming them must itself render (no unencodable key echoed back, say).
    assert problem(422, "refused", errors=exc.errors).body


# ---- the JSON body decoder -----------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=300))
@example(b"\xef\xbb\xbf{}")
@example(b'"\\')
@example(b"[" * 5000)
@example(b'{"a": 1, "a": 2}')
@example(b'{"\\ud800": 1, "\\ud800": 2}')
def test_arbitrary_bytes_give_a_value_or_body_invalid(raw: bytes) -> None:
    """Any bytes decode to a value or raise BodyInvalid with a location; nothing else."""
    try:
        decode_json(raw)
    except BodyInvalid as exc:
        _assert_errors(exc)


@FUZZ
@given(json_values(), st.booleans())
def test_every_strict_json_value_round_trips(value: Any, ascii_only: bool) -> None:
    """The decoder accepts whatever a standard encoder writes (within the bounds), unchanged."""
    assume(nesting_depth(json.dumps(value)) <= MAX_DEPTH)
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert decode_json(text.encode("utf-8")) == value


@FUZZ
@given(json_values(), st.data())
def test_mutated_json_text_gives_a_value_or_body_invalid(value: Any, data: st.DataObject) -> None:
    """JSON text with characters inserted, dropped or swapped never raises anything but BodyInvalid."""
    text = json.dumps(value)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        piece = data.draw(
            st.sampled_from(['"', "\\", "[", "]", "{", "}", ",", ":", "1" * 5000, "[" * 1100, "NaN", "\\ud800", ""])
        )
        cut = data.draw(st.integers(0, 2))
        text = text[:at] + piece + text[at + cut :]
    try:
        decode_json(text.encode("utf-8", "surrogatepass"))
    except BodyInvalid as exc:
        _assert_errors(exc)


@FUZZ
@given(st.integers(0, 3 * MAX_DEPTH), st.sampled_from(["[]", "{}"]), st.booleans())
def test_nesting_is_refused_exactly_past_the_limit(depth: int, pair: str, inside_object: bool) -> None:
    """Nesting up to MAX_DEPTH decodes; one level more is refused on 'body' before json.loads runs."""
    inner = "[" * depth + "1" + "]" * depth if pair == "[]" else '{"a":' * depth + "1" + "}" * depth
    text = '{"x":' + inner + "}" if inside_object else inner
    total = depth + (1 if inside_object else 0)
    # Brackets inside strings do not count.
    text = f'["[[[[", {text}]'
    total += 1
    if total <= MAX_DEPTH:
        decode_json(text.encode())
    else:
        try:
            decode_json(text.encode())
        except BodyInvalid as exc:
            assert [e.loc for e in exc.errors] == [("body",)]
        else:
            raise AssertionError(f"depth {total} accepted")


@FUZZ
@given(
    st.integers(1, 3 * MAX_NUMBER_LENGTH),
    st.sampled_from(["int", "negative", "fraction", "exponent"]),
    st.lists(st.sampled_from(["a", "b"]), max_size=3),
)
def test_long_numbers_are_refused_naming_their_field(length: int, shape: str, keys: list[str]) -> None:
    """A number literal over MAX_NUMBER_LENGTH characters is refused naming its path; a shorter one decodes."""
    digits = "7" * length
    literal = {"int": digits, "negative": "-" + digits, "fraction": "0." + digits, "exponent": "1e" + digits}[shape]
    text = literal
    for key in reversed(keys):
        text = f'{{"{key}": {text}}}'
    try:
        value = decode_json(text.encode())
    except BodyInvalid as exc:
        refused = [(e.loc, e.msg) for e in exc.errors]
        assert len(literal) > MAX_NUMBER_LENGTH or "out of range" in refused[0][1], refused
        assert [loc for loc, _ in refused] == [tuple(keys) or ("body",)]
    else:
        assert len(literal) <= MAX_NUMBER_LENGTH
        for key in keys:
            value = value[key]  # type: ignore[index]
        assert value == json.loads(literal)


# ---- the order -----------------------------------------------------------------------------------------------


@FUZZ
@given(json_values(wild_scalars))
def test_arbitrary_values_give_an_order_or_order_invalid(data: Any) -> None:
    """Anything a caller hands parse_order ends as an Order or as OrderInvalid naming every location."""
    _assert_order_outcome(data)


@FUZZ
@given(mutated_orders(json_values(wild_scalars, leaves=6)))
def test_mutated_orders_give_an_order_or_order_invalid(data: Any) -> None:
    """A valid order with one to three places broken ends as an Order or as OrderInvalid naming the places."""
    _assert_order_outcome(data)


@FUZZ
@given(mutated_orders(json_values(leaves=6)), st.data())
def test_order_bodies_as_bytes_give_an_order_or_a_located_refusal(data: Any, draw: st.DataObject) -> None:
    """Bytes of a broken order through the decoder and the model: an Order, or an error with locations."""
    raw = json.dumps(data).encode()
    if draw.draw(st.booleans()):
        at = draw.draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw.draw(st.binary(max_size=4)) + raw[at:]
    try:
        value = decode_json(raw)
    except BodyInvalid as exc:
        _assert_errors(exc)
        return
    _assert_order_outcome(value)


@FUZZ
@given(
    st.sampled_from(["created_at", "requested_at"]),
    st.one_of(
        st.text(st.sampled_from("0123456789-:.+TtZz "), max_size=32),
        st.integers(),
        st.floats(),
        st.text(max_size=30),
        st.datetimes().map(lambda d: d.isoformat()),
    ),
)
@example("created_at", "2026-11-23T12:00:05")
@example("created_at", 1763899205)
@example("requested_at", "1763899205")
@example("created_at", "2026-11-23T12:00:05+0000")
@example("created_at", "\u0662\u0660\u0662\u0666-11-23T12:00:05+00:00")  # Arabic-Indic digits
def test_a_time_that_is_not_rfc3339_with_an_offset_is_refused(field: str, value: Any) -> None:
    """created_at / requested_at: accepted only as RFC 3339 text with an offset; anything else names the field."""
    try:
        order = parse_order({**BASE_ORDER, field: value}, venue_id=VENUE)
    except OrderInvalid as exc:
        _assert_errors(exc)
        assert (field,) in [e.loc for e in exc.errors]
    else:
        assert isinstance(value, str) and RFC3339.fullmatch(value), value
        assert getattr(order, field).tzinfo is not None


@FUZZ
@given(
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.timezones()),
    st.sampled_from(["seconds", "milliseconds", "microseconds"]),
)
def test_every_rfc3339_time_with_an_offset_is_accepted(when: datetime, spec: str) -> None:
    """A datetime written as RFC 3339 with its offset is accepted and means the same instant."""
    offset = when.utcoffset()
    assume(offset is not None and offset.seconds % 60 == 0)  # RFC 3339 offsets are whole minutes
    text = when.isoformat(timespec=spec)
    order = parse_order({**BASE_ORDER, "created_at": text}, venue_id=VENUE)
    unit = {"seconds": 1_000_000, "milliseconds": 1000, "microseconds": 1}[spec]
    expected = when.replace(microsecond=when.microsecond // unit * unit)
    assert order.created_at.astimezone(UTC) == expected.astimezone(UTC)


# ---- Lightspeed notifications --------------------------------------------------------------------------------

_LS_KEYS = [
    "type",
    "thirdPartyReference",
    "status",
    "reason",
    "errors",
    "skus",
    "sku",
    "count",
    "ikentooAccountIdentifier",
    "iKentooAccountIdentifier",
    "ikentooAccountId",
    "iKentooAccountId",
    "account",
    "businessLocationId",
]
_LS_WORDS = st.sampled_from(
    [
        *("ORDER", "ITEM", "SALES_RESTRICTION_UPDATED", "PAYMENT", "order", " item ", "SUCCESS", "FAILURE", "READY"),
        *("RESTRICTED", "NOT_RESTRICTED", "ITEM_NOT_FOUND", "sold out", "validity ended", "unknown sku PZ-1", ""),
    ]
)
_ls_values = json_values(wild_scalars | _LS_WORDS, leaves=6)
_ls_errors = st.fixed_dictionaries(
    {},
    optional={
        "timeout": st.fixed_dictionaries({}, optional={"message": _ls_values, "errorKey": _ls_values}) | _ls_values,
        "account": st.fixed_dictionaries({}, optional={"type": _ls_values}) | _ls_values,
    },
)
notifications = st.dictionaries(
    st.sampled_from(_LS_KEYS) | st.text(max_size=6),
    _ls_values | _LS_WORDS | _ls_errors | st.fixed_dictionaries({}, optional={"ikaccountId": _ls_values}),
    max_size=9,
)
ls_payloads = st.one_of(notifications, st.lists(notifications | _ls_values, max_size=4), _ls_values)


HUGE = 10**5000  # past Python's 4,300-digit limit for int <-> str: repr() of it raises ValueError


@FUZZ
@given(ls_payloads, st.lists(st.text(max_size=6) | _LS_WORDS, max_size=3))
@example({"type": "ITEM", "sku": "PZ-1", "status": "RESTRICTED", "count": HUGE}, [])
@example({"type": "ITEM", "sku": "PZ-1", "status": HUGE}, [])
@example({"type": "ITEM", "sku": "PZ-1", "status": "RESTRICTED", "count": 1.5}, [])
@example({"thirdPartyReference": "k", "status": "FAILURE", "skus": [HUGE], "reason": "sold out"}, ["PZ-1"])
@example({"thirdPartyReference": "k", "status": "SUCCESS", "ikentooAccountId": HUGE}, [])
@example({"type": "ORDER", "thirdPartyReference": "k", "status": "FAILURE", "sku": HUGE}, [])
@example([{"type": "ITEM", "sku": "A", "status": "RESTRICTED"}, [1]], [])
def test_lightspeed_notifications_raise_only_notification_invalid(payload: Any, skus: list[str]) -> None:
    """Any JSON as a webhook body: a classification, or NotificationInvalid; never another exception."""
    try:
        notification_type(payload)
    except NotificationInvalid:
        pass
    if isinstance(payload, dict):
        try:
            classify_webhook(payload, tuple(skus))
        except NotificationInvalid:
            pass
    try:
        classify_restriction(payload)
    except NotificationInvalid:
        pass
    ready, conditions, detail = readiness_from(payload)
    assert isinstance(ready, bool) and isinstance(detail, str) and isinstance(conditions, dict)


@FUZZ
@given(ls_payloads)
def test_lightspeed_webhook_bytes_raise_only_the_known_errors(payload: Any) -> None:
    """A webhook body as bytes through the decoder and the driver: only BodyInvalid or NotificationInvalid."""
    try:
        raw = json.dumps(payload).encode("utf-8", "surrogatepass")
    except ValueError:
        assume(False)  # json.dumps itself refuses a 5,000-digit int: no sender could write that body
    try:
        value = decode_json(raw)
    except BodyInvalid as exc:
        _assert_errors(exc)
        return
    try:
        if isinstance(value, dict):
            classify_webhook(value)
        classify_restriction(value)
    except NotificationInvalid:
        pass


# ---- the Authorization header --------------------------------------------------------------------------------

tokens = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)


@FUZZ
@given(tokens, st.sampled_from(["Bearer", "Basic"]), st.data())
def test_the_auth_scheme_matches_in_any_case_and_the_credentials_exactly(
    token: str, scheme: str, data: st.DataObject
) -> None:
    """RFC 9110 §11.1: any casing of the scheme with the right credentials matches; other credentials never do."""
    casing = "".join(data.draw(st.sampled_from([c.lower(), c.upper()])) for c in scheme)
    spaces = " " * data.draw(st.integers(1, 3))
    assert credentials_match(f"{casing}{spaces}{token}", scheme, token)
    other = data.draw(tokens.filter(lambda t: t != token))
    assert not credentials_match(f"{casing} {other}", scheme, token)
    assert not credentials_match(f"{casing}{token}", scheme, token)
    assert not credentials_match(casing, scheme, token)
    wrong_scheme = "Basic" if scheme == "Bearer" else "Bearer"
    assert not credentials_match(f"{wrong_scheme} {token}", scheme, token)


@FUZZ
@given(st.text(max_size=80), tokens)
def test_any_authorization_header_is_answered_without_raising(header: str, token: str) -> None:
    """Whatever a client sends as Authorization, the check answers True or False."""
    assert credentials_match(header, "Bearer", token) in (True, False)
