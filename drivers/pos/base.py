"""The POS driver interface: one call to inject an order, one to probe readiness, explicit results.

A driver turns an order into the POS's own request (pure mapping code) and the POS's answer into one
of ``Injected``, ``Accepted`` (two-phase: confirmation comes later), ``Transient`` (try again) or
``Permanent`` (needs a human, with an ``ErrorClass``). Drivers never raise for a POS answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

from agent.domain.models import Order
from agent.domain.states import ErrorClass

ALREADY_PRINTED_NOTE = "ALREADY PRINTED AS FALLBACK - DO NOT REMAKE"


@dataclass(frozen=True)
class InjectRequest:
    """What the core asks a driver to send: the order, its stable idempotency key, and the fallback marker."""

    order: Order
    idempotency_key: str
    already_printed: bool = False
    attempt: int = 1


@dataclass(frozen=True)
class Injected:
    """The POS has the order; ``pos_reference`` is its id there when the POS gave one."""

    pos_reference: str | None = None
    duplicate: bool = False


@dataclass(frozen=True)
class Accepted:
    """A two-phase POS accepted the order; it is in the POS only once confirmed."""

    pos_reference: str | None = None


@dataclass(frozen=True)
class Transient:
    """A failure worth retrying; ``retry_after`` is the POS's own wish, in seconds, when it said one."""

    reason: str
    retry_after: float | None = None
    status: int | None = None
    # The request may have reached the POS (a timeout after sending): resend only with the same key.
    in_doubt: bool = False


@dataclass(frozen=True)
class Permanent:
    """A failure a retry will not fix; ``error_class`` tells staff what kind."""

    error_class: ErrorClass
    reason: str
    status: int | None = None
    skus: tuple[str, ...] = field(default_factory=tuple)


InjectResult = Injected | Accepted | Transient | Permanent


class ReadinessState(StrEnum):
    """What a readiness probe found."""

    READY = "ready"
    NOT_READY = "not_ready"
    UNREACHABLE = "unreachable"
    AUTH_REQUIRED = "auth_required"
    # The POS has no readiness check (404/405/501, or the driver has none): only a real order can tell.
    UNSUPPORTED = "unsupported"


@dataclass(frozen=True)
class Readiness:
    """The result of a probe, with its round-trip time and the POS's own words."""

    state: ReadinessState
    latency_ms: float | None = None
    detail: str = ""
    conditions: dict[str, bool] = field(default_factory=dict)


class KeyValueStore(Protocol):
    """Durable key/value storage a driver may keep state in (the outbox's ``kv`` table): tokens, cursors."""

    async def kv_get(self, key: str) -> str | None:
        """Return the value stored under ``key``, or None."""
        ...

    async def kv_put(self, key: str, value: str) -> None:
        """Store ``value`` under ``key``, committed (fsynced) before returning."""
        ...


class Driver(Protocol):
    """What the dispatcher needs from a POS driver."""

    name: str
    two_phase: bool

    async def inject(self, request: InjectRequest) -> InjectResult:
        """Send one order; never raise for anything the POS or the network does."""
        ...

    async def probe(self) -> Readiness:
        """Ask whether the POS can take orders now; never raise."""
        ...

    async def confirmation(self, request: InjectRequest) -> InjectResult | None:
        """For a two-phase POS that is polled: the order's fate, or None while still pending."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class Reauthorizable(Protocol):
    """A driver whose POS connection a technician can re-authorise with a new refresh token."""

    async def authorize(self, refresh_token: str) -> None:
        """Store ``refresh_token`` durably and use it from the next request on."""
        ...
