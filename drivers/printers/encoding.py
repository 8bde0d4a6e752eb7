"""Code pages for kitchen printers and text that always prints (docs/printers.md): pure code, no I/O.

A ticket is sent in one code page forced with ``ESC t n``; every character the page lacks degrades
to a readable stand-in (``ø`` → ``o``, ``€`` → ``EUR``, ``🎂`` → ``(birthday cake)``) and never to
an exception. The Unidecode package is GPL, so the transliteration tables are our own.
"""

# The transliteration tables hold look-alike letters (Cyrillic, Greek, typographic quotes) on purpose.
# ruff: noqa: RUF001

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from enum import Enum

from drivers.printers import escpos_lib
from drivers.printers.errors import PrinterConfigError

# python-escpos code page names → Python codecs; single-byte pages only, since ESC t selects a
# 256-character table (CP932 is double-byte; TCVN-3, CP851, CP853, RK1048 … have no Python codec).
CODECS: dict[str, str] = {
    "CP437": "cp437",
    "CP720": "cp720",
    "CP737": "cp737",
    "CP775": "cp775",
    "CP850": "cp850",
    "CP852": "cp852",
    "CP855": "cp855",
    "CP857": "cp857",
    "CP858": "cp858",
    "CP860": "cp860",
    "CP861": "cp861",
    "CP862": "cp862",
    "CP863": "cp863",
    "CP864": "cp864",
    "CP865": "cp865",
    "CP866": "cp866",
    "CP869": "cp869",
    "CP874": "cp874",
    "CP1125": "cp1125",
    "CP1250": "cp1250",
    "CP1251": "cp1251",
    "CP1252": "cp1252",
    "CP1253": "cp1253",
    "CP1254": "cp1254",
    "CP1255": "cp1255",
    "CP1256": "cp1256",
    "CP1257": "cp1257",
    "CP1258": "cp1258",
    "ISO_8859-1": "iso8859_1",
    "ISO_8859-2": "iso8859_2",
    "ISO_8859-3": "iso8859_3",
    "ISO_8859-4": "iso8859_4",
    "ISO_8859-5": "iso8859_5",
    "ISO_8859-6": "iso8859_6",
    "ISO_8859-7": "iso8859_7",
    "ISO_8859-8": "iso8859_8",
    "ISO_8859-9": "iso8859_9",
    "ISO_8859-15": "iso8859_15",
}
_PREFERRED = ("CP858", "CP850", "CP437")


@dataclass(frozen=True)
class CodePage:
    """A printer code page: python-escpos name, ``ESC t`` number and the Python codec that encodes it."""

    name: str
    number: int
    codec: str


def choose_code_page(profile: str, wanted: str | None) -> CodePage:
    """Return the code page to force on a printer with ``profile``.

    Without ``wanted``: CP858 (has €), else CP850, else CP437, else the profile's first usable page.
    A ``wanted`` page is used when the profile lists it or python-escpos's default table numbers it
    (a technician may know their unit has it). Raises ``PrinterConfigError`` naming the choices.
    """
    pages = {name: n for name, n in escpos_lib.profile_code_pages(profile).items() if name in CODECS}
    if wanted is None:
        for name in _PREFERRED:
            if name in pages:
                return CodePage(name, pages[name], CODECS[name])
        if not pages:
            msg = f"printer profile {profile!r} lists no code page this agent can encode; set code_page"
            raise PrinterConfigError(msg)
        name, number = min(pages.items(), key=lambda kv: kv[1])
        return CodePage(name, number, CODECS[name])
    known = {name: n for name, n in escpos_lib.profile_code_pages("default").items() if name in CODECS}
    name = _canonical(wanted, [*pages, *known])
    if name in pages:
        return CodePage(name, pages[name], CODECS[name])
    if name in known:
        return CodePage(name, known[name], CODECS[name])
    msg = (
        f"unknown code page {wanted!r} for printer profile {profile!r}; the profile lists: "
        f"{', '.join(pages) or 'none usable'}; other pages with a known number: "
        f"{', '.join(n for n in known if n not in pages)}"
    )
    raise PrinterConfigError(msg)


def _canonical(wanted: str, names: list[str]) -> str:
    """Match ``wanted`` to a python-escpos name ignoring case, ``-`` and ``_`` (``iso-8859-15``)."""
    key = re.sub(r"[-_]", "", wanted).upper()
    for name in names:
        if re.sub(r"[-_]", "", name).upper() == key:
            return name
    return wanted


# Printable stand-ins, used only for characters the page lacks; each must be plain ASCII.
# fmt: off
_LATIN = {
    "ø": "o", "Ø": "O", "ł": "l", "Ł": "L", "ß": "ss", "ẞ": "SS", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE",
    "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "Th", "ı": "i", "İ": "I", "ħ": "h", "Ħ": "H",
    "ŧ": "t", "Ŧ": "T", "ŋ": "ng", "Ŋ": "NG", "ĸ": "k", "ſ": "s",
    "€": "EUR", "£": "GBP", "₺": "TRY", "₽": "RUB", "₹": "INR", "₩": "KRW", "₪": "ILS", "¥": "JPY", "¢": "c",
    "‘": "'", "’": "'", "‚": "'", "‛": "'", "′": "'", "´": "'", "ʼ": "'", "ʹ": "'",
    "“": '"', "”": '"', "„": '"', "‟": '"', "″": '"', "«": "<<", "»": ">>", "‹": "<", "›": ">",
    "‐": "-", "‑": "-", "‒": "-", "–": "-", "—": "-", "―": "-", "−": "-",
    "…": "...", "\u00a0": " ", "×": "x", "±": "+/-", "÷": "/", "⁄": "/", "•": "*", "·": ".", "©": "(c)", "®": "(R)",
    "→": "->", "←": "<-", "¡": "!", "¿": "?",
}
_CYRILLIC_LOWER = {
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "yo", "ж": "zh", "з": "z", "и": "i",
    "й": "y", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o", "п": "p", "р": "r", "с": "s", "т": "t",
    "у": "u", "ф": "f", "х": "kh", "ц": "ts", "ч": "ch", "ш": "sh", "щ": "shch", "ъ": "", "ы": "y", "ь": "",
    "э": "e", "ю": "yu", "я": "ya", "і": "i", "ї": "yi", "є": "ye", "ґ": "g", "ў": "u", "ђ": "dj", "ј": "j",
    "љ": "lj", "њ": "nj", "ћ": "c", "џ": "dz", "ѕ": "dz",
}
_GREEK_LOWER = {
    "α": "a", "β": "v", "γ": "g", "δ": "d", "ε": "e", "ζ": "z", "η": "i", "θ": "th", "ι": "i", "κ": "k",
    "λ": "l", "μ": "m", "ν": "n", "ξ": "x", "ο": "o", "π": "p", "ρ": "r", "σ": "s", "ς": "s", "τ": "t",
    "υ": "y", "φ": "f", "χ": "ch", "ψ": "ps", "ω": "o",
}
# fmt: on
_TABLE: dict[str, str] = {
    **_LATIN,
    **{k.upper(): v.capitalize() for k, v in (_CYRILLIC_LOWER | _GREEK_LOWER).items() if k != "ς"},
    **_CYRILLIC_LOWER,
    **_GREEK_LOWER,
}
_REGIONAL_A = 0x1F1E6
_REGIONAL_Z = 0x1F1FF
# Skin tones, variation selectors, ZWJ, the keycap mark and tag characters only modify the emoji before them.
_EMOJI_PARTS = re.compile("[\U0001f3fb-\U0001f3ff\ufe00-\ufe0f\u200d\u20e3\U000e0020-\U000e007f\U000e0100-\U000e01ef]")
_EMOJI_RANGES = ((0x2300, 0x23FF), (0x2600, 0x27BF), (0x2B00, 0x2BFF), (0x1F000, 0x1FAFF))
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Latin letters without a decomposition (ƀ, Ɨ, ȼ …) are named after their base letter.
_LATIN_NAME = re.compile(r"LATIN (SMALL|CAPITAL) LETTER ([A-Z]{1,2})(?: WITH .*)?$")


class _Kind(Enum):
    TEXT = 1
    DROP = 2
    EMOJI = 3
    UNKNOWN = 4


_Piece = tuple[_Kind, str]


def printable(text: str, codec: str) -> str:
    """Return ``text`` with every character encodable in ``codec`` and no control character; never raises.

    Characters the page has are kept. Others become a transliteration (``ø`` → ``o``, ``€`` → ``EUR``),
    their NFKD base letters (``ş`` → ``s``), an emoji's lower-case name in brackets (one token per run
    of the same emoji) or, failing all that, one ``?`` per run. Control characters that are spaces
    become a space; the rest are dropped.
    """
    if text.isascii() and text.isprintable() and _ascii_safe(codec):
        return text
    if not _CONTROL.search(text) and _encodes_text(text, codec):
        return text
    text = unicodedata.normalize("NFC", text)
    out: list[str] = []
    last: _Piece = (_Kind.DROP, "")
    i = 0
    while i < len(text):
        ch = text[i]
        pieces: list[_Piece]
        if _is_regional(ch) and i + 1 < len(text) and _is_regional(text[i + 1]) and not _encodes(ch, codec):
            # Two regional indicators are a flag: 🇬🇧 → (flag GB).
            pair = "".join(chr(ord(c) - _REGIONAL_A + ord("A")) for c in text[i : i + 2])
            pieces = [(_Kind.EMOJI, f"(flag {pair})")]
            i += 2
        else:
            pieces = _resolve(ch, codec, decompose=True)
            i += 1
        for piece in pieces:
            kind = piece[0]
            if kind is _Kind.DROP or (kind in (_Kind.EMOJI, _Kind.UNKNOWN) and piece == last):
                continue
            out.append(piece[1])
            last = piece
    return "".join(out)


_ALWAYS_EMOJI_PART = re.compile("[\U0001f3fb-\U0001f3ff\ufe0f\u20e3\U000e0020-\U000e007f]")


def spell_emoji(text: str) -> str:
    """Return ``text`` with each emoji as its lower-case name in brackets (🍕 → ``(slice of pizza)``).

    The one rule for every output (ESC/POS, plain text, PNG), applied when a ticket is laid out so the
    name is wrapped like any other word and no font or printer ever shows an empty box. A flag is
    ``(flag GB)``; skin tones, variation selectors and the joiners inside a sequence are dropped; a run
    of the same emoji is named once. Everything else is left as it is.
    """
    if text.isascii():
        return text
    out: list[str] = []
    last: str | None = None
    i = 0
    while i < len(text):
        ch = text[i]
        token: str | None = None
        if _is_regional(ch) and i + 1 < len(text) and _is_regional(text[i + 1]):
            token = "(flag " + "".join(chr(ord(c) - _REGIONAL_A + ord("A")) for c in text[i : i + 2]) + ")"
            i += 2
        elif _ALWAYS_EMOJI_PART.match(ch) or (ch == "\u200d" and last is not None):
            i += 1
            continue
        elif _is_emoji(ch):
            token = f"({unicodedata.name(ch).lower()})"
            i += 1
        else:
            out.append(ch)
            last = None
            i += 1
            continue
        if token != last:
            out.append(token)
        last = token
    return "".join(out)


def _is_emoji(ch: str) -> bool:
    code = ord(ch)
    return bool(unicodedata.name(ch, "")) and any(lo <= code <= hi for lo, hi in _EMOJI_RANGES)


def _resolve(ch: str, codec: str, *, decompose: bool) -> list[_Piece]:
    """Return the printable pieces standing for one character."""
    category = unicodedata.category(ch)
    if category == "Cc":
        return [(_Kind.TEXT, " ")] if ch.isspace() else [(_Kind.DROP, "")]
    if _encodes(ch, codec):
        return [(_Kind.TEXT, ch)]
    mapped = _TABLE.get(ch)
    if mapped is not None and _encodes(mapped, codec):
        return [(_Kind.TEXT, mapped)]
    if ch.isspace():
        return [(_Kind.TEXT, " ")]
    if _EMOJI_PARTS.match(ch) or category in ("Mn", "Mc", "Me", "Cf"):
        return [(_Kind.DROP, "")]
    if decompose:
        base = unicodedata.normalize("NFKD", ch)
        if base != ch:
            return [piece for part in base for piece in _resolve(part, codec, decompose=False)]
    name = unicodedata.name(ch, "")
    latin = _LATIN_NAME.match(name)
    if latin:
        letters = latin[2].lower() if latin[1] == "SMALL" else latin[2].capitalize()
        return [(_Kind.TEXT, letters)]
    if name and (category in ("So", "Sk") or any(lo <= ord(ch) <= hi for lo, hi in _EMOJI_RANGES)):
        return [(_Kind.EMOJI, f"({name.lower()})")]
    return [(_Kind.UNKNOWN, "?")]


def _is_regional(ch: str) -> bool:
    return _REGIONAL_A <= ord(ch) <= _REGIONAL_Z


def _encodes_text(text: str, codec: str) -> bool:
    try:
        text.encode(codec)
    except UnicodeError:
        return False
    return True


@functools.lru_cache(maxsize=8192)
def _encodes(text: str, codec: str) -> bool:
    """Whether a character (or a short table entry) encodes in ``codec``; cached per pair."""
    return _encodes_text(text, codec)


@functools.cache
def _ascii_safe(codec: str) -> bool:
    """Whether every printable ASCII character encodes to itself (not so in CP864, where % is ٪)."""
    ascii_text = "".join(map(chr, range(0x20, 0x7F)))
    try:
        return ascii_text.encode(codec) == ascii_text.encode("ascii")
    except UnicodeError:
        return False
