"""Lightspeed K-Series notifications and readiness (docs/lightspeed-k.md) as pure functions.

Reads what Lightspeed sends back: order notifications (SUCCESS / FAILURE webhooks), sales-restriction
(ITEM) notifications and the online-order readiness answer. No I/O. Field names follow the Order and Pay
OpenAPI description and webhook guides (https://api-portal.lsk.lightspeed.app).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple

from agent.domain.states import ErrorClass
from drivers.pos.errors import NotificationInvalid
from drivers.pos.lightspeed_answers import ApiAnswer, shorten

_OUTAGE_WORDS = re.compile(r"validity ended|task_timeout|not processed before", re.IGNORECASE)
_UNAVAILABLE_WORDS = re.compile(
    r"restrict|sold[ _-]?out|not available|unavailable|out of stock|no stock|insufficient stock|not for sale",
    re.IGNORECASE,
)
_MENU_FAILURE_WORDS = re.compile(
    r"unknown|not found|not_found|\bno\b.*\bfound\b|does not exist|doesn't exist|no such|invalid|missing|not exist",
    re.IGNORECASE,
)
_MENU_SUBJECT = re.compile(r"sku|product|item|plu|modifier|menu", re.IGNORECASE)
_MAX_ID = 10**64  # an integer id (SKU, account) with more digits is not one, and past 4,300 has no str()


@dataclass(frozen=True)
class WebhookOutcome:
    """An order notification: whose it is, SUCCESS / FAILURE / OTHER, and for a FAILURE its class and SKUs."""

    third_party_reference: str
    status: Literal["SUCCESS", "FAILURE", "OTHER"]
    pos_reference: str | None = None
    error_class: ErrorClass | None = None
    reason: str = ""
    skus: tuple[str, ...] = ()
    raw_status: str = ""  # the API's own status (READY_FOR_PICKUP, CANCELLED...), kept for OTHER
    business_location_id: int | None = None


# --- notifications ---------------------------------------------------------------------------------


def notification_type(payload: object) -> str:
    """Return a K-Series notification's type (ORDER, PAYMENT, ITEM, ORDER_API), or raise ``NotificationInvalid``."""
    if not isinstance(payload, dict):
        msg = f"not a K-Series notification: expected a JSON object, got {type(payload).__name__}"
        raise NotificationInvalid(msg)
    kind = payload.get("type")
    if isinstance(kind, str) and kind.strip():
        return kind.strip().upper()
    # The OAS defaults type to ORDER, and its own FAILURE example omits it.
    if isinstance(payload.get("thirdPartyReference"), str) and isinstance(payload.get("status"), str):
        return "ORDER"
    msg = "not a K-Series notification: no type, and no thirdPartyReference with a status"
    raise NotificationInvalid(msg)


def classify_webhook(payload: dict[str, Any], order_skus: tuple[str, ...] = ()) -> WebhookOutcome:
    """Read an ORDER notification; ``order_skus`` lets a FAILURE name which of the order's SKUs it is about."""
    kind = notification_type(payload)
    if kind != "ORDER":
        hint = " (use classify_restriction)" if kind in ("ITEM", "SALES_RESTRICTION_UPDATED") else ""
        msg = f"not an order notification: type {kind}{hint}"
        raise NotificationInvalid(msg)
    reference = payload.get("thirdPartyReference")
    if not isinstance(reference, str) or not reference:
        msg = "order notification without a thirdPartyReference"
        raise NotificationInvalid(msg)
    raw_status = payload.get("status")
    if not isinstance(raw_status, str) or not raw_status:
        msg = f"order notification for {reference!r} without a status"
        raise NotificationInvalid(msg)
    raw_status = raw_status.strip().upper()
    location = payload.get("businessLocationId")
    common: dict[str, Any] = {
        "third_party_reference": reference,
        "raw_status": raw_status,
        "business_location_id": location if isinstance(location, int) and not isinstance(location, bool) else None,
        "pos_reference": _pos_reference(payload),
    }
    if raw_status == "SUCCESS":
        return WebhookOutcome(status="SUCCESS", **common)
    if raw_status != "FAILURE":
        return WebhookOutcome(status="OTHER", reason=_failure_text(payload), **common)
    text = _failure_text(payload)
    skus = _named_skus(payload, text, order_skus)
    error_class = failure_class(text)
    return WebhookOutcome(
        status="FAILURE",
        error_class=error_class,
        reason=_failure_reason(error_class, text),
        skus=skus if error_class in (ErrorClass.UNAVAILABLE, ErrorClass.MENU) else (),
        **common,
    )


def failure_class(reason: str) -> ErrorClass:
    """Return the error class a FAILURE reason means (validity ended, restricted, unknown SKU, else rejected)."""
    if _OUTAGE_WORDS.search(reason):
        return ErrorClass.OUTAGE
    if _UNAVAILABLE_WORDS.search(reason):
        return ErrorClass.UNAVAILABLE
    if "ITEM_NOT_FOUND" in reason or (_MENU_FAILURE_WORDS.search(reason) and _MENU_SUBJECT.search(reason)):
        return ErrorClass.MENU
    return ErrorClass.REJECTED


def _pos_reference(payload: dict[str, Any]) -> str | None:
    for key in ("ikentooAccountIdentifier", "iKentooAccountIdentifier"):
        value = payload.get(key)
        if isinstance(value, str) and value:
            return value
    account = payload.get("account")
    if isinstance(account, dict) and isinstance(account.get("ikaccountId"), str) and account["ikaccountId"]:
        return str(account["ikaccountId"])
    # The deprecated V2 id (``ikentooAccountId`` in the examples, ``iKentooAccountId`` in the schema).
    for key in ("ikentooAccountId", "iKentooAccountId"):
        text = _id_text(payload.get(key))
        if text:
            return text
    return None


def _id_text(value: object) -> str | None:
    """Return a string or integer id as text; None for anything else, including an integer too long to be an id."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < _MAX_ID:
        return str(value)
    return None


def _shown(value: object) -> str:
    """Return a short repr of a value for an error message; never raises (a huge int has no repr, say)."""
    try:
        return shorten(repr(value), 80)
    except (ValueError, RecursionError):
        return f"a {type(value).__name__} too large to show"


def _failure_text(payload: dict[str, Any]) -> str:
    """Return the reason and any structured error details of a notification as one line."""
    pieces: list[str] = []
    reason = payload.get("reason")
    if isinstance(reason, str) and reason.strip():
        pieces.append(reason.strip())
    errors = payload.get("errors")
    if isinstance(errors, dict):
        timeout = errors.get("timeout")
        if isinstance(timeout, dict):
            for key in ("message", "errorKey"):
                if isinstance(timeout.get(key), str) and timeout[key] not in pieces:
                    pieces.append(timeout[key])
        account = errors.get("account")
        if isinstance(account, dict) and isinstance(account.get("type"), str):
            pieces.append(account["type"])
    return "; ".join(pieces)


def _failure_reason(error_class: ErrorClass, text: str) -> str:
    said = f" Lightspeed said: {shorten(text, 300)}" if text else " Lightspeed gave no reason."
    summary = {
        ErrorClass.OUTAGE: "The POS did not pick the order up in time (is the POS app open on the iPad?).",
        ErrorClass.UNAVAILABLE: "The POS refused items that are sold out or restricted.",
        ErrorClass.MENU: "The POS does not know items of this order: check the SKUs against the POS menu.",
    }.get(error_class, "The POS refused the order.")
    return summary + said


def _named_skus(payload: dict[str, Any], text: str, order_skus: tuple[str, ...]) -> tuple[str, ...]:
    found: list[str] = []
    value = payload.get("skus", payload.get("sku"))
    for candidate in value if isinstance(value, list) else [value]:
        named = _id_text(candidate)
        if named is not None and named not in found:
            found.append(named)
    for sku in order_skus:
        pattern = rf"(?<![A-Za-z0-9_-]){re.escape(sku)}(?![A-Za-z0-9_-])"
        if sku and sku not in found and re.search(pattern, text):
            found.append(sku)
    return tuple(found)


class Restriction(NamedTuple):
    """One item's sales restriction: its SKU, whether it cannot be sold now, and the location it is about."""

    sku: str
    unavailable: bool
    business_location_id: int | None = None


def classify_restriction(payload: object) -> list[Restriction]:
    """Return one ``Restriction`` per item of a SALES_RESTRICTION_UPDATED (type ITEM) notification.

    RESTRICTED with a remaining ``count`` above zero is still for sale (False); RESTRICTED with count 0 is
    sold out (True); a null ``count`` is "no restriction" (the sales-restrictions reference and the OAS
    "apeItem availability notification"), so it is False whatever the status, like NOT_RESTRICTED. A list
    of notifications is accepted too.
    ``businessLocationId`` (required by the OAS, "apeItem availability notification") is kept so that the
    caller can ignore another venue's items; a missing one is None.
    """
    entries = payload if isinstance(payload, list) else [payload]
    changes: list[Restriction] = []
    for entry in entries:
        kind = notification_type(entry)
        if kind not in ("ITEM", "SALES_RESTRICTION_UPDATED"):
            msg = f"not a sales-restriction notification: type {kind}"
            raise NotificationInvalid(msg)
        assert isinstance(entry, dict)
        sku, status, count = entry.get("sku"), entry.get("status"), entry.get("count")
        if not isinstance(sku, str) or not sku:
            msg = "sales-restriction notification without a sku"
            raise NotificationInvalid(msg)
        if status not in ("RESTRICTED", "NOT_RESTRICTED"):
            msg = f"sales-restriction notification for {sku!r} with status {_shown(status)}"
            raise NotificationInvalid(msg)
        if count is not None and (not isinstance(count, int) or isinstance(count, bool)):
            msg = f"sales-restriction notification for {sku!r} with count {_shown(count)}"
            raise NotificationInvalid(msg)
        location = _location(entry, f"sales-restriction notification for {sku!r}")
        changes.append(Restriction(sku, status == "RESTRICTED" and count is not None and count <= 0, location))
    return changes


def _location(entry: dict[str, Any], what: str) -> int | None:
    """Return a notification's ``businessLocationId`` (int64; a string of digits is taken too), or None if absent."""
    value = entry.get("businessLocationId")
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
        return value
    msg = f"{what} with businessLocationId {_shown(value)}"
    raise NotificationInvalid(msg)


@dataclass(frozen=True)
class ReadinessNotice:
    """An ONLINE_ORDER_READINESS (type ORDER_API) notification: whose, ready or not, why, and as of when."""

    business_location_id: int | None
    ready: bool
    conditions: dict[str, bool]
    detail: str
    last_updated_at: datetime | None


def classify_readiness(payload: object) -> ReadinessNotice:
    """Read an ONLINE_ORDER_READINESS notification (OAS "apeOnline Ordering API Readiness notification").

    Its body is the readiness answer plus ``businessLocationId`` and ``type: ORDER_API``; ``status`` (READY or
    NOT_READY) is required and decides.
    """
    if notification_type(payload) != "ORDER_API":
        msg = "not an online-order readiness notification (type ORDER_API)"
        raise NotificationInvalid(msg)
    assert isinstance(payload, dict)
    status = payload.get("status")
    if not isinstance(status, str) or status.strip().upper() not in ("READY", "NOT_READY"):
        msg = f"readiness notification with status {_shown(status)} (READY or NOT_READY)"
        raise NotificationInvalid(msg)
    location = _location(payload, "readiness notification")
    ready, conditions, detail = readiness_from(payload)
    updated = payload.get("lastUpdatedAt")
    when: datetime | None = None
    if isinstance(updated, str):
        with contextlib.suppress(ValueError):
            when = datetime.fromisoformat(updated.replace("Z", "+00:00"))
        if when is not None and when.tzinfo is None:
            when = None
    return ReadinessNotice(location, ready, conditions, detail, when)


# --- readiness -------------------------------------------------------------------------------------

_CONDITION_HINTS = {
    "enabled": "the Online Ordering API is not enabled for this location",
    "salesPeriodOpened": "the sales period is closed (open the day on the POS)",
    "acceptingOnlineOrders": "no POS has 'Online Orders enabled' in Control center",
    "availableDevices": "no POS device is running to take online orders",
}


def readiness_from(body: object) -> tuple[bool, dict[str, bool], str]:
    """Return (ready, the four READY conditions by name, a human detail) from an onlineOrderReadiness body.

    Accepts the ``GET /o/op/1/onlineOrderReadiness`` answer and the ONLINE_ORDER_READINESS notification
    (same fields). ``status`` decides; without one, ready means all four conditions hold.
    """
    answer = ApiAnswer(200, body)
    if not answer.is_object:
        shown = answer.words() or type(body).__name__
        return False, {}, f"unexpected readiness answer: {shown}"
    data: dict[str, Any] = answer.data
    config = data.get("onlineOrderingApiConfiguration")
    pos = data.get("posStatus")
    config = config if isinstance(config, dict) else {}
    pos = pos if isinstance(pos, dict) else {}
    devices = pos.get("availableDevices")
    conditions = {
        "enabled": config.get("enabled") is True,
        "salesPeriodOpened": str(pos.get("salesPeriod") or "").upper() == "OPENED",
        "acceptingOnlineOrders": pos.get("acceptingOnlineOrders") is True,
        # Typed boolean; a device count would mean the same when above zero.
        "availableDevices": devices is True
        or (isinstance(devices, int) and not isinstance(devices, bool) and devices > 0),
    }
    status = data.get("status")
    ready = status.upper() == "READY" if isinstance(status, str) else all(conditions.values())
    shown_status = status.upper() if isinstance(status, str) else ("READY" if ready else "NOT_READY")
    updated = data.get("lastUpdatedAt")
    since = f" (as of {updated})" if isinstance(updated, str) and updated else ""
    if ready:
        return True, conditions, f"{shown_status}{since}"
    missing = [_CONDITION_HINTS[name] for name, ok in conditions.items() if not ok]
    why = f": {'; '.join(missing)}" if missing else ""
    return False, conditions, f"{shown_status}{why}{since}"
