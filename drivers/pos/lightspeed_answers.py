"""What the Lightspeed K-Series create-order call's answer means (docs/lightspeed-k.md): an inject result.

``ApiAnswer`` reads any body (JSON object, other JSON, raw text, nothing); ``lightspeed_notifications`` reads
webhooks and readiness with it. Pure: ``drivers.pos.lightspeed_k`` does the network.
"""

from __future__ import annotations

import json
import re
from typing import Any

from agent.domain.states import ErrorClass
from drivers.pos.base import Accepted, InjectResult, Permanent, Transient

_SNIPPET_CHARS = 160
_SPACE = re.compile(r"\s+")
_TAG = re.compile(r"<[^>]*>")
_DUPLICATE = "reference has already been used"
_MENU_WORDS = re.compile(r"\b(skus?|plus?|products?)\b", re.IGNORECASE)
_ITEM_MISSING = re.compile(
    r"\b(items?|modifiers?)\b.*\b(unknown|not found|does not exist|doesn't exist|no such|invalid)\b"
    r"|\b(unknown|invalid|no such)\b.*\b(items?|modifiers?)\b",
    re.IGNORECASE,
)


def classify_answer(status: int, body: object) -> InjectResult:
    """Turn the answer to a create-order call into a result.

    ``body`` is the decoded JSON, or the raw text/bytes when it is not JSON. 200 ``{"status":"ok"}``
    means accepted for asynchronous delivery (the webhook confirms). 401/403 come back as
    ``Permanent(AUTH)``: the driver refreshes the access token and retries once before reporting it.
    429 and 5xx are transient; the driver adds the ``Retry-After`` it read from the headers.
    """
    answer = ApiAnswer(status, body)
    if 200 <= status < 300:
        word = str(answer.field("status") or "").lower()
        if word == "ok":
            return Accepted(pos_reference=None)
        if word == "fail":
            return Permanent(ErrorClass.REJECTED, answer.reason("Lightspeed refused the order."), status=status)
        # An unexpected 2xx (e.g. a proxy page) may or may not have reached Lightspeed: resend with the same reference.
        return Transient(reason=answer.reason("Lightspeed gave an unexpected answer."), status=status, in_doubt=True)
    if status in (400, 409) and _DUPLICATE in answer.words().lower():
        return Accepted(pos_reference=None)
    if status in (401, 403):
        summary = "Lightspeed refused the agent's access token: re-authorise the K-Series connection."
        return Permanent(ErrorClass.AUTH, answer.reason(summary), status=status)
    if status == 429:
        return Transient(reason=answer.reason("Lightspeed is limiting how fast it takes requests."), status=status)
    if status >= 500:
        return Transient(reason=answer.reason("Lightspeed had a server error."), status=status)
    if status == 408:
        return Transient(reason=answer.reason("Lightspeed timed out reading the request."), status=status)
    if not answer.is_object:
        return Permanent(ErrorClass.REJECTED, answer.reason("Lightspeed rejected the order."), status=status)
    if status == 400:
        return _classify_bad_request(answer)
    if status == 404:
        summary = "Lightspeed does not know this business location: check business_location_id in [pos.lightspeed_k]."
        return Permanent(ErrorClass.REJECTED, answer.reason(summary), status=status)
    return Permanent(ErrorClass.REJECTED, answer.reason("Lightspeed rejected the order."), status=status)


def _classify_bad_request(answer: ApiAnswer) -> Permanent:
    problems: list[str] = []
    skus: list[str] = []
    menu = False
    for error in answer.errors():
        field = str(error.get("field") or "")
        message = str(error.get("defaultMessage") or error.get("message") or "invalid")
        problems.append(f"{field}: {message}" if field else message)
        if "sku" in field.lower() or _MENU_WORDS.search(message) or _ITEM_MISSING.search(message):
            menu = True
            value = error.get("rejectedValue")
            if isinstance(value, str) and value:
                skus.append(value)
    words = answer.words()
    if _MENU_WORDS.search(words) or _ITEM_MISSING.search(words):
        menu = True
    listed = f" ({'; '.join(problems)})" if problems else ""
    if menu:
        summary = f"Lightspeed does not accept items of this order{listed}: check the SKUs against the POS menu."
        return Permanent(ErrorClass.MENU, answer.reason(summary), status=400, skus=tuple(skus))
    return Permanent(ErrorClass.REJECTED, answer.reason(f"Lightspeed rejected the order{listed}."), status=400)


class ApiAnswer:
    """A Lightspeed answer whose body may be a JSON object, other JSON, raw text or nothing."""

    def __init__(self, status: int, body: object) -> None:
        self.status = status
        self.raw = ""
        self.data: Any = body
        if isinstance(body, bytes | bytearray):
            body = bytes(body).decode("utf-8", errors="replace")
        if isinstance(body, str):
            self.raw = body
            try:
                self.data = json.loads(body)
            except (
                ValueError,
                RecursionError,
            ):  # RecursionError: a nesting bomb from a broken or hostile POS is just not JSON
                self.data = None
        self.is_object = isinstance(self.data, dict)

    def field(self, name: str) -> Any:
        """Return a top-level field of a JSON object body, or None."""
        return self.data.get(name) if isinstance(self.data, dict) else None

    def errors(self) -> list[dict[str, Any]]:
        """Return the Spring-style ``errors`` (or ``apiSubExceptions``) entries."""
        found = self.field("errors") or self.field("apiSubExceptions")
        return [e for e in found if isinstance(e, dict)] if isinstance(found, list) else []

    def words(self) -> str:
        """Return Lightspeed's own message (``message``, ``msg``, ``error``), or a snippet of the raw body."""
        for key in ("message", "msg", "error_description", "error"):
            value = self.field(key)
            if isinstance(value, str) and value.strip():
                return shorten(value)
        if self.raw and not self.is_object:
            return shorten(_TAG.sub(" ", self.raw))
        return ""

    def reason(self, summary: str) -> str:
        """Return ``summary`` followed by the status and Lightspeed's words."""
        words = self.words()
        if not words:
            empty = "an empty body" if self.data is None and not self.raw else "no message"
            return f"{summary} Lightspeed answered {self.status} with {empty}."
        if not self.is_object and self.raw:
            kind = "HTML" if self.raw.lstrip().startswith("<") else "non-JSON"
            return f"{summary} Lightspeed answered {self.status} with a {kind} body: {words}"
        return f"{summary} Lightspeed answered {self.status}: {words}"


def shorten(text: str, limit: int = _SNIPPET_CHARS) -> str:
    """Return ``text`` on one line, cut to ``limit`` characters ending in ``...`` when longer."""
    flat = _SPACE.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 3].rstrip() + "..."
