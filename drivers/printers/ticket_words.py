"""The words a kitchen ticket prints for an order: its source, money, and the allergy sentences of its notes.

Pure functions over the order; ``layout`` places them on the paper.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from agent.domain.models import Order
from agent.domain.money import currency_exponent

_SYMBOLS = {"GBP": "£", "EUR": "€"}
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
# Allergy words looked for in item notes, the order note and the instructions; a venue adds its own (``allergy_words``).
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


def allergy_pattern(extra: Sequence[str]) -> re.Pattern[str]:
    """Return the pattern matching the built-in allergy words and ``extra`` (whole words, any case, plurals)."""
    return _allergy_regex((*ALLERGY_WORDS, *extra))


def format_money(amount: int, currency: str) -> str:
    """Return ``amount`` minor units as ``£18.60``, ``€18.60`` or ``USD 18.60``."""
    exponent = currency_exponent(currency)
    units, minor = divmod(amount, 10**exponent)
    number = f"{units:,}.{minor:0{exponent}d}" if exponent else f"{units:,}"
    symbol = _SYMBOLS.get(currency)
    return f"{symbol}{number}" if symbol else f"{currency} {number}"
