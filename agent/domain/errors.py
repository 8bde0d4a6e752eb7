"""Every exception the agent core raises, in one place.

The hierarchy::

    AgentError                  root of everything raised on purpose by ``agent``
    ├── ConfigError             the technician's file (or environment) is wrong; carries every problem
    │   └── ConfigNotFound      there is no config file at all
    ├── OrderError              an order payload or an operation on an order is refused
    │   ├── OrderInvalid        the payload breaks a rule of the order schema; carries every field error
    │   │   └── BodyInvalid     the body is not acceptable JSON (malformed, too deep, a key twice...)
    │   ├── OrderConflict       same id, different content (use PUT), or the state forbids the operation
    │   └── OrderNotFound       no order with that id
    └── StorageError            the outbox cannot take a write right now
        ├── StorageFull         below ``storage.min_free_mb`` or the disk reported full
        └── OutboxRefused       the outbox file is missing, empty, another box's or damaged: a technician decides

Driver errors live in ``drivers.pos.errors`` and ``drivers.printers.errors``; drivers translate
third-party exceptions into those at their edge, and the core never sees an ``httpx`` exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class AgentError(Exception):
    """Root of every exception the agent raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file: where (file, dotted key) and why."""

    key: str
    message: str
    source: str = ""

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}{self.key}: {self.message}"


class ConfigError(AgentError):
    """The configuration is unusable; ``problems`` lists every reason at once."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ConfigNotFound(ConfigError):
    """No config file exists at any of ``searched`` (the command line offers ``config init``)."""

    def __init__(self, problems: list[Problem], searched: list[Path]) -> None:
        self.searched = searched
        super().__init__(problems)


@dataclass(frozen=True)
class FieldError:
    """One rule an order payload breaks: the field path and a sentence saying why."""

    loc: tuple[str | int, ...]
    msg: str

    def as_dict(self) -> dict[str, object]:
        """Return the RFC 9457 ``errors[]`` member for this field."""
        return {"loc": list(self.loc), "msg": self.msg}


class OrderError(AgentError):
    """An order payload or an operation on an order is refused."""


class OrderInvalid(OrderError):
    """The payload breaks the order schema (docs/intake-api.md); ``errors`` names every field."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in errors))


class BodyInvalid(OrderInvalid):
    """The body is not one acceptable JSON value (``agent.api.jsonbody``); ``errors`` names the field or ``body``."""


class OrderConflict(OrderError):
    """The order exists with other content, or its state forbids the operation."""

    def __init__(self, detail: str, *, state: str | None = None) -> None:
        self.detail = detail
        self.state = state
        super().__init__(detail)


class OrderNotFound(OrderError):
    """No order with that id is in the outbox."""

    def __init__(self, order_id: str) -> None:
        self.order_id = order_id
        super().__init__(f"no order with id {order_id!r}")


class StorageError(AgentError):
    """The outbox cannot take a write right now; nothing was written."""

    retry_after_seconds = 30


class StorageFull(StorageError):
    """Free disk space is below ``storage.min_free_mb`` or SQLite reported the disk full."""


class OutboxRefused(StorageError):
    """The agent will not open this outbox file (``reason``: missing, empty, foreign, corrupt, integrity, marker)."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)
