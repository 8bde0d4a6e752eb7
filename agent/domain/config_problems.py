"""Turning what pydantic and tomllib report into ``Problem`` lines a technician can act on (``config check``)."""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import typing
from typing import Any

from pydantic import BaseModel

from agent.domain.config_base import ENV_PREFIX, SECRET_KEYS
from agent.domain.errors import Problem

Loc = tuple[str | int, ...]


def printer_key(name: object, index: int) -> str:
    """Return how a problem names the ``[[printers]]`` table at ``index``: by its name, else by its position."""
    return f"printers[{name}]" if isinstance(name, str) and name else f"printers[#{index + 1}]"


def dotted(loc: Loc, raw: dict[str, Any]) -> str:
    """Return the key a problem names: dotted, a printer by its name (``printers[kitchen].columns``)."""
    parts: list[str] = []
    rest = list(loc)
    while rest:
        part = rest.pop(0)
        if part == "printers" and not parts and rest and isinstance(rest[0], int):
            index = rest.pop(0)
            assert isinstance(index, int)
            printers = raw.get("printers")
            entry = printers[index] if isinstance(printers, list) and index < len(printers) else None
            parts.append(printer_key(entry.get("name") if isinstance(entry, dict) else None, index))
        else:
            parts.append(str(part))
    return ".".join(parts) or "(top level)"


def problems_from(errors: list[Any], model: type[BaseModel], raw: dict[str, Any], source: str) -> list[Problem]:
    """Return one Problem per error of a ValidationError, expanding the ``@key: message`` lines of ``keyed``."""
    found: list[Problem] = []
    for error in errors:
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "value_error" and message.startswith("@"):
            base: Loc = tuple(error["loc"])
            for line in message.splitlines():
                key, _, text = line[1:].partition(": ")
                loc = base + tuple(int(p) if p.isdigit() else p for p in key.split("."))
                found.append(_problem({"loc": loc, "type": "value_error", "msg": text}, model, raw, source))
        else:
            found.append(_problem(error, model, raw, source))
    return found


def _problem(error: Any, model: type[BaseModel], raw: dict[str, Any], source: str) -> Problem:
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        message = unknown_key_message(model, loc)
    elif kind == "missing":
        message = "required key is missing"
    elif kind == "string_pattern_mismatch" and (rule := _rule_in_words(model, loc)):
        # The field's description says its pattern in words; pydantic would quote the regular expression.
        message = f"{rule} (got {error['input']!r})"
    else:
        message = str(error["msg"]).removeprefix("Value error, ")
        if "input" in error and kind not in ("value_error", "model_type") and not _is_secret_loc(loc):
            message += f" (got {error['input']!r})"
    key = dotted(loc, raw)
    for depth in range(len(loc), 0, -1):
        name = _env_name(loc[:depth])
        if name in os.environ:
            return Problem(key, message, f"environment {name}")
    return Problem(key, message, source)


def unknown_key_message(model: type[BaseModel], loc: Loc) -> str:
    """Say that the last key of ``loc`` is unknown, suggesting the closest key valid at that place."""
    valid = _keys_at(model, loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean `{close[0]}`?"
    return "unknown key (is it misspelt?)"


def _keys_at(model: type[BaseModel], loc: Loc) -> list[str]:
    """Return the keys the table at ``loc`` takes (empty when ``loc`` is not a table of ``model``)."""
    table = _model_at(model, loc)
    return list(table.model_fields) if table is not None else []


def _rule_in_words(model: type[BaseModel], loc: Loc) -> str | None:
    """Return the description of the field at ``loc`` (its rule in words), or None."""
    table = _model_at(model, loc[:-1])
    field = table.model_fields.get(str(loc[-1])) if table is not None and loc else None
    return field.description if field is not None else None


def _model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """Return the model of the table at ``loc`` inside ``model``, or None when ``loc`` names no table."""
    current: type[BaseModel] | None = model
    for part in loc:
        if current is None:
            return None
        if isinstance(part, int):  # a list's item: its model was taken with the list's field
            continue
        field = current.model_fields.get(part)
        current = _model_in(field.annotation) if field is not None else None
    return current


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """Return the model a field holds: itself, or inside ``X | None``, ``list[X]`` or ``Annotated[X, ...]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _env_name(loc: Loc) -> str:
    return ENV_PREFIX + "__".join(str(p).upper() for p in loc)


def _is_secret_loc(loc: Loc) -> bool:
    return any(str(p) in SECRET_KEYS for p in loc)


def syntax_problem(text: str, exc: tomllib.TOMLDecodeError, source: str) -> Problem:
    """Return the Problem for a TOML syntax error: tomllib's reason, then the line it names with a caret under it."""
    message = f"not valid TOML: {exc}"
    at = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
    lines = text.splitlines()
    if at is None:  # "(at end of document)": point after the last line
        number, column = len(lines), len(lines[-1]) + 1 if lines else 1
    else:
        number, column = int(at.group(1)), int(at.group(2))
    if 1 <= number <= len(lines):
        line = lines[number - 1]
        # The caret keeps the line's tabs so it lands under the same character on any terminal.
        pad = "".join("\t" if ch == "\t" else " " for ch in line[: column - 1])
        gutter = " " * len(str(number))
        message += f"\n    {number} | {line}\n    {gutter} | {pad}^"
    return Problem("(syntax)", message, source)
