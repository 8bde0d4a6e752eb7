"""Alert texts for a person at the ops console: what happened, which order, why, and what to do. Pure code."""

from __future__ import annotations

from typing import Any

from agent.domain.models import Order
from agent.domain.states import ErrorClass

ACTIONS: dict[ErrorClass, str] = {
    ErrorClass.OUTAGE: (
        "The POS did not take the order. Check the POS device is switched on, awake, online and the POS app is"
        " open; then re-submit the order. If it still fails, enter it in the POS by hand as paid: the kitchen"
        " has a fallback ticket."
    ),
    ErrorClass.AUTH: (
        "The POS connection has expired or was revoked: re-authorise the POS connection (Lightspeed: get a new"
        " refresh token and run 'venue-agent pos authorize'; Square: put a new access token in the config and"
        " restart). Orders keep printing as fallback tickets until then, and orders that failed on credentials"
        " are sent again automatically once the POS accepts the agent."
    ),
    ErrorClass.MENU: (
        "An item's SKU is not in the POS menu: check the SKUs match between the ordering platform and the POS"
        " (and that the item exists and is active), then re-submit, or enter the order by hand."
    ),
    ErrorClass.UNAVAILABLE: (
        "An item is sold out or restricted in the POS: offer the customer a substitute or refund the item,"
        " then enter the order in the POS by hand. The item is snoozed until 08:00 tomorrow."
    ),
    ErrorClass.REJECTED: (
        "The POS refused the order (see reason): fix the cause in the POS setup (e.g. taxes, order profiles,"
        " payment method), then re-submit, or enter the order by hand."
    ),
    ErrorClass.UNCONFIRMED: (
        "The POS accepted the order but never confirmed it reached the till: check the POS device is on, not"
        " asleep, online and the POS app is open in the foreground. If the order is not on the POS, enter it by"
        " hand: the kitchen has a fallback ticket."
    ),
}


def order_summary(order: Order, *, display_code: str) -> dict[str, Any]:
    """Return the order as an alert shows it: id, code, customer, items in one line, total."""
    items = ", ".join(f"{item.quantity} x {item.name}" for item in order.items)
    return {
        "id": order.id,
        "display_code": display_code,
        "customer": order.customer.name if order.customer and order.customer.name else None,
        "items": items if len(items) <= 300 else items[:297] + "...",
        "total": order.total,
        "currency": order.payment.currency,
        "fulfillment": order.fulfillment.type.value,
        "requested_at": order.requested_at.isoformat() if order.requested_at else None,
    }


def order_failed(order: Order, *, display_code: str, error_class: ErrorClass, reason: str) -> dict[str, Any]:
    """Return the ``order_failed`` alert payload."""
    return {
        "order": order_summary(order, display_code=display_code),
        "error_class": error_class.value,
        "reason": reason,
        "action": ACTIONS[error_class],
    }


def fallback_printed(order: Order, *, display_code: str, reason: str, after_print: str) -> dict[str, Any]:
    """Return the ``fallback_printed`` alert payload."""
    then = {
        "inject_marked": "it will still be sent to the POS, marked ALREADY PRINTED, once the POS takes orders",
        "inject": "it will still be sent to the POS once the POS takes orders",
        "skip": "it will not be sent to the POS: enter it by hand if the POS must have it",
    }[after_print]
    return {
        "order": order_summary(order, display_code=display_code),
        "reason": reason,
        "action": f"The kitchen has a printed ticket for this order; {then}.",
    }


def pos_down(driver: str, reason: str) -> dict[str, Any]:
    """Return the ``pos_down`` alert payload (one per outage, not one per order)."""
    return {
        "order": None,
        "reason": f"the {driver} POS is not taking orders: {reason}",
        "action": (
            "Check the POS device is switched on, awake, online and the POS app is open. Orders wait in the"
            " outbox and go in order when it is back; due orders print as fallback tickets meanwhile."
        ),
    }


# The POS refused the API client itself (OAuth2 ``invalid_client``, RFC 6749 §5.2): a new authorisation would be
# refused the same way, only the configuration fixes it.
CLIENT_CREDENTIALS_ACTION = (
    "The POS refused the agent's API client: the client credentials (pos.lightspeed_k.client_id / client_secret)"
    " are wrong, or the client was revoked. Put the right ones from the Lightspeed API portal in the config and"
    " restart the agent; re-authorising (venue-agent pos authorize) does not help. Orders keep printing as"
    " fallback tickets until then."
)


def pos_auth_required(driver: str, reason: str) -> dict[str, Any]:
    """Return the ``pos_auth_required`` alert payload; a refused API client gets its own action."""
    return {
        "order": None,
        "reason": f"the {driver} POS refused our credentials: {reason}",
        "action": CLIENT_CREDENTIALS_ACTION if "invalid_client" in reason else ACTIONS[ErrorClass.AUTH],
    }


def disk_low(*, free_mb: float, min_free_mb: int, full: bool, path: str) -> dict[str, Any]:
    """Return the ``disk_low`` alert payload: ``full`` when intake is refusing orders for lack of space."""
    if full:
        reason = (
            f"only {free_mb:.0f} MB free on the disk holding {path}: below {min_free_mb} MB the agent refuses new"
            " orders (the ordering platform gets 503 and must retry or route them elsewhere)"
        )
    else:
        reason = f"only {free_mb:.0f} MB free on the disk holding {path}; at {min_free_mb} MB it refuses new orders"
    return {
        "order": None,
        "reason": reason,
        "action": (
            "Free space on the box: check 'journalctl --disk-usage' and vacuum old logs, remove old files in"
            " /var/tmp; if the outbox itself is large, lower storage.retention_days. Call support if it fills again."
        ),
    }


def outbox_damaged(*, path: str, detail: str) -> dict[str, Any]:
    """Return the ``outbox_integrity_failed`` alert payload (PRAGMA quick_check found damage while running)."""
    return {
        "order": None,
        "reason": f"the outbox {path} is damaged (PRAGMA quick_check: {detail})",
        "action": (
            "Orders are still taken, but the file may lose them. Call support today: back up the outbox"
            " (outbox.db and outbox.db-wal) now; the agent refuses to start on it after the next restart."
        ),
    }


PRINTER_ACTIONS = {
    "paper_out": "Put a new paper roll in printer {printer} and close its cover.",
    "paper_low": "Printer {printer} is nearly out of paper: put a new roll in before the next rush.",
    "cover_open": "Close the cover of printer {printer}; check the roll sits properly.",
    "offline": (
        "Check printer {printer} is switched on and shows no error light, its cable or network is connected"
        " (its IP is on its self-test page), and that no other device holds its connection."
    ),
}


def printer_alert_name(status: str) -> str:
    """Return the alert raised for a printer in ``status`` (paper_out, paper_low, else printer_offline)."""
    if status in ("paper_out", "paper_low"):
        return f"printer_{status}"
    return "printer_offline"


def printer_problem(printer: str, status: str, detail: str, *, covered_by: str | None) -> dict[str, Any]:
    """Return the payload for one printer that cannot print; ``covered_by`` names the printer that took over."""
    action = PRINTER_ACTIONS.get(status, PRINTER_ACTIONS["offline"]).format(printer=printer)
    if covered_by is not None:
        meanwhile = f" Tickets print on {covered_by} meanwhile."
    elif status == "paper_low":
        meanwhile = ""
    else:
        meanwhile = " Tickets for this printer wait and print as soon as it answers."
    return {
        "order": None,
        "printer": printer,
        "printer_state": status,
        "reason": f"printer {printer}: {detail}",
        "action": action + meanwhile,
    }


def ticket_not_printed(
    order: Order | None, *, display_code: str, kind: str, failures: dict[str, tuple[str, str]]
) -> dict[str, Any]:
    """Return the payload when no printer took a ticket; ``failures`` maps printer to (status, detail)."""
    reasons = "; ".join(f"{name}: {detail}" for name, (_, detail) in failures.items()) or "no printer is configured"
    steps = " ".join(
        PRINTER_ACTIONS.get(status, PRINTER_ACTIONS["offline"]).format(printer=name)
        for name, (status, _) in failures.items()
    )
    return {
        "order": None if order is None else order_summary(order, display_code=display_code),
        "printers": {name: status for name, (status, _) in failures.items()},
        "reason": f"no printer could print the {kind} ticket: {reasons}",
        "action": (
            f"{steps} The ticket waits and prints as soon as a printer answers; until then tell the kitchen"
            " about this order."
        ).strip(),
    }
