"""Fuzz the MQTT order and command payload parsers: arbitrary bytes and JSON only ever give PayloadInvalid."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.mqtt.commands import MAX_DEPTH, PayloadInvalid, order_id_of, parse_command, parse_order

FUZZ = settings(max_examples=300, deadline=None)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
nesting = st.builds(lambda n, ch: ch * n, st.integers(0, 5000), st.sampled_from(["[", "{", '{"a":', "[{", '"x', "\\"]))


def _parse(parser: Any, raw: bytes) -> Any:
    try:
        return parser(raw)
    except PayloadInvalid as exc:
        assert exc.field == "body"
        assert str(exc)
        return exc


@FUZZ
@given(st.binary(max_size=2000))
def test_arbitrary_bytes(raw: bytes) -> None:
    """Any bytes: a value, or PayloadInvalid naming 'body'."""
    _parse(parse_order, raw)
    _parse(parse_command, raw)


@FUZZ
@given(nesting, st.binary(max_size=50))
def test_deep_nesting_and_huge_numbers(head: str, tail: bytes) -> None:
    """Nesting bombs and 5,000-digit integers are refused, never RecursionError or a bare ValueError."""
    _parse(parse_order, head.encode() + tail)
    _parse(parse_command, head.encode() + tail)
    _parse(parse_order, ("9" * (len(head) + 4301)).encode())


@FUZZ
@given(json_values)
def test_any_json_value(value: Any) -> None:
    """Valid JSON is decoded as is (commands: objects only); order_id_of never raises."""
    raw = json.dumps(value).encode()
    order = _parse(parse_order, raw)
    if not isinstance(order, PayloadInvalid):
        assert json.dumps(order) == json.dumps(value)
        assert order_id_of(order) is None or isinstance(order_id_of(order), str)
    command = _parse(parse_command, raw)
    assert isinstance(command, PayloadInvalid) == (not isinstance(value, dict))


def test_limits() -> None:
    """Exactly MAX_DEPTH levels decode; one more is refused; brackets inside strings do not count."""
    assert parse_order(("[" * MAX_DEPTH + "]" * MAX_DEPTH).encode()) is not None
    deeper = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
    assert isinstance(_parse(parse_order, deeper.encode()), PayloadInvalid)
    assert parse_command(json.dumps({"note": "[" * 1000}).encode()) == {"note": "[" * 1000}


def test_the_signed_text_names_version_venue_and_command() -> None:
    """The exact bytes a command signature covers (docs/mqtt.md): a signature for one command fails on another."""
    from agent.mqtt.commands import SignatureChecker, canonical, sign

    body = {"order_id": "o1", "ts": 1700000000, "sig": "ignored"}
    assert canonical(body, command="reprint", venue="harbour-kitchen") == (
        b'venue-agent-cmd-v2\nharbour-kitchen\nreprint\n{"order_id":"o1","ts":1700000000}'
    )
    signed = body | {"sig": sign(body, "k", command="reprint", venue="harbour-kitchen")}
    checker = SignatureChecker("k", "harbour-kitchen")
    assert checker.verify(signed, command="reprint", now=1700000000) == signed["sig"]
    for command, venue in (("cancel", "harbour-kitchen"), ("reprint", "other-venue")):
        try:
            SignatureChecker("k", venue).verify(signed, command=command, now=1700000000)
        except Exception as exc:
            assert "bad signature" in str(exc)
        else:
            raise AssertionError(f"accepted on {command} {venue}")
