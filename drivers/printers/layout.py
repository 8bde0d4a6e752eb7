"""Kitchen ticket layout (SPEC §9): an order in, lines that fit the paper out; pure code, no I/O.

``layout_ticket`` decides what a cook reads and in which size; ``render_text`` turns the result into
plain text for the ``file`` transport and previews. The ESC/POS renderer consumes the same ``Ticket``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal
from zoneinfo import ZoneInfo

from agent.domain.models import FulfillmentType, Item, Modifier, Order, PaymentStatus
from agent.domain.money import currency_exponent
from drivers.printers.encoding import spell_emoji

Align = Literal["left", "center", "right"]

MIN_COLUMNS = 20
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_SYMBOLS = {"GBP": "£", "EUR": "€"}
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
# How a channel reads on paper; any other source prints as ONLINE / <SOURCE> with _ and - as spaces.
_SOURCES = {
    "web": "ONLINE / WEB",
    "app": "ONLINE / APP",
    "kiosk": "KIOSK",
    "phone": "PHONE ORDER",
    "chat": "ONLINE / CHAT",
    "uber_eats": "UBER EATS",
    "ubereats": "UBER EATS",
    "deliveroo": "DELIVEROO",
    "just_eat": "JUST EAT",
    "justeat": "JUST EAT",
    "doordash": "DOORDASH",
}
# Allergy words looked for in item notes, the order note and the instructions (SPEC §9); a venue adds its own.
ALLERGY_WORDS = (
    "allergy",
    "allergic",
    "nut",
    "peanut",
    "gluten",
    "coeliac",
    "celiac",
    "dairy",
    "lactose",
    "egg",
    "shellfish",
    "sesame",
    "soy",
    "soya",
)


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
    """Lay out the kitchen ticket for ``order`` in SPEC §9 order; times are shown in ``tz``.

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
    allergy = _allergy_pattern(allergy_words)

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


def source_words(order: Order) -> str:
    """Return where the order came from in words: ``ONLINE / WEB``, ``QR AT TABLE 7``, ``KIOSK``."""
    source = order.source.casefold()
    if source in ("qr_table", "qr"):
        table = order.fulfillment.table
        return f"QR AT TABLE {table}" if table else "QR AT TABLE"
    named = _SOURCES.get(source)
    if named:
        return named
    return "ONLINE / " + " ".join(re.split(r"[_-]+", order.source.upper())).strip()


def allergy_sentences(text: str, pattern: re.Pattern[str]) -> list[str]:
    """Return the sentences of ``text`` that name an allergy word (whole words, any case, plurals too)."""
    if not text or not pattern.search(text):
        return []
    pieces = re.split(r"(?<=[.!?;])\s+|\n+", text)
    return [piece.strip() for piece in pieces if piece.strip() and pattern.search(piece)]


@functools.lru_cache(maxsize=32)
def _allergy_regex(words: tuple[str, ...]) -> re.Pattern[str]:
    forms = []
    for word in sorted({w.strip().casefold() for w in words if w.strip()}, key=len, reverse=True):
        stem = r"\s+".join(re.escape(part) for part in word.split())
        if word.endswith("y") and " " not in word:
            forms.append(stem[:-1] + "(?:y|ies)")
        else:
            forms.append(stem + "(?:s|es)?")
    return re.compile(r"(?<!\w)(?:" + "|".join(forms) + r")(?!\w)", re.IGNORECASE)


def _allergy_pattern(extra: Sequence[str]) -> re.Pattern[str]:
    return _allergy_regex((*ALLERGY_WORDS, *extra))


def render_text(ticket: Ticket) -> str:
    """Return the ticket as plain text, each line at most ``ticket.columns`` characters, ending in a newline.

    Large (double or tall) lines are upper case, runs of inverse lines are framed by rows of ``*``, a
    QR code is ``[QR: data]`` and a cut is a row of dashes then ``--- cut ---``. A line too long for
    the paper is wrapped here, never cut.
    """
    columns = ticket.columns
    frame = "*" * columns
    out: list[str] = []
    framed = False
    for line in ticket.lines:
        if line.inverse != framed:
            out.append(frame)
            framed = line.inverse
        shown = line.text.upper() if line.large else line.text
        if len(shown) <= columns and len(shown.splitlines()) <= 1:
            pieces = [shown]
        else:
            indent = shown[: len(shown) - len(shown.lstrip(" "))]
            pieces = _wrap(shown, columns, first=indent, rest=indent) or [""]
        out.extend(_aligned(piece, line.align, columns) for piece in pieces)
    if framed:
        out.append(frame)
    if ticket.qr:
        out.extend(_wrap(f"[QR: {ticket.qr}]", columns))
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
        tall: bool = False,
    ) -> None:
        """Append ``text`` wrapped with ``first``/``rest`` prefixes; blank text adds nothing."""
        self.lines.extend(_paragraph(text, self.columns, first, rest, double, bold, inverse, align, tall))

    def banner(self, text: str) -> None:
        """Append a warning in double width and height in an inverse bar, split at `` - `` when too long."""
        width = self.columns // 2
        parts = [text] if _cells(text, double=True) <= width else [p for p in text.split(" - ") if p.strip()]
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
        for piece in _wrap(spell_emoji(text), width, first=first, rest=rest, double=double or tall)
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


def _cells(s: str, *, double: bool) -> int:
    """Return the characters ``s`` takes on paper; a large line is upper-cased, so ``ß`` takes two."""
    return sum(len(ch.upper()) for ch in s) if double else len(s)


def _wrap(text: str, width: int, *, first: str = "", rest: str = "", double: bool = False) -> list[str]:
    """Word-wrap ``text`` into lines of at most ``width`` cells, breaking a word only when it is too long.

    ``first`` prefixes the first line and ``rest`` every further one (a hanging indent). Runs of
    whitespace and line breaks between words become single spaces or line breaks; no other character
    is dropped. A word is split only when it is longer than the room beside the prefix; the prefix of
    the first line always stays with the first word. For a large line a cell holds the upper-case
    form of a character (``ß`` is two), so the upper-cased line still fits.
    """

    def cells(s: str) -> int:
        return _cells(s, double=double)

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


def _day(moment: datetime) -> str:
    return f"{_DAYS[moment.weekday()]} {moment.day} {_MONTHS[moment.month - 1]}"


def _time_day(moment: datetime) -> str:
    return f"{moment:%H:%M} {moment.day} {_MONTHS[moment.month - 1]}"
