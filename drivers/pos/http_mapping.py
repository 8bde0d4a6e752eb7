"""The ``http`` POS contract (docs/http-pos.md) as pure functions: the request to send, and what an answer means.

No I/O here: ``drivers.pos.http`` does the network, the simulator verifies signatures with the same code.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from agent.domain.states import ErrorClass
from drivers.pos.base import (
    ALREADY_PRINTED_NOTE,
    Accepted,
    Injected,
    InjectRequest,
    InjectResult,
    Permanent,
    Readiness,
    ReadinessState,
    Transient,
)
from drivers.pos.retry_after import parse_retry_after

SIGNATURE_HEADER = "X-Venue-Agent-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
SIGNATURE_TOLERANCE_SECONDS = 300
_SNIPPET_CHARS = 120
_DETAIL_CHARS = 200
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


def build_request(request: InjectRequest, *, hmac_secret: bytes | None, now_unix: int) -> tuple[dict[str, str], bytes]:
    """Return the headers and JSON body for ``POST {url}``, signed when a secret is set."""
    data = request.order.model_dump(mode="json")
    if request.already_printed:
        data["notes"] = marked_notes(data.get("notes"))
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: request.idempotency_key}
    if hmac_secret is not None:
        headers[SIGNATURE_HEADER] = sign(body, hmac_secret, now_unix)
    return headers, body


def marked_notes(notes: str | None) -> str:
    """Return the order notes starting with the already-printed marker (added once)."""
    if not notes:
        return ALREADY_PRINTED_NOTE
    if notes.startswith(ALREADY_PRINTED_NOTE):
        return notes
    return f"{ALREADY_PRINTED_NOTE} - {notes}"


def sign(body: bytes, secret: bytes, now_unix: int) -> str:
    """Return the signature header value ``t=<unix>,v1=<hex hmac-sha256 of "t." + body>``."""
    return f"t={now_unix},v1={_digest(body, secret, now_unix)}"


def verify_signature(
    header: str | None,
    body: bytes,
    secret: bytes,
    now_unix: int,
    tolerance: int = SIGNATURE_TOLERANCE_SECONDS,
) -> bool:
    """Return whether ``header`` signs ``body`` with ``secret``, dated within ``tolerance`` s of now."""
    if not header:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                return False
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates or abs(now_unix - timestamp) > tolerance:
        return False
    expected = _digest(body, secret, timestamp)
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


def classify_response(status: int, headers: Mapping[str, str], body: bytes, now: datetime) -> InjectResult:
    """Turn the POS's answer to ``POST {url}`` into a result, as docs/http-pos.md says."""
    answer = _Answer(status, headers, body)
    if 200 <= status < 300:
        if status == 202 and answer.field("status") == "pending":
            return Accepted(pos_reference=answer.reference())
        return Injected(pos_reference=answer.reference())
    if status == 429:
        return Transient(
            reason=answer.reason("The POS is limiting how fast it takes orders."),
            retry_after=parse_retry_after(_header(headers, "Retry-After"), now),
            status=status,
        )
    if status in (401, 403):
        return Permanent(
            ErrorClass.AUTH,
            answer.reason("The POS refused the agent's credentials: check the token and hmac_secret in [pos.http]."),
            status=status,
        )
    if 400 <= status < 500:
        by_error = _classify_by_error(answer, status)
        if by_error is not None:
            return by_error
        if status == 409:
            return Injected(pos_reference=answer.reference(), duplicate=True)
        return Permanent(ErrorClass.REJECTED, answer.reason("The POS rejected the order."), status=status)
    if status >= 500:
        return Transient(
            reason=answer.reason("The POS had a server error."),
            retry_after=parse_retry_after(_header(headers, "Retry-After"), now),
            status=status,
        )
    if 300 <= status < 400:
        where = _header(headers, "Location") or "nowhere"
        summary = f"The POS redirected the order to {_shorten(where, _DETAIL_CHARS)}: check the url in [pos.http]."
        return Transient(reason=answer.reason(summary), status=status)
    return Transient(reason=answer.reason("The POS gave an answer the agent does not understand."), status=status)


def classify_confirmation(status: int, headers: Mapping[str, str], body: bytes) -> InjectResult | None:
    """Turn the answer to ``GET {url}/{key}`` into the order's fate, or None while pending or unknown."""
    answer = _Answer(status, headers, body, label="POS reported the order failed")
    if status != 200:
        return None
    fate = answer.field("status")
    if fate == "injected":
        return Injected(pos_reference=answer.reference())
    if fate == "failed":
        by_error = _classify_by_error(answer, None)
        if by_error is not None:
            return by_error
        return Permanent(ErrorClass.REJECTED, answer.reason("The POS did not take the order."))
    return None


def classify_readiness(status: int, headers: Mapping[str, str], body: bytes, latency_ms: float) -> Readiness:
    """Turn the answer to ``GET /ready`` into a readiness; no such endpoint (404/405/501) is ``UNSUPPORTED``."""
    answer = _Answer(status, headers, body)
    conditions = answer.conditions()
    if status in (401, 403):
        return Readiness(
            ReadinessState.AUTH_REQUIRED,
            latency_ms,
            answer.reason("The POS refused the agent's credentials."),
        )
    if status in (404, 405, 501):
        return Readiness(ReadinessState.UNSUPPORTED, latency_ms, "no readiness endpoint")
    if status == 200:
        ready = answer.field("ready")
        if ready is False:
            missing = [name for name, ok in conditions.items() if not ok]
            detail = answer.pos_words() or (f"not ready: {', '.join(missing)}" if missing else "not ready")
            return Readiness(ReadinessState.NOT_READY, latency_ms, detail, conditions)
        return Readiness(ReadinessState.READY, latency_ms, answer.pos_words() or "", conditions)
    return Readiness(
        ReadinessState.UNREACHABLE, latency_ms, answer.reason("The POS readiness check failed."), conditions
    )


def _classify_by_error(answer: _Answer, status: int | None) -> Permanent | None:
    """Return the failure a sold-out (423) or unknown-SKU answer means, else None."""
    error = answer.field("error")
    skus = answer.skus()
    listed = f": {', '.join(skus)}" if skus else ""
    if answer.status == 423 or error == "sold_out":
        summary = f"The POS says items are sold out or not for sale now{listed}."
        return Permanent(ErrorClass.UNAVAILABLE, answer.reason(summary), status=status, skus=skus)
    if error == "unknown_sku":
        summary = f"The POS does not know items of this order{listed}: check the menu SKUs."
        return Permanent(ErrorClass.MENU, answer.reason(summary), status=status, skus=skus)
    return None


class _Answer:
    """A POS answer whose body may or may not be a JSON object."""

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes, label: str = "") -> None:
        self.status = status
        self.label = label or f"POS answered {status}"
        self.content_type = (_header(headers, "Content-Type") or "").split(";")[0].strip().lower()
        self.body = body
        self.json_ok = False
        self.data: dict[str, Any] = {}
        try:
            decoded = json.loads(body)
        except (
            ValueError,
            UnicodeDecodeError,
            RecursionError,
        ):  # RecursionError: a nesting bomb from a broken or hostile POS is just not JSON
            return
        self.json_ok = True
        if isinstance(decoded, dict):
            self.data = decoded

    def field(self, name: str) -> Any:
        """Return a top-level JSON field, or None."""
        return self.data.get(name)

    def reference(self) -> str | None:
        """Return the POS's own reference for the order, when the body carries one."""
        value = self.data.get("pos_reference")
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return str(value)
        return None

    def skus(self) -> tuple[str, ...]:
        """Return the SKUs the POS names as the problem."""
        value = self.data.get("skus", self.data.get("sku"))
        if isinstance(value, str | int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list):
            return ()
        return tuple(str(v) for v in value if isinstance(v, str | int) and not isinstance(v, bool))

    def conditions(self) -> dict[str, bool]:
        """Return the boolean readiness conditions of a ``/ready`` answer."""
        value = self.data.get("conditions")
        if not isinstance(value, dict):
            return {}
        return {str(k): v for k, v in value.items() if isinstance(v, bool)}

    def pos_words(self) -> str | None:
        """Return the POS's own explanation (``detail``, ``message`` or ``error``), shortened."""
        for key in ("detail", "message", "error_description", "error"):
            value = self.data.get(key)
            if isinstance(value, str) and value.strip():
                return _shorten(value, _DETAIL_CHARS)
        return None

    def reason(self, summary: str) -> str:
        """Return ``summary`` followed by what the POS actually answered."""
        return f"{summary} {self.evidence()}"

    def evidence(self) -> str:
        """Return one sentence on the POS's answer: its status and its own words or a body snippet."""
        if not self.body.strip():
            return f"{self.label} with an empty body."
        if not self.json_ok:
            kind = self.content_type or "no content type"
            text = self.body.decode("utf-8", errors="replace")
            if "html" in kind or text.lstrip().startswith("<"):
                text = _TAG.sub(" ", text)
            return f"{self.label} with a non-JSON body ({kind}): {_shorten(text, _SNIPPET_CHARS)}"
        words = self.pos_words()
        if words:
            return f"{self.label}: {words}"
        return f"{self.label}."


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, candidate in headers.items():
        if key.lower() == lowered:
            return candidate
    return None


def _shorten(text: str, limit: int) -> str:
    flat = _SPACE.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "..."


def _digest(body: bytes, secret: bytes, timestamp: int) -> str:
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
