"""A simulated venue's answers to ``P/cmd/<name>``: the same checks, replies and refusals as ``agent.mqtt.commands``.

Signatures are checked with the agent's own ``SignatureChecker``; the signatures already used are remembered in
memory only (a real agent keeps them in its outbox, across restarts).
"""

from __future__ import annotations

from typing import Any

from agent.fleet.sim import Publish, SimVenue
from agent.mqtt.commands import (
    COMMANDS,
    REPLAY_WINDOW_SECONDS,
    CommandRefused,
    PayloadInvalid,
    SignatureChecker,
    parse_command,
)

NOT_IN_POS = frozenset({"held", "scheduled", "queued", "retrying", "failed", "skipped"})


class SimCommands:
    """Answers one simulated venue's commands; ``handle`` returns the reply and what else to publish."""

    def __init__(self, venue: SimVenue, secret: str | None) -> None:
        self.venue = venue
        self.checker = SignatureChecker(secret, venue.venue) if secret else None
        self.used: dict[str, float] = {}

    def handle(self, name: str, raw: bytes, now: float) -> tuple[dict[str, Any], list[Publish]]:
        """Run command ``name`` with the message body ``raw`` at ``now``; return the reply and any alert/events."""
        try:
            payload = parse_command(raw)
        except PayloadInvalid as exc:
            return {"ok": False, "error": str(exc), "field": exc.field}, []
        if self.checker is not None:
            try:
                sig = self.checker.verify(payload, command=name, now=now)
                self.used = {s: t for s, t in self.used.items() if t > now}
                if sig in self.used:
                    raise CommandRefused("replayed: this signature was already used")
                self.used[sig] = now + REPLAY_WINDOW_SECONDS
            except CommandRefused as exc:
                return {"ok": False, "error": f"refused: {exc}"}, self._refused(name, str(exc), now)
        args = {k: v for k, v in payload.items() if k not in ("ts", "sig")}
        out: list[Publish] = []
        try:
            return {"ok": True, **self._run(name, args, now, out)}, out
        except _Conflict as exc:
            return {"ok": False, "error": exc.detail, "state": exc.state}, out
        except _Invalid as exc:
            return {"ok": False, "error": str(exc)}, out

    def _run(self, name: str, args: dict[str, Any], now: float, out: list[Publish]) -> dict[str, Any]:
        venue = self.venue
        if name == "status":
            return {"health": venue.health(now).payload}
        if name == "lightspeed_webhook":
            raise _Invalid("the Lightspeed webhook is served only when pos.driver = 'lightspeed_k'")
        if name == "print_test":
            return self._print_test(args)
        if name not in COMMANDS:
            raise _Invalid(f"unknown command {name!r}; one of {', '.join(COMMANDS)}")
        order_id = args.get("order_id")
        if not isinstance(order_id, str) or not order_id:
            raise _Invalid("'order_id' (a string) is required")
        order = venue.orders.get(order_id)
        if order is None:
            raise _Invalid(f"no order with id {order_id!r}")
        if name == "reprint":
            order.reprints += 1
            out.append(
                venue.event(now, "print_requested", order_id, detail={"kind": "reprint", "reprint_no": order.reprints})
            )
            return {"order_id": order_id, "reprint_no": order.reprints}
        if name == "cancel":
            if order.state != "cancelled":
                if order.state not in NOT_IN_POS:
                    raise _Conflict("already in the POS: cancel it on the POS", order.state)
                order.state = "cancelled"
                out.append(venue.event(now, "cancelled", order_id, "cancelled"))
            return {"order_id": order_id, "state": order.state}
        if order.state not in ("failed", "skipped"):
            detail = f"only failed or skipped orders can be re-submitted; this one is {order.state}"
            raise _Conflict(detail, order.state)
        order.state, order.error_class, order.due = "queued", None, now
        key = {"reason": "re-submitted by staff", "idempotency_key": f"{order_id}:s1"}
        out.append(venue.event(now, "resubmitted", order_id, "queued", detail=key))
        return {"order_id": order_id, "state": "queued"}

    def _print_test(self, args: dict[str, Any]) -> dict[str, Any]:
        configured = list(self.venue.printers)
        printer = args.get("printer")
        if printer is not None and not isinstance(printer, str):
            raise _Invalid("'printer' must be a printer's name (a string), or left out for every printer")
        if printer is not None and printer not in configured:
            raise _Invalid(f"no printer named {printer!r} (configured: {', '.join(configured)})")
        results = []
        for name in [printer] if printer else configured:
            state = self.venue.printers[name]
            ok = state == "ok"
            results.append(
                {
                    "printer": name,
                    "connection": f"network {name}.sim:9100",
                    "before": state,
                    "after": state,
                    "printed": ok,
                    "error": None if ok else "out of paper",
                    "notes": [] if ok else ["load a paper roll"],
                }
            )
        return {"printed": all(r["printed"] for r in results), "printers": results}

    def _refused(self, name: str, reason: str, now: float) -> list[Publish]:
        detail = {
            "reason": f"MQTT command {name!r} refused: {reason}",
            "action": "check the ops console's command secret and clock; if neither changed, someone else sent it",
        }
        return self.venue.alert(now, "command_refused", "warning", detail)


class _Invalid(ValueError):
    """The command or its arguments are wrong (answered ``ok: false`` with the message)."""


class _Conflict(Exception):
    """The order's state forbids the command."""

    def __init__(self, detail: str, state: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.state = state
