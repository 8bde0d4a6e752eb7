"""ESC/POS bytes for a laid-out kitchen ticket (docs/printers.md): pure code, no I/O.

The bytes come from python-escpos's ``Dummy`` printer with its automatic code page switching
disabled: one ``ESC t n`` after ``ESC @`` selects the page, and every line is passed through
``printable()`` first so nothing is ever sent as python-escpos's ``?``.
"""

from __future__ import annotations

import functools
import textwrap
import threading
from dataclasses import dataclass
from typing import Any, Literal, get_args

from drivers.printers import escpos_lib
from drivers.printers.encoding import CodePage, printable
from drivers.printers.errors import PrinterConfigError
from drivers.printers.layout import Line, Ticket

BuzzKind = Literal["none", "esc_b", "epson_fn48", "drawer_pin2", "drawer_pin5", "bel"]
BUZZ_KINDS: tuple[BuzzKind, ...] = get_args(BuzzKind)

_SELECT_CODE_PAGE = b"\x1bt"
# Epson ESC ( A fn 48 ("Beep the buzzer" in Epson's ESC/POS reference): the sound type n is model-specific;
# 49 is taken as the first audible type, 48 being the "does not beep" value (unverified on hardware). c = 3 beeps
# with t = 10 (a 1 s cycle) follows the example in Epson's reference: noticeable in a loud kitchen, over in 3 s.
_EPSON_BEEP = b"\x1b(A\x04\x00\x30" + bytes((49, 3, 10))
_BEL = b"\x07"
_QR_EC_M = 1  # python-escpos QR_ECLEVEL_M


def resolve_buzzer(setting: bool | str, profile: str) -> BuzzKind:
    """Return the alert command for a printer's ``buzzer`` setting.

    ``True`` means Epson's ESC ( A beep for ``TM-`` profiles and the generic ``ESC B`` elsewhere;
    ``False`` means none. Raises ``PrinterConfigError`` for an unknown name.
    """
    if setting is True:
        return "epson_fn48" if profile.startswith("TM-") else "esc_b"
    if setting is False:
        return "none"
    for kind in BUZZ_KINDS:
        if setting == kind:
            return kind
    msg = f"unknown buzzer {setting!r}; use true, false or one of: {', '.join(BUZZ_KINDS)}"
    raise PrinterConfigError(msg)


def render_escpos(ticket: Ticket, *, profile: str, code_page: CodePage, buzzer: BuzzKind) -> bytes:
    """Return the ESC/POS bytes for ``ticket`` on a printer with ``profile`` forced to ``code_page``.

    ``ESC @``, the buzzer, one ``ESC t``, then each line with its styles set before and reset after;
    inverse lines are padded to a full-width bar, and a line that grew past the paper in
    transliteration is wrapped. Ends with the profile's cut (feed only without a cutter) when
    ``ticket.cut``. Raises ``PrinterConfigError`` for an unknown profile.
    """
    renderer = _renderer(profile, code_page)
    with renderer.lock:
        printer = renderer.printer
        printer.clear()
        printer.hw("INIT")
        _buzz(printer, buzzer)
        printer._raw(_SELECT_CODE_PAGE + bytes((code_page.number,)))
        for line in ticket.lines:
            _line(printer, line, ticket.columns, code_page.codec)
        if ticket.qr:
            _qr(printer, ticket.qr, profile)
        if ticket.cut:
            # A partial cut leaves the ticket hanging on the printer instead of dropping into the pass;
            # python-escpos falls back to a full cut, or only feeds when the profile has no cutter.
            printer.cut(mode="PART")
        data: bytes = printer.output
        printer.clear()
    return data


@dataclass(frozen=True)
class _Renderer:
    """A python-escpos Dummy (and its profile) reused for every ticket of one printer."""

    printer: Any
    lock: threading.Lock


@functools.lru_cache(maxsize=64)
def _renderer(profile: str, code_page: CodePage) -> _Renderer:
    return _Renderer(escpos_lib.new_dummy(profile, code_page.name, code_page.number), threading.Lock())


def _buzz(printer: Any, kind: BuzzKind) -> None:
    if kind == "esc_b":
        printer.buzzer(3, 2)
    elif kind == "epson_fn48":
        printer._raw(_EPSON_BEEP)
    elif kind == "drawer_pin2":
        printer.cashdraw(2)
    elif kind == "drawer_pin5":
        printer.cashdraw(5)
    elif kind == "bel":
        printer._raw(_BEL)


def qr_method(profile: str) -> str | None:
    """Return how a QR code prints on ``profile``: ``native`` (GS ( k), ``image`` (GS v 0 raster) or None."""
    if escpos_lib.profile_has(profile, "qrCode"):
        return "native"
    if escpos_lib.profile_has(profile, "bitImageRaster"):
        return "image"
    return None


def _qr(printer: Any, data: str, profile: str) -> None:
    """Print ``data`` as a centred QR code, natively where the profile can, else as a raster image."""
    method = qr_method(profile)
    if method is None:
        return
    printer.set(align="center")
    # Error correction M survives a grease spot; a module of 6 dots (native) or 6 px (image) scans from a phone.
    if method == "native":
        printer.qr(data, ec=_QR_EC_M, size=6, native=True)
        printer.text("\n")
    else:
        printer.qr(data, ec=_QR_EC_M, size=6, native=False, center=False)
    printer.set(align="left")


def printed_pieces(line: Line, columns: int, codec: str | None) -> list[str]:
    """Return the rows ``line`` prints as: printable in ``codec``, wrapped to its width, inverse padded to a bar."""
    width = line.width(columns)
    pieces = [
        piece
        for para in line.text.splitlines() or [""]
        for piece in _fit(para if codec is None else printable(para, codec), width)
    ]
    return [_bar(piece, width, line.align) for piece in pieces] if line.inverse else pieces


def _line(printer: Any, line: Line, columns: int, codec: str) -> None:
    styled = line.large or line.bold or line.inverse or line.align != "left"
    for piece in printed_pieces(line, columns, codec):
        if styled:
            # One set() call per line: ESC ! (size) goes before ESC E, so it cannot clear the bold bit.
            printer.set(
                double_width=line.double or None,
                double_height=line.large or None,
                bold=line.bold or None,
                invert=line.inverse or None,
                align=None if line.align == "left" else line.align,
            )
        printer.text(piece + "\n")
        if styled:
            printer.set(
                normal_textsize=line.large or None,
                bold=False if line.bold else None,
                invert=False if line.inverse else None,
                align=None if line.align == "left" else "left",
            )


def _fit(text: str, width: int) -> list[str]:
    """Wrap ``text`` to ``width`` under a hanging indent; layout already fits, so this only catches expansion."""
    if len(text) <= width:
        return [text]
    body = text.lstrip(" ")
    indent = text[: len(text) - len(body)]
    rest = indent + "  "
    if len(rest) >= width // 2:
        indent = rest = ""
    return textwrap.wrap(body, width, initial_indent=indent, subsequent_indent=rest, break_on_hyphens=False) or [""]


def _bar(text: str, width: int, align: str) -> str:
    """Pad ``text`` with spaces to ``width`` as aligned, so the reversed bar spans the paper (a left indent stays)."""
    text = text.rstrip(" ") if align == "left" else text.strip(" ")
    room = max(width - len(text), 0)
    if align == "center":
        return " " * (room // 2) + text + " " * (room - room // 2)
    if align == "right":
        return " " * room + text
    return text + " " * room
