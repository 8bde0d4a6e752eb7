"""The POS simulator's shared state: fault switches, records of orders and requests, and the dialect registry type.

Every dialect (``sim_contract`` for the ``http`` contract, ``sim_lightspeed``, ``sim_square``) serves routes over one
``SimulatorState``; ``simulator`` assembles them into an app. Dialects import this module, never ``simulator``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from drivers.pos.http_mapping import IDEMPOTENCY_HEADER


class FaultError(ValueError):
    """A fault switch is unknown or its value has the wrong type."""


@dataclass
class Faults:
    """The simulator's fault switches; all off by default (a healthy POS)."""

    down: bool = False  # 503 {"error":"down"} on every contract endpoint
    hard_down: bool = False  # listener closed: connections are refused
    hard_down_ms: int = 0  # with hard_down: come back by itself after this long (0: stay down)
    not_ready: bool = False  # /ready says ready=false (app closed); orders still accepted
    slow_ms: int = 0  # wait this long before answering any contract request
    error_rate: float = 0.0  # fraction of order requests answered 500 (seeded random)
    rate_limit: bool = False  # 429 on every order request while on
    rate_limit_count: int = 0  # 429 on the next N order requests
    retry_after_seconds: int = 1  # Retry-After sent with 429 and 503
    auth_expired: bool = False  # 401 on every contract endpoint
    sold_out_skus: list[str] = field(default_factory=list)  # 423 {"error":"sold_out","skus":[...]}
    unknown_skus: list[str] = field(default_factory=list)  # 422 {"error":"unknown_sku","skus":[...]}
    two_phase: bool = False  # 202 pending, confirmed on GET /orders/{key} after confirm_after_ms
    confirm_after_ms: int = 1000
    never_confirm: bool = False  # orders accepted while on stay pending forever
    html_errors: bool = False  # 5xx answers come as text/html, like a broken proxy
    ready_status: int = 0  # /ready always answers this status (404, 405, 501: a POS without one); 0: off

    def update(self, changes: Mapping[str, object]) -> None:
        """Set the given switches, after checking every name and value (nothing changes on error)."""
        kinds = {f.name: str(f.type) for f in fields(self)}
        checked: dict[str, object] = {}
        for name, value in changes.items():
            kind = kinds.get(name)
            if kind is None:
                msg = f"unknown fault switch {name!r}; known: {', '.join(sorted(kinds))}"
                raise FaultError(msg)
            checked[name] = _check_switch(name, kind, value)
        status = checked.get("ready_status", 0)
        if status and not (isinstance(status, int) and 400 <= status <= 599):
            msg = f"fault switch 'ready_status' takes 0 or an HTTP error status 400-599, not {status!r}"
            raise FaultError(msg)
        for name, value in checked.items():
            setattr(self, name, value)


@dataclass
class OrderRecord:
    """An order the simulated POS accepted."""

    key: str
    pos_reference: str
    order: dict[str, Any]
    received_at: datetime
    received_monotonic: float
    two_phase: bool = False
    confirm_at: float | None = None  # monotonic; None with two_phase: never confirmed
    failure: dict[str, Any] | None = None  # two-phase: what the POS will report instead of injecting


@dataclass
class RequestRecord:
    """One request to a contract endpoint, refused or not."""

    seq: int
    method: str
    path: str
    idempotency_key: str | None
    received_at: datetime
    monotonic: float
    status: int = 0


ListenerHook = Callable[[bool], Awaitable[None]]


class SimulatorState:
    """The switches and the records of one simulator; tests may read and poke it directly."""

    def __init__(
        self,
        *,
        hmac_secret: bytes | None = None,
        faults: Faults | None = None,
        seed: int = 0,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.hmac_secret = hmac_secret
        self.faults = faults if faults is not None else Faults()
        self.seed = seed
        self.monotonic = monotonic
        self.wall = wall
        self.orders: dict[str, OrderRecord] = {}
        self.requests: list[RequestRecord] = []
        self.attempts: Counter[str] = Counter()
        self.port: int | None = None
        self.random = random.Random(seed)
        self._next_reference = 1
        self._listener_hook: ListenerHook | None = None
        self._revive: asyncio.Task[None] | None = None

    async def apply_faults(self, changes: Mapping[str, object]) -> None:
        """Set switches (partial update); opens or closes the listener when ``hard_down`` changes."""
        was_hard_down = self.faults.hard_down
        self.faults.update(changes)
        if self.faults.hard_down != was_hard_down:
            await self._hard_down_changed()

    async def reset(self) -> None:
        """Forget every order and request, switch every fault off and re-seed the random source."""
        was_hard_down = self.faults.hard_down
        self.faults = Faults()
        self.orders.clear()
        self.requests.clear()
        self.attempts.clear()
        self.random = random.Random(self.seed)
        self._next_reference = 1
        if was_hard_down:
            await self._hard_down_changed()

    def next_reference(self) -> str:
        """Return a new POS reference ``SIM-000001``, ``SIM-000002``, ..."""
        reference = f"SIM-{self._next_reference:06d}"
        self._next_reference += 1
        return reference

    def log_request(self, request: Request) -> RequestRecord:
        """Record a contract request as it arrives (and count order POSTs per key); the caller sets the status."""
        record = RequestRecord(
            seq=len(self.requests) + 1,
            method=request.method,
            path=request.url.path,
            idempotency_key=request.headers.get(IDEMPOTENCY_HEADER),
            received_at=self.wall(),
            monotonic=self.monotonic(),
        )
        self.requests.append(record)
        if record.method == "POST" and record.idempotency_key:
            self.attempts[record.idempotency_key] += 1
        return record

    def order_status(self, record: OrderRecord) -> dict[str, Any]:
        """Return what ``GET /orders/{key}`` says about an accepted order now."""
        settled = not record.two_phase or (record.confirm_at is not None and self.monotonic() >= record.confirm_at)
        if not settled:
            return {"status": "pending", "pos_reference": record.pos_reference}
        if record.failure is not None:
            return {"status": "failed", **record.failure}
        return {"status": "injected", "pos_reference": record.pos_reference}

    def attach_listener(self, hook: ListenerHook) -> None:
        """Let ``hook`` close (False) or reopen (True) the listener whenever ``hard_down`` changes."""
        self._listener_hook = hook

    def detach_listener(self) -> None:
        """Forget the listener hook and cancel a pending ``hard_down_ms`` revival (the server is stopping)."""
        self._listener_hook = None
        if self._revive is not None:
            self._revive.cancel()

    async def _hard_down_changed(self) -> None:
        if self._revive is not None and self._revive is not asyncio.current_task():
            self._revive.cancel()
        self._revive = None
        if self._listener_hook is not None:
            await self._listener_hook(not self.faults.hard_down)
        if self.faults.hard_down and self.faults.hard_down_ms > 0:
            self._revive = asyncio.create_task(self._revive_later(self.faults.hard_down_ms / 1000))

    async def _revive_later(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.apply_faults({"hard_down": False})


def _check_switch(name: str, kind: str, value: object) -> object:
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if kind == "float" and isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)
    if kind == "list[str]" and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    expected = {"bool": "true or false", "int": "a whole number >= 0", "float": "a number from 0 to 1"}
    msg = f"fault switch {name!r} takes {expected.get(kind, 'a list of strings')}, not {value!r}"
    raise FaultError(msg)


RouteFactory = Callable[[SimulatorState], list[Route]]


@dataclass(frozen=True)
class Dialect:
    """A POS dialect the simulator speaks: its name and the routes it serves over one ``SimulatorState``."""

    name: str
    routes: RouteFactory
