"""From an order (or a test page) to the bytes one printer gets: layout, code page, ESC/POS or text.

The glue between the pure layout and renderers in ``drivers/printers`` and the printer settings; the
print worker, ``print-test``, ``ticket render`` and the demo all go through here, so a preview shows
exactly what a printer is sent.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from agent.domain.config import PrinterSettings, TicketSettings
from agent.domain.models import Modifier, Order
from agent.outbox.records import PrintJob
from drivers.printers.encoding import CodePage, choose_code_page, spell_emoji
from drivers.printers.escpos_render import render_escpos, resolve_buzzer
from drivers.printers.layout import Line, Ticket, TicketKind, layout_ticket
from drivers.printers.ticket_text import render_text

# A line that shows whether the code page is right: French, Nordic, German, Polish, Turkish, money, an emoji.
SAMPLE_TEXT = "Crème brûlée · Smørrebrød · Grüße · Żurek · Şiş köfte · £ € · 🍕"


@dataclass
class PrinterSetup:
    """A printer's settings with its resolved code page (looked up once: python-escpos is slow to load)."""

    settings: PrinterSettings
    _code_page: CodePage | None = field(default=None, repr=False)

    @property
    def code_page(self) -> CodePage:
        """Return the code page forced on this printer; raise ``PrinterConfigError`` if it cannot be used."""
        if self._code_page is None:
            self._code_page = choose_code_page(self.settings.profile, self.settings.code_page)
        return self._code_page

    def payload(self, ticket: Ticket) -> bytes:
        """Return the bytes this printer is sent for ``ticket``: UTF-8 text for a text file, else ESC/POS."""
        if self.settings.writes_text:
            return (render_text(ticket) + "\n").encode("utf-8")
        return render_escpos(
            ticket,
            profile=self.settings.profile,
            code_page=self.code_page,
            buzzer=resolve_buzzer(self.settings.buzzer, self.settings.profile),
        )


@dataclass(frozen=True)
class TicketFacts:
    """What one printed copy says beyond the order: why it prints, which copy, how late, for which station.

    Worked out once when the copy is sent and stored with its print job, so a preview of a printed job
    (``ticket render --job``, the demo's PNGs) shows exactly what came out of the printer.
    """

    kind: str
    copy: int = 1
    in_doubt: bool = False
    late_minutes: int | None = None
    backup_for: str | None = None
    part: tuple[int, int] | None = None
    items: tuple[int, ...] | None = None
    flagged_skus: tuple[str, ...] = ()
    printer: str | None = None
    columns: int | None = None

    def to_json(self) -> str:
        """Return the facts as compact JSON (the ``print_jobs.ticket`` column)."""
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> TicketFacts:
        """Rebuild facts stored by ``to_json``."""
        data = json.loads(text)
        part = data.get("part")
        items = data.get("items")
        return cls(
            kind=data["kind"],
            copy=int(data.get("copy", 1)),
            in_doubt=bool(data.get("in_doubt", False)),
            late_minutes=data.get("late_minutes"),
            backup_for=data.get("backup_for"),
            part=(int(part[0]), int(part[1])) if part else None,
            items=tuple(items) if items is not None else None,
            flagged_skus=tuple(data.get("flagged_skus", ())),
            printer=data.get("printer"),
            columns=data.get("columns"),
        )


def stored_facts(job: PrintJob) -> TicketFacts:
    """Return the facts a printed job's ticket carried (rebuilt from the job's own fields for older rows)."""
    if job.ticket:
        return TicketFacts.from_json(job.ticket)
    part = (job.part, job.parts) if job.part is not None and job.parts is not None else None
    return TicketFacts(kind=job.kind, in_doubt=job.in_doubt, part=part, items=job.items, printer=job.printer)


def ticket_skus(order: Order, items: Sequence[int] | None) -> list[str]:
    """Return every SKU on a ticket's share of ``order`` (item indexes, None for all), modifiers included."""

    def walk(modifiers: list[Modifier]) -> list[str]:
        return [s for m in modifiers for s in ([m.sku] if m.sku else []) + walk(m.modifiers)]

    chosen = order.items if items is None else [order.items[i] for i in items if 0 <= i < len(order.items)]
    return [s for item in chosen for s in ([item.sku] if item.sku else []) + walk(item.modifiers)]


def late_minutes(
    due_at: datetime, now: datetime, *, late_after_minutes: int, requested_at: datetime | None = None
) -> int | None:
    """Return how many whole minutes past due a ticket printed ``now`` is, or None if not late.

    Late means more than ``late_after_minutes`` after the order became due (its time to go to the POS), or after
    its requested time when that is earlier (a pre-order that reached the agent after its time).
    """
    if requested_at is not None:
        due_at = min(due_at, requested_at)
    overdue = now - due_at
    if overdue <= timedelta(minutes=late_after_minutes):
        return None
    return int(overdue.total_seconds() // 60)


def order_ticket(
    order: Order,
    facts: TicketFacts,
    *,
    columns: int,
    tz: ZoneInfo,
    received_at: datetime,
    currency: str,
    tickets: TicketSettings | None = None,
) -> Ticket:
    """Lay out ``order``'s ticket as ``facts`` describe it, for paper ``columns`` wide.

    ``tickets`` brings the venue's allergy words and QR code setting; without it there are neither.
    """
    part = facts.part if facts.part is not None and facts.part[1] > 1 else None
    return layout_ticket(
        order,
        kind=TicketKind(facts.kind),
        columns=columns,
        tz=tz,
        received_at=received_at,
        currency=currency,
        page=part,
        items=facts.items,
        in_doubt=facts.in_doubt,
        flagged_skus=frozenset(facts.flagged_skus),
        copy=facts.copy,
        late_minutes=facts.late_minutes,
        backup_for=facts.backup_for,
        allergy_words=tuple(tickets.allergy_words) if tickets else (),
        qr=tickets.qr_data(order.id) if tickets else None,
    )


def print_test_page(setup: PrinterSetup, *, now: datetime, tz: ZoneInfo) -> Ticket:
    """Return the ``print-test`` page: sizes, styles, the code page's characters, a ruler and a cut."""
    settings = setup.settings
    columns = settings.columns
    ruler = "".join(str(i % 10) for i in range(1, columns + 1))
    page = "UTF-8 text" if settings.writes_text else f"{setup.code_page.name} (ESC t {setup.code_page.number})"
    lines = [
        Line("TEST PRINT - DO NOT MAKE", inverse=True, bold=True, align="center"),
        Line(settings.name.upper()[: columns // 2], double=True, bold=True, align="center"),
        Line(f"Profile {settings.profile}, {columns} columns"[:columns]),
        Line(f"Code page {page}"[:columns]),
        Line(f"Buzzer {resolve_buzzer(settings.buzzer, settings.profile)}"[:columns]),
        Line("-" * columns),
        Line("Normal text"),
        Line("Bold text", bold=True),
        Line("DOUBLE SIZE", double=True),
        Line("Inverse", inverse=True),
        Line("centred", align="center"),
        Line("right", align="right"),
        Line(ruler),
        *_wrapped(spell_emoji(SAMPLE_TEXT), columns),
        Line("-" * columns),
        Line(f"Printed {now.astimezone(tz):%H:%M:%S %d %b %Y}"[:columns]),
        Line("If this ticket is cut below, the cutter works."[:columns]),
    ]
    return Ticket(lines=tuple(lines), columns=columns, cut=True)


def _wrapped(text: str, columns: int) -> list[Line]:
    words, lines, current = text.split(), [], ""
    for word in words:
        if current and len(current) + 1 + len(word) > columns:
            lines.append(Line(current))
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        lines.append(Line(current))
    return lines
