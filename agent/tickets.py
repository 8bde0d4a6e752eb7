"""From an order (or a test page) to the bytes one printer gets: layout, code page, ESC/POS or text.

The glue between the pure layout and renderers in ``drivers/printers`` and the printer settings; the
print worker, ``print-test``, ``ticket render`` and the demo all go through here, so a preview shows
exactly what a printer is sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from agent.config import PrinterSettings
from agent.models import Order
from drivers.printers.encoding import CodePage, choose_code_page
from drivers.printers.escpos_render import render_escpos, resolve_buzzer
from drivers.printers.layout import Line, Ticket, TicketKind, layout_ticket, render_text

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


def order_ticket(
    order: Order,
    *,
    kind: str,
    columns: int,
    tz: ZoneInfo,
    received_at: datetime,
    currency: str,
    reprint_no: int = 0,
    part: tuple[int, int] | None = None,
    items: Sequence[int] | None = None,
    in_doubt: bool = False,
    flagged_skus: frozenset[str] = frozenset(),
) -> Ticket:
    """Lay out an order's ticket of ``kind`` for one printer; ``flagged_skus`` are marked sold out in the POS."""
    return layout_ticket(
        order,
        kind=TicketKind(kind),
        columns=columns,
        tz=tz,
        received_at=received_at,
        reprint_no=reprint_no,
        currency=currency,
        page=part if part is not None and part[1] > 1 else None,
        items=items,
        in_doubt=in_doubt,
        flagged_skus=flagged_skus,
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
        *_wrapped(SAMPLE_TEXT, columns),
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
