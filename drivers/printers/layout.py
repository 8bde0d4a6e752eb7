"""Kitchen ticket layout (docs/printers.md): an order in, lines that fit the paper out; pure code, no I/O.

``layout_ticket`` decides what a cook reads and in which size; ``ticket_text.render_text`` turns the result
into plain text for the ``file`` transport and previews, and the ESC/POS and PNG renderers consume the same
``Ticket``. The words it prints for an order (source, money, allergies) come from ``ticket_words``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal
from zoneinfo import ZoneInfo

from agent.domain.models import FulfillmentType, Item, Modifier, Order, PaymentStatus
from drivers.printers.encoding import spell_emoji
from drivers.printers.ticket_text import paper_cells, wrap
from drivers.printers.ticket_words import allergy_pattern, allergy_sentences, format_money, source_words

Align = Literal["left", "center", "right"]

MIN_COLUMNS = 20
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_INDENT = "  "


class TicketKind(StrEnum):
    """Why a ticket is printed; decides the banner at the top."""

    FALLBACK = "fallback"
    REPRINT = "reprint"
    MODIFIED = "modified"
    CANCELLED = "cancelled"
    TEST = "test"


_BANNERS = {
    TicketKind.FALLBACK: "FALLBACK - NOT IN POS",
    TicketKind.REPRINT: "REPRINT",
    TicketKind.MODIFIED: "MODIFIED",
    TicketKind.CANCELLED: "CANCELLED - DO NOT MAKE",
    TicketKind.TEST: "TEST PRINT - DO NOT MAKE",
}
DUPLICATE_BANNER = "REPRINT - MAY BE A DUPLICATE"
MODIFIED_NOTE = "Replaces the earlier ticket for this order"


@dataclass(frozen=True)
class Line:
    """One printed line: ``double`` is double width and height (half the columns), ``tall`` double height only."""

    text: str
    double: bool = False
    bold: bool = False
    inverse: bool = False
    align: Align = "left"
    tall: bool = False

    def width(self, columns: int) -> int:
        """Return how many characters fit on this line on paper ``columns`` wide."""
        return columns // 2 if self.double else columns

    @property
    def large(self) -> bool:
        """Whether the line prints larger than normal (double or tall)."""
        return self.double or self.tall


@dataclass(frozen=True)
class Ticket:
    """A laid-out ticket: every line fits ``columns`` (half of it when double), an optional QR code, a cut."""

    lines: tuple[Line, ...]
    columns: int
    cut: bool = True
    qr: str | None = None


def layout_ticket(
    order: Order,
    *,
    kind: TicketKind,
    columns: int,
    tz: ZoneInfo,
    received_at: datetime,
    currency: str = "GBP",
    flagged_skus: frozenset[str] = frozenset(),
    page: tuple[int, int] | None = None,
    items: Sequence[int] | None = None,
    in_doubt: bool = False,
    copy: int = 1,
    late_minutes: int | None = None,
    backup_for: str | None = None,
    allergy_words: Sequence[str] = (),
    qr: str | None = None,
) -> Ticket:
    """Lay out the kitchen ticket for ``order`` top to bottom as docs/printers.md lists it; times are shown in ``tz``.

    Every warning is a banner (double width and height in an inverse bar): the kind, ``in_doubt`` (a
    copy printed again after a crash or an unconfirmed print), ``late_minutes`` (LATE - 38 MIN),
    ``backup_for`` (a station whose ticket this printer prints) and ``copy`` from 2 on. ``currency``
    is the venue's; the order's own payment currency wins when they differ, since the amounts are in
    it. ``items`` (indexes) limits the ticket to one printer's share under kitchen routing; allergy
    words (built in plus ``allergy_words``) in notes are flagged; ``qr`` is the data of a QR code
    printed at the end. Raises ``ValueError`` for a naive ``received_at``, too few columns, a bad
    page or an unknown item index.
    """
    if columns < MIN_COLUMNS:
        msg = f"columns must be at least {MIN_COLUMNS}, not {columns}"
        raise ValueError(msg)
    if page is not None and not 1 <= page[0] <= page[1]:
        msg = f"page must be (n, total) with 1 <= n <= total, not {page}"
        raise ValueError(msg)
    if items is not None and any(not 0 <= i < len(order.items) for i in items):
        msg = f"item indexes {list(items)} do not all exist in an order of {len(order.items)} items"
        raise ValueError(msg)
    lay = _Layout(columns)
    rule = Line("-" * columns)
    allergy = allergy_pattern(allergy_words)

    for banner in banners(kind, in_doubt=in_doubt, late_minutes=late_minutes, backup_for=backup_for, copy=copy):
        lay.banner(banner)
    if kind is TicketKind.MODIFIED:
        lay.add(MODIFIED_NOTE, bold=True, align="center")
    if page is not None:
        lay.add(f"{page[0]} of {page[1]}", bold=True, align="right")
    lay.add(source_words(order), bold=True, align="center")
    code = order.with_display_code().display_code or ""
    lay.add(code, double=True, bold=True, align="center")
    lay.lines.append(rule)

    fulfillment = order.fulfillment
    lay.add(FULFILMENT_WORDS[fulfillment.type], double=True, bold=True)
    if order.requested_at is None:
        lay.add("ASAP", double=True, bold=True)
    else:
        wanted = _local(order.requested_at, tz)
        lay.add(f"FOR {wanted:%H:%M}", double=True, bold=True)
        lay.add(_day(wanted), bold=True)
    if fulfillment.type is FulfillmentType.DINE_IN and fulfillment.table:
        lay.add(f"TABLE {fulfillment.table}", double=True, bold=True, rest="      ")
    if fulfillment.covers is not None:
        lay.add(f"Covers: {fulfillment.covers}")
    if fulfillment.type is FulfillmentType.DELIVERY and fulfillment.address is not None:
        address = fulfillment.address
        city = " ".join(part for part in (address.city, address.postcode) if part)
        for part in (address.line1, address.line2, city):
            if part:
                lay.add(part)
    if fulfillment.instructions:
        lay.add(f"Instructions: {fulfillment.instructions}", rest=_INDENT)
    customer = order.customer
    if customer is not None:
        if customer.name:
            lay.add(customer.name, bold=True)
        if customer.phone:
            lay.add(customer.phone)
    lay.lines.append(rule)

    # Allergies written in the order note or the instructions come before any item is made.
    order_allergies = [
        sentence
        for text in (fulfillment.instructions, order.notes)
        for sentence in allergy_sentences(text or "", allergy)
    ]
    for sentence in dict.fromkeys(order_allergies):
        lay.add(f"{ALLERGY_LABEL}{sentence}", rest=_INDENT, bold=True, inverse=True)
    if order_allergies:
        lay.lines.append(rule)

    shown = order.items if items is None else [order.items[i] for i in sorted(set(items))]
    courses = sorted({item.course for item in shown}, key=lambda c: (c is None, c or 0))
    for course in courses:
        if len(courses) > 1:
            lay.add(f"-- COURSE {course} --" if course is not None else "-- NO COURSE --", bold=True)
        for item in shown:
            if item.course == course:
                lay.lines.extend(_item_lines(item, columns, flagged_skus, allergy))
    lay.lines.append(rule)

    if order.notes:
        lay.add(f"ORDER NOTE: {order.notes}", bold=True, rest=_INDENT)
        lay.lines.append(rule)
    if order.payment.status is PaymentStatus.PAID:
        lay.add("PAID", tall=True, bold=True)
    else:
        lay.add("NOT PAID", tall=True, bold=True, inverse=True)
    shown_currency = order.payment.currency or currency
    lay.add(f"Total: {format_money(order.total, shown_currency)}", bold=True)
    lay.add(f"Received {_time_day(_local(received_at, tz))}")
    lay.add(f"Order {order.id}")
    return Ticket(lines=tuple(lay.lines), columns=columns, cut=True, qr=qr)


FULFILMENT_WORDS = {
    FulfillmentType.PICKUP: "PICKUP",
    FulfillmentType.DELIVERY: "DELIVERY",
    FulfillmentType.DINE_IN: "DINE IN",
}
ALLERGY_LABEL = "!! ALLERGY: "
ALLERGENS_LABEL = "!! ALLERGENS: "


def banners(
    kind: TicketKind,
    *,
    in_doubt: bool = False,
    late_minutes: int | None = None,
    backup_for: str | None = None,
    copy: int = 1,
) -> list[str]:
    """Return a ticket's warnings in print order: its kind, a possible duplicate, LATE, BACKUP FOR, COPY n."""
    found = [_BANNERS[kind]]
    if in_doubt:
        found.append(DUPLICATE_BANNER)
    if late_minutes is not None and kind is not TicketKind.CANCELLED:
        found.append(f"LATE - {late_minutes} MIN")
    if backup_for:
        found.append(f"BACKUP FOR {backup_for.upper()}")
    # A modified or cancelled ticket is news, not a copy: only a ticket printed again says which copy it is.
    if copy > 1 and kind in (TicketKind.FALLBACK, TicketKind.REPRINT):
        found.append(f"COPY {copy}")
    return found


class _Layout:
    """Collects lines, wrapping each paragraph to the width its size allows."""

    def __init__(self, columns: int) -> None:
        self.columns = columns
        self.lines: list[Line] = []

    def add(
        self,
        text: str,
        *,
        first: str = "",
        rest: str = "",
        double: bool = False,
        bold: bool = False,
        inverse: bool = False,
        align: Align = "left",
        tall: bool = False,
    ) -> None:
        """Append ``text`` wrapped with ``first``/``rest`` prefixes; blank text adds nothing."""
        self.lines.extend(_paragraph(text, self.columns, first, rest, double, bold, inverse, align, tall))

    def banner(self, text: str) -> None:
        """Append a warning in double width and height in an inverse bar, split at `` - `` when too long."""
        width = self.columns // 2
        parts = [text] if paper_cells(text, double=True) <= width else [p for p in text.split(" - ") if p.strip()]
        for part in parts:
            self.add(part, double=True, bold=True, inverse=True, align="center")


def _paragraph(
    text: str,
    columns: int,
    first: str = "",
    rest: str = "",
    double: bool = False,
    bold: bool = False,
    inverse: bool = False,
    align: Align = "left",
    tall: bool = False,
) -> list[Line]:
    width = columns // 2 if double else columns
    return [
        Line(piece, double=double, bold=bold, inverse=inverse, align=align, tall=tall)
        for piece in wrap(spell_emoji(text), width, first=first, rest=rest, double=double or tall)
    ]


def _item_lines(item: Item, columns: int, flagged: frozenset[str], allergy: re.Pattern[str]) -> Iterator[Line]:
    head = f"{item.quantity} x "
    # The quantity is a prefix, not a word: it stays on the line of the name's first word, and the
    # name's further lines hang under the name, not under the quantity.
    yield from _paragraph(item.name, columns, first=head, rest=" " * len(head), double=True, bold=True)
    for modifier in item.modifiers:
        yield from _modifier_lines(modifier, 1, columns, flagged)
    if item.notes:
        yield from _paragraph(item.notes, columns, first=_INDENT + "NOTE: ", rest=_INDENT + " " * 6, bold=True)
        for sentence in allergy_sentences(item.notes, allergy):
            yield from _loud(sentence, columns, ALLERGY_LABEL)
    if item.allergens:
        text = ", ".join(item.allergens)
        yield from _loud(text, columns, ALLERGENS_LABEL)
    if item.sku is not None and item.sku in flagged:
        yield from _paragraph("!! SOLD OUT IN POS", columns, first=_INDENT, bold=True)


def _loud(text: str, columns: int, label: str) -> list[Line]:
    """An allergy flag or an item's allergens, equally loud: bold in a reversed bar, hanging under the label."""
    return _paragraph(text, columns, _INDENT + label, " " * (len(_INDENT) + len(label)), bold=True, inverse=True)


def _modifier_lines(modifier: Modifier, depth: int, columns: int, flagged: frozenset[str]) -> Iterator[Line]:
    indent = _INDENT * depth
    head = f"{indent}+ {modifier.quantity} x " if modifier.quantity > 1 else f"{indent}+ "
    yield from _paragraph(modifier.name, columns, first=head, rest=" " * len(head))
    if modifier.sku is not None and modifier.sku in flagged:
        yield from _paragraph("!! SOLD OUT IN POS", columns, first=f"{indent}  ", bold=True)
    for sub in modifier.modifiers:
        yield from _modifier_lines(sub, depth + 1, columns, flagged)


def _local(moment: datetime, tz: ZoneInfo) -> datetime:
    if moment.utcoffset() is None:
        msg = f"a ticket time must carry an offset, got naive {moment.isoformat()}"
        raise ValueError(msg)
    return moment.astimezone(tz)


def _day(moment: datetime) -> str:
    return f"{_DAYS[moment.weekday()]} {moment.day} {_MONTHS[moment.month - 1]}"


def _time_day(moment: datetime) -> str:
    return f"{moment:%H:%M} {moment.day} {_MONTHS[moment.month - 1]}"
