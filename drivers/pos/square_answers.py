"""What Square's answers mean (docs/square.md): CreateOrder answers to inject results, location answers to readiness.

Pure functions over the status and the decoded body; ``drivers.pos.square`` does the network.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from agent.domain.states import ErrorClass
from drivers.pos.base import Injected, InjectResult, Permanent, Readiness, ReadinessState, Transient

TAX_HINT = "check the Square tax setup: one tax only"
_SNIPPET_CHARS = 120
_DETAIL_CHARS = 300
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
_LINE_PATH = re.compile(r"line_items\[(\d+)\]")
_MODIFIER_PATH = re.compile(r"line_items\[(\d+)\]\.modifiers\[(\d+)\]")
_DISCOUNT_PATH = re.compile(r"discounts\[(\d+)\]")
_TAX_WORD = re.compile(r"\btax(es)?\b|tax_", re.IGNORECASE)
_RATE_LIMIT_CATEGORIES = frozenset({"RATE_LIMIT_ERROR", "RATE_LIMITED_ERROR"})


def decode_body(content: bytes) -> object:
    """Return the JSON an answer carries, or the raw bytes when it is not JSON."""
    try:
        return json.loads(content)
    except (
        ValueError,
        UnicodeDecodeError,
        RecursionError,
    ):  # RecursionError: a nesting bomb from a broken or hostile POS is just not JSON
        return content


def classify_error(
    status: int,
    body: object,
    retry_after: float | None,
    *,
    catalog: Mapping[str, str] | None = None,
    sent: Mapping[str, Any] | None = None,
) -> InjectResult:
    """Turn Square's answer to CreateOrder into a result, as docs/square.md says.

    ``body`` is the decoded JSON, or the raw bytes/text when the answer was not JSON. ``catalog`` (SKU to
    catalog object id) and ``sent`` (the body sent) let a NOT_FOUND name the SKU behind a catalog id.
    """
    answer = _SquareAnswer(status, body)
    if 200 <= status < 300:
        order_id = answer.order_id()
        if order_id is not None:
            return Injected(pos_reference=order_id)
        # Square may have created the order; only a resend with the same key can tell.
        return Transient(
            reason=f"Square answered {status} without an order id; it may have the order. {answer.evidence()}",
            status=status,
            in_doubt=True,
        )
    if status == 429 or answer.has_category(*_RATE_LIMIT_CATEGORIES) or answer.has_code("RATE_LIMITED"):
        return Transient(
            reason=f"Square is limiting how fast it takes requests. {answer.evidence()}",
            retry_after=retry_after,
            status=status,
        )
    if status >= 500:
        return Transient(
            reason=f"Square had a server error. {answer.evidence()}", retry_after=retry_after, status=status
        )
    if status in (401, 403) or answer.has_category("AUTHENTICATION_ERROR"):
        return Permanent(
            ErrorClass.AUTH,
            f"Square refused the access token: check pos.square.access_token. {answer.evidence()}",
            status=status,
        )
    if status < 400:
        return Transient(
            reason=f"Square gave an answer the agent does not understand. {answer.evidence()}", status=status
        )
    if not answer.is_square_json:
        return Permanent(
            ErrorClass.REJECTED,
            f"The POS answered something that is not Square JSON: check pos.square.base_url. {answer.evidence()}",
            status=status,
        )
    if answer.has_code("IDEMPOTENCY_KEY_REUSED") or "idempotency" in answer.words().lower():
        return Permanent(
            ErrorClass.REJECTED,
            "Square already took a request with this order's idempotency key but different content (changed, or "
            "marked already printed, after an attempt whose answer was lost); it may already be in Square: check "
            f"the Square order manager before entering it by hand. {answer.evidence()}",
            status=status,
        )
    if answer.has_code("NOT_FOUND") or status == 404:
        if "location" in answer.words().lower():
            return Permanent(
                ErrorClass.REJECTED,
                f"Square does not know the location: check pos.square.location_id. {answer.evidence()}",
                status=status,
            )
        skus = answer.skus(catalog or {}, sent or {})
        listed = f" (SKU {', '.join(skus)})" if skus else ""
        return Permanent(
            ErrorClass.MENU,
            f"Square does not know a catalog object of this order{listed}: check [pos.square.catalog]. "
            f"{answer.evidence()}",
            status=status,
            skus=skus,
        )
    if "sold out" in answer.words().lower():
        skus = answer.skus(catalog or {}, sent or {})
        return Permanent(
            ErrorClass.UNAVAILABLE, f"Square says items are sold out. {answer.evidence()}", status=status, skus=skus
        )
    hint = f" {TAX_HINT}." if answer.tax_related() else ""
    return Permanent(ErrorClass.REJECTED, f"Square rejected the order.{hint} {answer.evidence()}", status=status)


def classify_probe(status: int, body: object, latency_ms: float | None, location_id: str) -> Readiness:
    """Turn the answer to ``GET /v2/locations/{id}`` into a readiness."""
    answer = _SquareAnswer(status, body)
    if status in (401, 403) or answer.has_category("AUTHENTICATION_ERROR"):
        return Readiness(
            ReadinessState.AUTH_REQUIRED, latency_ms, f"Square refused the access token. {answer.evidence()}"
        )
    if status == 200 and isinstance(body, dict) and isinstance(body.get("location"), dict):
        location = body["location"]
        state = location.get("status")
        active = state in (None, "ACTIVE")
        conditions = {"authenticated": True, "location_active": active}
        if active:
            return Readiness(ReadinessState.READY, latency_ms, f"Square location {location_id} is active", conditions)
        return Readiness(ReadinessState.NOT_READY, latency_ms, f"Square location {location_id} is {state}", conditions)
    if status == 404:
        return Readiness(
            ReadinessState.NOT_READY,
            latency_ms,
            f"Square has no location {location_id}: check pos.square.location_id. {answer.evidence()}",
            {"authenticated": True, "location_active": False},
        )
    return Readiness(ReadinessState.UNREACHABLE, latency_ms, f"The Square readiness check failed. {answer.evidence()}")


class _SquareAnswer:
    """A Square answer whose body may or may not be the ``{"errors": [...]}`` envelope."""

    def __init__(self, status: int, body: object) -> None:
        self.status = status
        self.body = body
        if isinstance(body, str | bytes | bytearray):
            decoded = decode_body(bytes(body, "utf-8") if isinstance(body, str) else bytes(body))
        else:
            decoded = body
        self.data: dict[str, Any] = decoded if isinstance(decoded, dict) else {}
        raw_errors = self.data.get("errors")
        self.errors: list[dict[str, Any]] = (
            [e for e in raw_errors if isinstance(e, dict)] if isinstance(raw_errors, list) else []
        )
        self.is_square_json = isinstance(decoded, dict) and (bool(self.errors) or "order" in self.data)

    def order_id(self) -> str | None:
        """Return ``order.id`` of a CreateOrder answer."""
        order = self.data.get("order")
        value = order.get("id") if isinstance(order, dict) else None
        return value if isinstance(value, str) and value else None

    def has_category(self, *categories: str) -> bool:
        """Return whether any error has one of ``categories``."""
        return any(e.get("category") in categories for e in self.errors)

    def has_code(self, code: str) -> bool:
        """Return whether any error has ``code``."""
        return any(e.get("code") == code for e in self.errors)

    def words(self) -> str:
        """Return every error's code, detail and field, for matching."""
        return " ".join(str(e.get(k, "")) for e in self.errors for k in ("code", "detail", "field"))

    def tax_related(self) -> bool:
        """Return whether an error is about taxes (field or detail)."""
        return any(_TAX_WORD.search(f"{e.get('field', '')} {e.get('detail', '')}") for e in self.errors)

    def skus(self, catalog: Mapping[str, str], sent: Mapping[str, Any]) -> tuple[str, ...]:
        """Return the SKUs behind the catalog ids or line items the errors point at."""
        by_id = {object_id: sku for sku, object_id in catalog.items()}
        order = sent.get("order") if isinstance(sent.get("order"), dict) else {}
        assert isinstance(order, dict)
        found: list[str] = []
        for error in self.errors:
            field = str(error.get("field") or "")
            detail = str(error.get("detail") or "")
            sku = _sku_at(field, order, by_id) or next((s for i, s in by_id.items() if i and i in detail), None)
            if sku and sku not in found:
                found.append(sku)
        return tuple(found)

    def evidence(self) -> str:
        """Return one sentence on the answer: Square's errors, or a snippet of a body that is not Square JSON."""
        if self.errors:
            shown = [_describe_error(e) for e in self.errors[:3]]
            more = f" (+{len(self.errors) - 3} more)" if len(self.errors) > 3 else ""
            return f"Square answered {self.status}: {'; '.join(shown)}{more}"
        if isinstance(self.body, bytes | bytearray | str):
            text = self.body.decode("utf-8", errors="replace") if not isinstance(self.body, str) else self.body
            if not text.strip():
                return f"POS answered {self.status} with an empty body."
            if text.lstrip().startswith("<"):
                text = _TAG.sub(" ", text)
            return f"POS answered {self.status} with a non-JSON body: {_shorten(text, _SNIPPET_CHARS)}"
        return f"POS answered {self.status}: {_shorten(json.dumps(self.body, default=str), _SNIPPET_CHARS)}"


def _sku_at(field: str, order: Mapping[str, Any], by_id: Mapping[str, str]) -> str | None:
    """Return the SKU of the line, modifier or discount a Square ``field`` path names, if known."""
    lines = order.get("line_items") if isinstance(order.get("line_items"), list) else []
    assert isinstance(lines, list)
    match = _MODIFIER_PATH.search(field)
    if match:
        line_index, modifier_index = int(match[1]), int(match[2])
        if line_index < len(lines) and isinstance(lines[line_index], dict):
            modifiers = lines[line_index].get("modifiers") or []
            if modifier_index < len(modifiers) and isinstance(modifiers[modifier_index], dict):
                return by_id.get(str(modifiers[modifier_index].get("catalog_object_id")))
        return None
    match = _LINE_PATH.search(field)
    if match:
        index = int(match[1])
        if index < len(lines) and isinstance(lines[index], dict):
            line = lines[index]
            metadata = line.get("metadata") if isinstance(line.get("metadata"), dict) else {}
            assert isinstance(metadata, dict)
            sku = metadata.get("sku")
            return sku if isinstance(sku, str) else by_id.get(str(line.get("catalog_object_id")))
        return None
    match = _DISCOUNT_PATH.search(field)
    if match:
        discounts = order.get("discounts") if isinstance(order.get("discounts"), list) else []
        assert isinstance(discounts, list)
        index = int(match[1])
        if index < len(discounts) and isinstance(discounts[index], dict):
            object_id = discounts[index].get("catalog_object_id")
            return str(object_id) if object_id else None
    return None


def _describe_error(error: Mapping[str, Any]) -> str:
    code = str(error.get("code") or error.get("category") or "ERROR")
    detail = error.get("detail")
    field = error.get("field")
    text = code
    if detail:
        text += f": {_shorten(str(detail), _DETAIL_CHARS)}"
    if field:
        text += f" (field {field})"
    return text


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _shorten(text: str, limit: int) -> str:
    return _cut(_SPACE.sub(" ", text).strip(), limit)
