"""Kitchen ticket layout (SPEC §9): an order in, lines that fit the paper out; pure code, no I/O.

``layout_ticket`` decides what a cook reads and in which size; ``render_text`` turns the result into
plain text for the ``file`` transport and previews. The ESC/POS renderer consumes the same ``Ticket``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal
from zoneinfo import ZoneInfo

from agent.models import FulfillmentType, Item, Modifier, Order, PaymentStatus
from agent.money import currency_exponent

Align = Literal["left", "center", "right"]

MIN_COLUMNS = 20
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_SYMBOLS = {"GBP": "£", "EUR": "€"}
_FULFILMENT = {
    FulfillmentType.PICKUP: "PICKUP",
    FulfillmentType.DELIVERY: "DELIVERY",
    FulfillmentType.DINE_IN: "DINE IN",
}
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
    TicketKind.MODIFIED: "MODIFIED - REPLACES EARLIER TICKET",
    TicketKind.CANCELLED: "CANCELLED - DO NOT MAKE",
    TicketKind.TEST: "TEST PRINT - DO NOT MAKE",
}


@dataclass(frozen=True)
class Line:
    """One printed line; ``double`` is double width and height, so it holds half the columns."""

    text: str
    double: bool = False
    bold: bool = False
    inverse: bool = False
    align: Align = "left"


@dataclass(frozen=True)
class Ticket:
    """A laid-out ticket: every line fits ``columns`` (half of it when double), then a cut."""

    lines: tuple[Line, ...]
    columns: int
    cut: bool = True


def layout_ticket(
    order: Order,
    *,
    kind: TicketKind,
    columns: int,
    tz: ZoneInfo,
    received_at: datetime,
    reprint_no: int = 0,
    currency: str = "GBP",
    flagged_skus: frozenset[str] = frozenset(),
    page: tuple[int, int] | None = None,
    items: Sequence[int] | None = None,
    in_doubt: bool = False,
) -> Ticket:
    """Lay out the kitchen ticket for ``order`` in SPEC §9 order; times are shown in ``tz``.

    ``currency`` is the venue's; the order's own payment currency wins when they differ, since the
    amounts are in it. ``items`` (indexes) limits the ticket to one printer's share under kitchen
    routing; ``in_doubt`` marks a copy printed again after a crash as a possible duplicate. Raises
    ``ValueError`` for a naive ``received_at``, too few columns, a bad page or an unknown item index.
    """
    if columns < MIN_COLUMNS:
        msg = f"columns must be at least {MIN_COLUMNS}, not {columns}"
        raise ValueError(msg)
    if page is not None and not 1 <= page[0] <= page[1]:
        msg = f"page must be (n, total) with 1 <= n <= total, not {page}"
        raise ValueError(msg)
    lay = _Layout(columns)
    rule = Line("-" * columns)

    banner = f"REPRINT {reprint_no}" if kind is TicketKind.REPRINT else _BANNERS[kind]
    lay.add(banner, inverse=True, bold=True, align="center")
    if in_doubt:
        lay.add("REPRINT - MAY BE A DUPLICATE", inverse=True, bold=True, align="center")
    if page is not None:
        lay.add(f"{page[0]} of {page[1]}", bold=True, align="right")
    lay.add(f"ONLINE / {order.source.upper()}", bold=True, align="center")
    code = order.with_display_code().display_code or ""
    lay.add(code, double=True, bold=True, align="center")
    lay.lines.append(rule)

    fulfillment = order.fulfillment
    lay.add(_FULFILMENT[fulfillment.type], double=True, bold=True)
    when = "ASAP" if order.requested_at is None else f"FOR {_day_time(_local(order.requested_at, tz))}"
    lay.add(when, bold=True)
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

    if items is not None and any(not 0 <= i < len(order.items) for i in items):
        msg = f"item indexes {list(items)} do not all exist in an order of {len(order.items)} items"
        raise ValueError(msg)
    shown = order.items if items is None else [order.items[i] for i in sorted(set(items))]
    courses = sorted({item.course for item in shown}, key=lambda c: (c is None, c or 0))
    for course in courses:
        if len(courses) > 1:
            lay.add(f"-- COURSE {course} --" if course is not None else "-- NO COURSE --", bold=True)
        for item in shown:
            if item.course == course:
                lay.lines.extend(_item_lines(item, columns, flagged_skus))
    lay.lines.append(rule)

    if order.notes:
        lay.add(f"ORDER NOTE: {order.notes}", bold=True, rest=_INDENT)
        lay.lines.append(rule)
    if order.payment.status is PaymentStatus.PAID:
        lay.add("PAID", double=True, bold=True)
    else:
        lay.add("NOT PAID", double=True, bold=True, inverse=True)
    shown_currency = order.payment.currency or currency
    lay.add(f"Total: {format_money(order.total, shown_currency)}", bold=True)
    lay.add(f"Received {_time_day(_local(received_at, tz))}")
    lay.add(f"Order {order.id}")
    return Ticket(lines=tuple(lay.lines), columns=columns, cut=True)


def render_text(ticket: Ticket) -> str:
    """Return the ticket as plain text, each line at most ``ticket.columns`` characters, ending in a newline.

    Double lines are upper case, runs of inverse lines are framed by rows of ``*``, and a cut is a
    row of dashes then ``--- cut ---``. A line too long for the paper is wrapped here, never cut.
    """
    columns = ticket.columns
    frame = "*" * columns
    out: list[str] = []
    framed = False
    for line in ticket.lines:
        if line.inverse != framed:
            out.append(frame)
            framed = line.inverse
        shown = line.text.upper() if line.double else line.text
        if len(shown) <= columns and len(shown.splitlines()) <= 1:
            pieces = [shown]
        else:
            indent = shown[: len(shown) - len(shown.lstrip(" "))]
            pieces = _wrap(shown, columns, first=indent, rest=indent) or [""]
        out.extend(_aligned(piece, line.align, columns) for piece in pieces)
    if framed:
        out.append(frame)
    if ticket.cut:
        out.extend(("-" * columns, "--- cut ---"))
    return "\n".join(out) + "\n"


def format_money(amount: int, currency: str) -> str:
    """Return ``amount`` minor units as ``£18.60``, ``€18.60`` or ``USD 18.60``."""
    exponent = currency_exponent(currency)
    units, minor = divmod(amount, 10**exponent)
    number = f"{units:,}.{minor:0{exponent}d}" if exponent else f"{units:,}"
    symbol = _SYMBOLS.get(currency)
    return f"{symbol}{number}" if symbol else f"{currency} {number}"


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
    ) -> None:
        """Append ``text`` wrapped with ``first``/``rest`` prefixes; blank text adds nothing."""
        self.lines.extend(_paragraph(text, self.columns, first, rest, double, bold, inverse, align))


def _paragraph(
    text: str,
    columns: int,
    first: str = "",
    rest: str = "",
    double: bool = False,
    bold: bool = False,
    inverse: bool = False,
    align: Align = "left",
) -> list[Line]:
    width = columns // 2 if double else columns
    return [
        Line(piece, double=double, bold=bold, inverse=inverse, align=align)
        for piece in _wrap(text, width, first=first, rest=rest, double=double)
    ]


def _item_lines(item: Item, columns: int, flagged: frozenset[str]) -> Iterator[Line]:
    head = f"{item.quantity} x "
    yield from _paragraph(f"{head}{item.name}", columns, rest=" " * len(head), double=True, bold=True)
    for modifier in item.modifiers:
        yield from _modifier_lines(modifier, 1, columns, flagged)
    if item.notes:
        yield from _paragraph(f"NOTE: {item.notes}", columns, first=_INDENT, rest=_INDENT + " " * 6, bold=True)
    if item.allergens:
        label = "!! ALLERGENS: "
        text = label + ", ".join(item.allergens)
        yield from _paragraph(text, columns, first=_INDENT, rest=_INDENT + " " * len(label), bold=True)
    if item.sku is not None and item.sku in flagged:
        yield from _paragraph("!! SOLD OUT IN POS", columns, first=_INDENT, bold=True)


def _modifier_lines(modifier: Modifier, depth: int, columns: int, flagged: frozenset[str]) -> Iterator[Line]:
    indent = _INDENT * depth
    text = f"{modifier.quantity} x {modifier.name}" if modifier.quantity > 1 else modifier.name
    yield from _paragraph(text, columns, first=f"{indent}+ ", rest=f"{indent}  ")
    if modifier.sku is not None and modifier.sku in flagged:
        yield from _paragraph("!! SOLD OUT IN POS", columns, first=f"{indent}  ", bold=True)
    for sub in modifier.modifiers:
        yield from _modifier_lines(sub, depth + 1, columns, flagged)


def _wrap(text: str, width: int, *, first: str = "", rest: str = "", double: bool = False) -> list[str]:
    """Word-wrap ``text`` into lines of at most ``width`` cells, breaking a word only when it is too long.

    Runs of whitespace and line breaks between words become single spaces or line breaks; no other
    character is dropped. For a double line a cell holds the upper-case form of a character (``ß`` is
    two), so the upper-cased line still fits.
    """

    def cells(s: str) -> int:
        return sum(len(ch.upper()) for ch in s) if double else len(s)

    # A prefix that leaves no room would stop progress; drop it rather than the text.
    if cells(first) >= width:
        first = ""
    if cells(rest) >= width:
        rest = ""
    lines: list[str] = []
    prefix = first
    for para in text.splitlines():
        current = ""
        for word in para.split():
            if current and cells(prefix + current + " " + word) <= width:
                current += " " + word
                continue
            if current:
                lines.append(prefix + current)
                prefix, current = rest, ""
            while cells(prefix + word) > width:
                room = width - cells(prefix)
                cut = 0
                used = 0
                while cut < len(word) and used + cells(word[cut]) <= room:
                    used += cells(word[cut])
                    cut += 1
                if cut == 0 and prefix:
                    # One wide character (an upper-cased ligature) does not fit beside the indent.
                    prefix = ""
                    continue
                cut = max(cut, 1)
                lines.append(prefix + word[:cut])
                prefix, word = rest, word[cut:]
            current = word
        if current:
            lines.append(prefix + current)
            prefix = rest
    return lines


def _aligned(text: str, align: Align, columns: int) -> str:
    text = text.rstrip()
    if align == "center":
        return " " * ((columns - len(text)) // 2) + text
    if align == "right":
        return " " * (columns - len(text)) + text
    return text


def _local(moment: datetime, tz: ZoneInfo) -> datetime:
    if moment.utcoffset() is None:
        msg = f"a ticket time must carry an offset, got naive {moment.isoformat()}"
        raise ValueError(msg)
    return moment.astimezone(tz)


def _day_time(moment: datetime) -> str:
    return f"{moment:%H:%M} {_DAYS[moment.weekday()]} {moment.day} {_MONTHS[moment.month - 1]}"


def _time_day(moment: datetime) -> str:
    return f"{moment:%H:%M} {moment.day} {_MONTHS[moment.month - 1]}"
