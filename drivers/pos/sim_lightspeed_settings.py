"""The simulator's Lightspeed K-Series dialect state: tokens, webhook target, switches and deliveries made.

``LightspeedSim.update`` is what ``POST /_sim/lightspeed`` calls; ``sim_lightspeed`` serves the routes over it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from drivers.pos.sim_state import SimulatorState

ORDER_PATHS = {"/o/op/1/order/toGo": "toGoOrder", "/o/op/1/order/local": "localOrder"}
READINESS_PATH = "/o/op/1/onlineOrderReadiness"
TOKEN_PATH = "/oauth/token"  # noqa: S105 - a path, not a secret
# Lightspeed: "Refresh tokens expire after 14 days" unused (Authorization FAQ, "Quick Facts",
# https://api-portal.lsk.lightspeed.app/quick-start/authentication/authorization).
REFRESH_TOKEN_IDLE_SECONDS = 14 * 24 * 3600


@dataclass
class WebhookDelivery:
    """One notification the simulator POSTed (or failed to)."""

    third_party_reference: str
    body: dict[str, Any]
    status: int | None
    error: str | None = None


@dataclass
class LightspeedSim:
    """The dialect's own state: tokens, webhook target and switches (owned by the routes)."""

    state: SimulatorState
    webhook_url: str | None = None
    webhook_username: str | None = None
    webhook_password: str | None = None
    confirm_delay_seconds: float = 0.5
    failure_reason: str | None = None
    not_ready: bool = False
    push_readiness: bool = True  # a change of not_ready is pushed as an ORDER_API notification to webhook_url
    access_token_ttl_seconds: int = 3600
    accept_unknown_refresh_tokens: bool = True
    client_id: str | None = None  # None: any client id and secret are accepted
    client_secret: str | None = None
    business_location_id: int | None = None  # None: any location
    seen_location_id: int | None = None  # the location of the last readiness check or order (for pushes)
    token_answer_delay_seconds: float = 0.0  # rotate at once, answer this much later (a crash window)
    pending_token_requests: int = 0  # token requests rotated and still held by the delay
    token_delay_changed: asyncio.Event = field(default_factory=asyncio.Event)  # wakes held token requests
    refresh_token_idle_seconds: float = REFRESH_TOKEN_IDLE_SECONDS
    access_tokens: dict[str, float] = field(default_factory=dict)  # token -> monotonic expiry
    live_refresh_tokens: dict[str, float] = field(default_factory=dict)  # token -> monotonic time issued
    last_token_request: dict[str, Any] | None = None  # how the client authenticated; the form's field names
    used_refresh_tokens: set[str] = field(default_factory=set)
    deliveries: list[WebhookDelivery] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    next_account: int = 1

    SETTABLE: ClassVar[dict[str, tuple[type, ...]]] = {
        "webhook_url": (str, type(None)),
        "webhook_username": (str, type(None)),
        "webhook_password": (str, type(None)),
        "confirm_delay_seconds": (int, float),
        "failure_reason": (str, type(None)),
        "not_ready": (bool,),
        "push_readiness": (bool,),
        "access_token_ttl_seconds": (int,),
        "accept_unknown_refresh_tokens": (bool,),
        "client_id": (str, type(None)),
        "client_secret": (str, type(None)),
        "business_location_id": (int, type(None)),
        "token_answer_delay_seconds": (int, float),
        "refresh_token_idle_seconds": (int, float),
    }
    ACTIONS: ClassVar[tuple[str, ...]] = ("expire_access_tokens", "revoke_refresh_tokens", "reset")

    def update(self, changes: Mapping[str, object]) -> None:
        """Set settings and run actions (``expire_access_tokens``, ``revoke_refresh_tokens``, ``reset``: true)."""
        for name, value in changes.items():
            if name in self.ACTIONS:
                if value is not True:
                    msg = f"{name!r} is an action: send true"
                    raise ValueError(msg)
                continue
            kinds = self.SETTABLE.get(name)
            if kinds is None:
                msg = f"unknown setting {name!r}; known: {', '.join(sorted([*self.SETTABLE, *self.ACTIONS]))}"
                raise ValueError(msg)
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                msg = f"setting {name!r} does not take {value!r}"
                raise ValueError(msg)
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                msg = f"setting {name!r} takes a number >= 0"
                raise ValueError(msg)
        if changes.get("reset") is True:
            self._reset()
        for name, value in changes.items():
            if name in self.SETTABLE:
                seconds = name in ("confirm_delay_seconds", "token_answer_delay_seconds", "refresh_token_idle_seconds")
                setattr(self, name, float(value) if seconds else value)  # type: ignore[arg-type]
        if "token_answer_delay_seconds" in changes or changes.get("reset") is True:
            self.token_delay_changed.set()  # held token requests look at the new delay
            self.token_delay_changed = asyncio.Event()
        if changes.get("expire_access_tokens") is True:
            self.access_tokens.clear()
        if changes.get("revoke_refresh_tokens") is True:
            self.used_refresh_tokens |= set(self.live_refresh_tokens)
            self.live_refresh_tokens.clear()
            self.accept_unknown_refresh_tokens = False

    def public(self) -> dict[str, Any]:
        """Return the settings, with the webhook password masked."""
        shown = {name: getattr(self, name) for name in self.SETTABLE}
        if shown["webhook_password"]:
            shown["webhook_password"] = "********"  # noqa: S105 - a mask
        if shown["client_secret"]:
            shown["client_secret"] = "********"  # noqa: S105 - a mask
        return {
            **shown,
            "live_access_tokens": len(self.access_tokens),
            "webhooks_sent": len(self.deliveries),
            "pending_token_requests": self.pending_token_requests,
            "last_token_request": self.last_token_request,
        }

    def _reset(self) -> None:
        for task in self.tasks:
            task.cancel()
        fresh = LightspeedSim(self.state)
        fields = ("access_tokens", "live_refresh_tokens", "used_refresh_tokens", "deliveries", "last_token_request")
        for name in (*self.SETTABLE, *fields):
            setattr(self, name, getattr(fresh, name))
        self.next_account = 1
