"""Commands and orders received over MQTT (docs/mqtt.md): parsing, signature checks and the dispatcher.

Topics (``P = {topic_prefix}/{venue.id}``):

- ``P/cmd/<name>`` — a command, a JSON object. Commands: ``resubmit {order_id}``, ``reprint {order_id}``,
  ``cancel {order_id}``, ``print_test {printer?}`` (every printer when none is named), ``status {}``,
  ``lightspeed_webhook {...}`` (the relayed K-Series notification is the payload without ``ts``/``sig``).
  The reply ``{"ok": true, ...result}`` or ``{"ok": false, "error": ...}`` goes to the MQTT 5 response topic of
  the request, with its correlation data, or else (and always on MQTT 3.1.1) to ``P/cmd/<name>/reply``.
- ``P/orders/new`` — an intake order; it goes through the same validation and outbox as ``POST /v1/orders``, and the
  answer ``{"order_id", "accepted", "duplicate", "state", "error"}`` is published on ``P/orders/<id>/ack`` after
  the commit. A message whose order id cannot be read (not JSON, no valid ``id``) is answered on
  ``P/orders/rejected`` with ``"order_id": null``.

Command signatures (when ``mqtt.command_hmac_secret`` is set): the command object carries ``ts`` (Unix seconds,
within ``MAX_SKEW_SECONDS`` of the agent's clock) and ``sig``, the lowercase hex HMAC-SHA256, keyed with the
secret's UTF-8 bytes, of the *signed text*: a version line, the venue id, the command name (the last topic level)
and the canonical form of the object without ``sig`` (``ts`` included), joined by ``\n``::

    "\n".join(["venue-agent-cmd-v2", venue_id, command, json.dumps(payload_without_sig, sort_keys=True,
               separators=(",", ":"), ensure_ascii=True)]).encode("utf-8")

so a signature is valid for one command on one venue only. A signature seen within the last
``REPLAY_WINDOW_SECONDS`` is refused as a replay, also after a restart: the signatures seen are kept in the outbox
(table ``command_signatures``, pruned as they expire). Refusals are logged (``mqtt_command_refused``) and recorded
as a ``command_refused`` alert. Orders on ``P/orders/new`` are not signed: they are authenticated by the broker's
ACL, like the intake token guards HTTP.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import os
import re
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from agent.api.operations import Orders
from agent.api.webhooks import LightspeedWebhooks, WebhookInvalid
from agent.domain.clock import Clock
from agent.domain.errors import OrderConflict, OrderInvalid, OrderNotFound, StorageError
from agent.outbox.store import Outbox

log = structlog.get_logger("venue_agent.mqtt")

# Test-only: seconds to wait between receiving an MQTT order and committing it, so a test can SIGKILL the agent
# inside that window. Unset (the default) means no wait.
COMMIT_DELAY_ENV = "VENUE_AGENT_TEST_MQTT_COMMIT_DELAY"
MAX_SKEW_SECONDS = 60.0
REPLAY_WINDOW_SECONDS = 120.0
ORDER_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

HealthFn = Callable[[], Awaitable[dict[str, Any]]]
PrintTestFn = Callable[[list[str]], Awaitable[list[dict[str, Any]]]]
COMMANDS = ("resubmit", "reprint", "cancel", "print_test", "status", "lightspeed_webhook")


class CommandRefused(Exception):
    """A command failed its signature check; the message says why."""


class PayloadInvalid(ValueError):
    """An MQTT payload is not a readable JSON object; ``field`` names what is wrong ('body' for the whole)."""

    def __init__(self, message: str, field: str = "body") -> None:
        super().__init__(message)
        self.field = field


# A nesting this deep is no order: refused before json.loads recurses into it (RecursionError otherwise).
MAX_DEPTH = 32
MAX_PAYLOAD_BYTES = 1_000_000


def _decode(raw: bytes, what: str) -> Any:
    """Return the JSON value of ``raw``; raise PayloadInvalid (field 'body') for anything else."""
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise PayloadInvalid(f"the {what} is larger than {MAX_PAYLOAD_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadInvalid(f"the {what} is not JSON: not UTF-8 ({exc.reason})") from None
    if _depth(text) > MAX_DEPTH:
        raise PayloadInvalid(f"the {what} is not JSON: nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, and the int digit limit's ValueError
        raise PayloadInvalid(f"the {what} is not JSON: {exc}") from None


def _depth(text: str) -> int:
    """Return the deepest bracket nesting of ``text`` outside JSON strings."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
    return deepest


def parse_order(raw: bytes) -> Any:
    """Return the decoded JSON of an order message (validated later as an intake order); raise PayloadInvalid."""
    return _decode(raw, "order")


def order_id_of(data: Any) -> str | None:
    """Return the order's ``id`` when it is a well-formed order id, else None (answered on orders/rejected)."""
    if isinstance(data, dict) and isinstance(data.get("id"), str) and ORDER_ID.match(data["id"]):
        return str(data["id"])
    return None


def parse_command(raw: bytes) -> dict[str, Any]:
    """Return a command message as a JSON object; raise PayloadInvalid."""
    payload = _decode(raw, "command")
    if not isinstance(payload, dict):
        raise PayloadInvalid("the command must be a JSON object")
    return payload


class CommandInvalid(ValueError):
    """The command is unknown or its arguments are wrong; the message says why."""


SIGNED_TEXT_VERSION = "venue-agent-cmd-v2"


def canonical(payload: dict[str, Any], *, command: str, venue: str) -> bytes:
    """Return the bytes a command signature covers (see the module docstring): version, venue, command, JSON."""
    rest = {k: v for k, v in payload.items() if k != "sig"}
    body = json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "\n".join([SIGNED_TEXT_VERSION, venue, command, body]).encode("utf-8")


def sign(payload: dict[str, Any], secret: str, *, command: str, venue: str) -> str:
    """Return the hex HMAC-SHA256 signature of ``payload`` for ``command`` on ``venue`` (what goes in ``sig``)."""
    return hmac.new(
        secret.encode("utf-8"), canonical(payload, command=command, venue=venue), hashlib.sha256
    ).hexdigest()


class SignatureChecker:
    """Verifies ``ts``/``sig`` on commands for one venue (replays are refused by ``remember_signature``)."""

    def __init__(self, secret: str, venue: str) -> None:
        self.secret = secret
        self.venue = venue

    def verify(self, payload: dict[str, Any], *, command: str, now: float) -> str:
        """Return the lowercase ``sig`` if ``payload`` is signed for ``command`` and fresh; else CommandRefused."""
        sig, ts = payload.get("sig"), payload.get("ts")
        if not isinstance(sig, str) or not sig:
            raise CommandRefused("unsigned: 'sig' is required")
        if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
            raise CommandRefused("'ts' (Unix seconds) is required")
        if abs(now - ts) > MAX_SKEW_SECONDS:
            raise CommandRefused(
                f"stale: 'ts' is {now - ts:.0f} s from the agent's clock (limit {MAX_SKEW_SECONDS:.0f})"
            )
        if not hmac.compare_digest(sig.lower(), sign(payload, self.secret, command=command, venue=self.venue)):
            raise CommandRefused("bad signature")
        return sig.lower()


def remember_signature(conn: sqlite3.Connection, sig: str, *, now: float) -> bool:
    """Record ``sig`` as used until ``now + REPLAY_WINDOW_SECONDS``; return False when it was already used."""
    conn.execute("DELETE FROM command_signatures WHERE expires_at <= ?", (now,))
    cursor = conn.execute(
        "INSERT OR IGNORE INTO command_signatures (sig, expires_at) VALUES (?, ?)", (sig, now + REPLAY_WINDOW_SECONDS)
    )
    return cursor.rowcount == 1


@dataclass(frozen=True)
class Outgoing:
    """A message to publish in answer (QoS 1, not retained); ``correlation`` goes with a response topic."""

    topic: str
    payload: dict[str, Any]
    correlation: bytes | None = None


class MqttControl:
    """Handles every message on the agent's command and order topics; never raises on bad input."""

    def __init__(
        self,
        *,
        prefix: str,
        venue: str,
        orders: Orders,
        outbox: Outbox,
        clock: Clock,
        health: HealthFn,
        webhooks: LightspeedWebhooks | None,
        secret: str | None,
        print_test: PrintTestFn,
    ) -> None:
        self.prefix = prefix
        self.orders = orders
        self.outbox = outbox
        self.clock = clock
        self.health = health
        self.webhooks = webhooks
        self.print_test = print_test
        self.checker = SignatureChecker(secret, venue) if secret else None

    @property
    def topics(self) -> list[str]:
        """Return the topic filters to subscribe to (QoS 1)."""
        return [f"{self.prefix}/cmd/+", f"{self.prefix}/orders/new"]

    async def handle(
        self, topic: str, payload: bytes, *, response_topic: str | None = None, correlation: bytes | None = None
    ) -> Outgoing | None:
        """Run one message; return the answer to publish (None for a topic this agent does not serve)."""
        if topic == f"{self.prefix}/orders/new":
            return await self._order(payload)
        head = f"{self.prefix}/cmd/"
        if topic.startswith(head) and "/" not in topic[len(head) :]:
            name = topic[len(head) :]
            body = await self._command(name, payload)
            if response_topic:
                return Outgoing(response_topic, body, correlation)
            return Outgoing(f"{topic}/reply", body)
        return None

    # ---- commands ----------------------------------------------------------------------------

    async def _command(self, name: str, raw: bytes) -> dict[str, Any]:
        try:
            payload = parse_command(raw)
        except PayloadInvalid as exc:
            return {"ok": False, "error": str(exc), "field": exc.field}
        if self.checker is not None:
            now = self.clock.now().timestamp()
            try:
                sig = self.checker.verify(payload, command=name, now=now)
                # Committed before the command runs: a crash after it leaves the signature spent, never reusable.
                if not await self.outbox.write(lambda c: remember_signature(c, sig, now=now)):
                    raise CommandRefused("replayed: this signature was already used")
            except CommandRefused as exc:
                await self._refused(name, str(exc))
                return {"ok": False, "error": f"refused: {exc}"}
        args = {k: v for k, v in payload.items() if k not in ("ts", "sig")}
        try:
            return {"ok": True, **await self._run(name, args)}
        except OrderInvalid as exc:
            return {"ok": False, "error": str(exc), "errors": [e.as_dict() for e in exc.errors]}
        except OrderConflict as exc:
            return {"ok": False, "error": exc.detail, "state": exc.state}
        except (CommandInvalid, OrderNotFound, StorageError, WebhookInvalid) as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a bug must not end the connection: answer and log it
            log.error("mqtt_command_failed", command=name, exc_info=exc)
            return {"ok": False, "error": "the agent failed to run this command; it has been logged"}

    async def _run(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        if name == "status":
            return {"health": await self.health()}
        if name == "lightspeed_webhook":
            if self.webhooks is None:
                raise CommandInvalid("the Lightspeed webhook is served only when pos.driver = 'lightspeed_k'")
            return (await self.webhooks.handle(args)).as_json()
        if name == "print_test":
            return await self._print_test(args)
        if name not in COMMANDS:
            raise CommandInvalid(f"unknown command {name!r}; one of {', '.join(COMMANDS)}")
        order_id = args.get("order_id")
        if not isinstance(order_id, str) or not order_id:
            raise CommandInvalid("'order_id' (a string) is required")
        if name == "reprint":
            if not self.orders.settings.printers_for("reprint"):
                if await self.outbox.get(order_id) is None:
                    raise OrderNotFound(order_id)
                raise OrderConflict("no printer is configured for tickets: add a [[printers]] entry")
            return {"order_id": order_id, "reprint_no": await self.orders.reprint(order_id)}
        record = await (self.orders.cancel(order_id) if name == "cancel" else self.orders.resubmit(order_id))
        return {"order_id": record.id, "state": record.state.value}

    async def _print_test(self, args: dict[str, Any]) -> dict[str, Any]:
        configured = [p.name for p in self.orders.settings.printers]
        printer = args.get("printer")
        if printer is not None and not isinstance(printer, str):
            raise CommandInvalid("'printer' must be a printer's name (a string), or left out for every printer")
        if not configured:
            raise CommandInvalid("no printers are configured: add a [[printers]] entry")
        if printer is not None and printer not in configured:
            raise CommandInvalid(f"no printer named {printer!r} (configured: {', '.join(configured)})")
        results = await self.print_test([printer] if printer else configured)
        return {"printed": all(r["printed"] for r in results), "printers": results}

    async def _refused(self, name: str, reason: str) -> None:
        log.warning("mqtt_command_refused", command=name, reason=reason)
        detail = {
            "reason": f"MQTT command {name!r} refused: {reason}",
            "action": "check the ops console's command secret and clock; if neither changed, someone else sent it",
        }
        try:
            await self.outbox.alert("command_refused", "warning", detail)
        except StorageError as exc:
            log.warning("mqtt_command_refused_alert_lost", error=str(exc))

    # ---- orders ------------------------------------------------------------------------------

    async def _order(self, raw: bytes) -> Outgoing:
        try:
            data = parse_order(raw)
        except PayloadInvalid as exc:
            return self._ack(None, {"accepted": False, "error": str(exc), "field": exc.field})
        order_id = order_id_of(data)
        if delay := float(os.environ.get(COMMIT_DELAY_ENV) or 0):
            log.warning("mqtt_order_commit_delayed", order_id=order_id, seconds=delay)
            await asyncio.sleep(delay)
        try:
            result = await self.orders.submit(data)
        except OrderInvalid as exc:
            body = {"accepted": False, "error": str(exc), "errors": [e.as_dict() for e in exc.errors]}
        except OrderConflict as exc:
            body = {"accepted": False, "error": exc.detail}
        except StorageError as exc:
            log.error("mqtt_order_storage_unavailable", order_id=order_id, error=str(exc))
            body = {
                "accepted": False,
                "error": f"the order was not stored: {exc}",
                "retry_after": StorageError.retry_after_seconds,
            }
        except Exception as exc:  # a bug must not end the connection: answer (the sender resends) and log it
            log.error("mqtt_order_failed", order_id=order_id, exc_info=exc)
            body = {"accepted": False, "error": "the agent failed to take this order; it has been logged"}
        else:
            body = {"accepted": True, "duplicate": result.duplicate, "state": result.state.value, "error": None}
        return self._ack(order_id, body)

    def _ack(self, order_id: str | None, body: dict[str, Any]) -> Outgoing:
        topic = f"{self.prefix}/orders/{order_id}/ack" if order_id else f"{self.prefix}/orders/rejected"
        return Outgoing(topic, {"order_id": order_id, **body})
