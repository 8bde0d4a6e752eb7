"""Decoding an untrusted JSON body (intake API, webhooks, MQTT payloads) with its cost bounded before parsing.

``decode_json`` is a pure function: bytes in, one JSON value out, or ``BodyInvalid`` naming the field (its
path in the document) or ``body``. The standard library parser does the parsing; around it:

- nesting depth is counted on the raw text (strings blanked out first) *before* ``json.loads``, whose C
  scanner recurses once per level and raises ``RecursionError`` near 1,000;
- every number literal goes through ``parse_int`` / ``parse_float`` hooks that refuse one longer than
  ``MAX_NUMBER_LENGTH`` characters without converting it (``int()`` of a long digit string is quadratic and
  refused by Python past 4,300 digits), and a float that overflows to infinity;
- ``NaN`` / ``Infinity`` (accepted by ``json.loads``, not JSON per RFC 8259) are refused;
- a key given twice in one object is refused rather than the last one silently winning;
- a string holding a lone UTF-16 surrogate escape (``"\\ud800"``, which no UTF-8 store or log can encode) is refused.

The hooks do not raise: they leave a marker, and one walk of the decoded value turns every marker into a
field error with its path, so a refusal names ``total`` or ``items.0.quantity`` rather than only ``body``.
"""

from __future__ import annotations

import json
import math
import operator
import re
from dataclasses import dataclass, field
from itertools import accumulate, count
from typing import Any

from agent.domain.errors import BodyInvalid, FieldError

MAX_DEPTH = 32  # an intake order nests at most 10 levels (items > modifiers x 3); webhooks and commands fewer
MAX_NUMBER_LENGTH = 50  # characters of one number literal; money is at most 9 digits

BODY: tuple[str | int, ...] = ("body",)

# One JSON string, or an unterminated one running to the end: possessive, so blanking is linear even on
# hostile input (json.loads reports the unterminated string itself).
_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]++")
# Opening brackets step +1, closing -1: mapped to 2 and 0 so the running sum minus the position is the depth.
_STEPS = str.maketrans({"[": "\x02", "{": "\x02", "]": "\x00", "}": "\x00"})
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


@dataclass(frozen=True)
class _Refused:
    """Stands in the decoded value where a number or constant was refused, until the walk reports it."""

    reason: str


@dataclass
class _Marks:
    """What the hooks saw while ``json.loads`` ran."""

    refused: bool = False
    duplicates: dict[int, list[str]] = field(default_factory=dict)


def nesting_depth(text: str) -> int:
    """Return how deep arrays and objects nest in ``text`` (0 for a scalar), ignoring brackets inside strings."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub('""', text))
    if not brackets:
        return 0
    running = accumulate(brackets.translate(_STEPS).encode("ascii"))
    depth: int = max(map(operator.sub, running, count(1)))
    return max(depth, 0)


def decode_json(raw: bytes | str, *, max_depth: int = MAX_DEPTH, max_number_length: int = MAX_NUMBER_LENGTH) -> object:
    """Return the one JSON value in ``raw``, or raise ``BodyInvalid`` naming every field (or ``body``) it refuses."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BodyInvalid([FieldError(BODY, f"the body is not UTF-8 (byte {exc.start})")]) from None
    else:
        text = raw
    depth = nesting_depth(text)
    if depth > max_depth:
        msg = f"the JSON nests {depth} levels deep; at most {max_depth} are accepted"
        raise BodyInvalid([FieldError(BODY, msg)])
    marks = _Marks()

    def number(literal: str, convert: type[int] | type[float]) -> object:
        if len(literal) > max_number_length:
            marks.refused = True
            return _Refused(f"a number of {len(literal)} characters; at most {max_number_length} are accepted")
        value = convert(literal)
        if isinstance(value, float) and not math.isfinite(value):
            marks.refused = True
            return _Refused(f"the number {literal} is out of range")
        return value

    def constant(literal: str) -> object:
        marks.refused = True
        return _Refused(f"{literal} is not a JSON number (RFC 8259)")

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(items)
        if len(obj) != len(items):
            seen: set[str] = set()
            twice: list[str] = []
            for key, _ in items:
                if key in seen and key not in twice:
                    twice.append(key)
                seen.add(key)
            marks.duplicates[id(obj)] = twice
        return obj

    try:
        value = json.loads(
            text,
            parse_int=lambda s: number(s, int),
            parse_float=lambda s: number(s, float),
            parse_constant=constant,
            object_pairs_hook=pairs,
        )
    except json.JSONDecodeError as exc:
        message = f"malformed JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        raise BodyInvalid([FieldError(BODY, message)]) from None
    surrogates = _SURROGATE_ESCAPE.search(text) is not None
    if marks.refused or marks.duplicates or surrogates:
        errors = _walk(value, (), marks, surrogates=surrogates)
        if errors:
            raise BodyInvalid(errors)
    return value


def _walk(value: object, path: tuple[str | int, ...], marks: _Marks, *, surrogates: bool) -> list[FieldError]:
    """Return a field error for every marker, duplicated key and (if any may exist) lone surrogate in ``value``."""
    errors: list[FieldError] = []
    where = path or BODY
    if isinstance(value, _Refused):
        errors.append(FieldError(where, value.reason))
    elif isinstance(value, str):
        if surrogates and _SURROGATE.search(value):
            errors.append(FieldError(where, "a lone UTF-16 surrogate escape (\\ud800-\\udfff) is not text"))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            errors += _walk(item, (*path, index), marks, surrogates=surrogates)
    elif isinstance(value, dict):
        for key in marks.duplicates.get(id(value), []):
            shown = _printable(key)
            errors.append(FieldError((*path, shown), f"the key {shown!r} is given more than once in one object"))
        for key, item in value.items():
            if surrogates and _SURROGATE.search(key):
                errors.append(FieldError((*path, _printable(key)), "a key holds a lone UTF-16 surrogate escape"))
            errors += _walk(item, (*path, _printable(key)), marks, surrogates=surrogates)
    return errors


def _printable(key: str) -> str:
    """Return ``key`` with lone surrogates written as escapes, so an error naming it can itself be encoded."""
    return key.encode("utf-8", "backslashreplace").decode("utf-8") if _SURROGATE.search(key) else key
