"""One configured printer's slot and the tickets queued on it; what vouches for a print; how long one job may take."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from agent.outbox.records import OrderRecord, PrintJob
from agent.printing.presence import Presence
from agent.printing.tickets import PrinterSetup
from drivers.printers.base import Delivery, PrinterStatus, StatusReading, Transport, can_confirm
from drivers.printers.status import ConfirmKind, ConfirmRequest, Timeouts, profile_confirmation

NOT_READ = StatusReading(PrinterStatus.UNKNOWN, "not read yet")
SEND_BUDGET_MARGIN_SECONDS = 1.0
SEND_BUDGET_DEFAULT_SECONDS = 60.0


def confirmation_of(delivery: Delivery, request: ConfirmRequest | None) -> str:
    """Return what vouches for a printed job: the printer's word (its kind), else ``status`` or ``write``."""
    if delivery.confirmed and request is not None:
        return request.kind
    return "status" if delivery.confirmable else "write"


def settle(future: asyncio.Future[bool], printed: bool) -> None:
    """Answer whoever waits on a ticket, unless it was answered already."""
    if not future.done():
        future.set_result(printed)


def send_budget(timeouts: object, *, confirming: bool = False) -> float:
    """Return the longest one job may take: every step's own timeout plus a margin (a safety net, never the rule)."""
    if not isinstance(timeouts, Timeouts):
        return SEND_BUDGET_DEFAULT_SECONDS
    # Connect, two status dialogues (stray-byte drain plus three queries each), the write and the close.
    budget = 2 * timeouts.connect + timeouts.write + 8 * timeouts.status + SEND_BUDGET_MARGIN_SECONDS
    return budget + (timeouts.confirm + timeouts.status if confirming else 0.0)


@dataclass
class PrinterSlot:
    """One configured printer: its transport, last known status and whether ops was told it is down."""

    setup: PrinterSetup
    transport: Transport
    state: StatusReading = NOT_READ
    alerted: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    queue: deque[QueuedTicket] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    # Whether the printer has answered a job confirmation: None not yet asked, False found not to (auto mode).
    answers_confirmation: bool | None = None
    presence: Presence = field(default_factory=Presence)

    @property
    def name(self) -> str:
        """Return the printer's name."""
        return self.setup.settings.name

    @property
    def usable(self) -> bool:
        """Whether the last status read does not rule the printer out."""
        return not self.state.status.blocks_printing

    @property
    def confirm_kind(self) -> ConfirmKind | None:
        """Return how this printer is asked to confirm each job, or None when only its status is read."""
        setting = self.setup.settings.confirm
        if not can_confirm(self.transport) or setting is False or setting == "status":
            return None
        if setting is True:
            return None if self.answers_confirmation is False else profile_confirmation(self.setup.settings.profile)
        return setting

    @property
    def confirmation(self) -> str:
        """Return what vouches for this printer's tickets: a confirmation kind, ``status`` or ``write``."""
        if self.confirm_kind is not None:
            return self.confirm_kind
        settings = self.setup.settings
        return "write" if settings.confirm is False or not settings.two_way else "status"

    def device_present(self) -> bool | None:
        """Whether the printer's device node is there now; ``None`` when it has none (network, serial, a file)."""
        present = getattr(self.transport, "present", None)
        return present() if callable(present) else None

    def missing_not_gone(self) -> bool:
        """Whether its device node is missing but not yet for long enough to report it unplugged."""
        return self.device_present() is False and not self.presence.gone


@dataclass
class QueuedTicket:
    """One routed ticket on its way: its job, the printers it may go to (home first), what failed so far."""

    job: PrintJob
    record: OrderRecord
    names: list[str]
    flagged: frozenset[str]
    copies: int
    done: asyncio.Future[bool]
    failures: dict[str, tuple[str, str]] = field(default_factory=dict)
