"""A small ESC/POS decoder for tests and tools: bytes in, printed lines with their styles out; pure code.

It knows the commands this project emits and a few common ones, and refuses anything else with
``EscPosDecodeError`` naming the byte offset, so a test fails loudly on a stray command rather
than passing over it. Text is decoded through the code page selected with ``ESC t`` (page 0 after
``ESC @``), numbered as in python-escpos's default profile.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from drivers.printers import escpos_lib
from drivers.printers.encoding import CODECS
from drivers.printers.errors import EscPosDecodeError

ESC, GS, DLE, LF, CR, BEL = 0x1B, 0x1D, 0x10, 0x0A, 0x0D, 0x07
_ALIGNS = {0: "left", 1: "center", 2: "right", 48: "left", 49: "center", 50: "right"}
# ESC commands that take a fixed number of parameter bytes and change nothing the decoder reports.
_ESC_SKIP = {ord("-"): 1, ord("M"): 1, ord("d"): 1, ord("J"): 1, ord("{"): 1, ord("2"): 0, ord("3"): 1}
_CUTS_WITH_FEED = frozenset({65, 66, 97, 98, 103, 104})
_CUTS = frozenset({0, 1, 48, 49})


@dataclass(frozen=True)
class DecodedLine:
    """One printed line and the styles in force when its first character arrived."""

    text: str
    bold: bool = False
    inverse: bool = False
    align: str = "left"
    width: int = 1
    height: int = 1

    @property
    def double(self) -> bool:
        """Whether the line is printed larger than normal both across and down."""
        return self.width > 1 and self.height > 1


@dataclass
class Decoded:
    """What a printer would do with the bytes: lines, cuts, alerts, status queries, code page switches."""

    lines: list[DecodedLine] = field(default_factory=list)
    cuts: int = 0
    buzzes: list[str] = field(default_factory=list)
    status_queries: list[int] = field(default_factory=list)
    code_pages: list[int] = field(default_factory=list)
    qr_codes: list[str] = field(default_factory=list)
    images: list[tuple[int, int]] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The printed lines joined by newlines."""
        return "\n".join(line.text for line in self.lines)


@dataclass
class _State:
    bold: bool = False
    inverse: bool = False
    align: str = "left"
    width: int = 1
    height: int = 1
    codec: str = "cp437"

    def snapshot(self, text: str) -> DecodedLine:
        return DecodedLine(text, self.bold, self.inverse, self.align, self.width, self.height)


def decode_escpos(data: bytes) -> Decoded:
    """Decode ``data``; raises ``EscPosDecodeError`` at the first unknown or cut-short command."""
    out = Decoded()
    state = _State(codec=_codec(0, 0))
    pending = bytearray()
    line_style: DecodedLine | None = None
    i = 0

    def need(count: int, at: int) -> bytes:
        if i + count > len(data):
            msg = f"command at byte {at} is cut short: needs {count} more bytes, {len(data) - i} left"
            raise EscPosDecodeError(msg)
        return data[i : i + count]

    def flush() -> None:
        nonlocal line_style
        style = line_style or state.snapshot("")
        text = bytes(pending).decode(state.codec, errors="replace")
        out.lines.append(DecodedLine(text, style.bold, style.inverse, style.align, style.width, style.height))
        pending.clear()
        line_style = None

    while i < len(data):
        at = i
        byte = data[i]
        i += 1
        if byte == LF:
            flush()
        elif byte == CR:
            continue
        elif byte == BEL:
            out.buzzes.append("bel")
        elif byte >= 0x20 and byte != 0x7F:
            if line_style is None:
                line_style = state.snapshot("")
            pending.append(byte)
        elif byte == ESC:
            cmd = need(1, at)[0]
            i += 1
            if cmd == ord("@"):
                state = _State(codec=_codec(0, at))
            elif cmd == ord("!"):
                n = need(1, at)[0]
                i += 1
                state.bold = bool(n & 0x08)
                state.height = 2 if n & 0x10 else 1
                state.width = 2 if n & 0x20 else 1
            elif cmd == ord("E"):
                state.bold = bool(need(1, at)[0] & 1)
                i += 1
            elif cmd == ord("a"):
                n = need(1, at)[0]
                i += 1
                if n not in _ALIGNS:
                    raise EscPosDecodeError(f"ESC a {n} at byte {at}: not an alignment")
                state.align = _ALIGNS[n]
            elif cmd == ord("t"):
                n = need(1, at)[0]
                i += 1
                out.code_pages.append(n)
                state.codec = _codec(n, at)
            elif cmd == ord("B"):
                need(2, at)
                i += 2
                out.buzzes.append("esc_b")
            elif cmd == ord("p"):
                m = need(3, at)[0]
                i += 3
                out.buzzes.append("drawer_pin5" if m in (1, 49) else "drawer_pin2")
            elif cmd == ord("("):
                head = need(3, at)
                i += 3
                size = head[1] + 256 * head[2]
                body = need(size, at)
                i += size
                if head[0] == ord("A") and size == 4 and body[0] == 48:
                    out.buzzes.append("epson_fn48")
            elif cmd in (ord("i"), ord("m")):
                out.cuts += 1
            elif cmd in _ESC_SKIP:
                if cmd == ord("d") and pending:
                    flush()
                need(_ESC_SKIP[cmd], at)
                i += _ESC_SKIP[cmd]
            else:
                raise EscPosDecodeError(f"unknown command ESC 0x{cmd:02x} at byte {at}")
        elif byte == GS:
            cmd = need(1, at)[0]
            i += 1
            if cmd == ord("!"):
                n = need(1, at)[0]
                i += 1
                state.width, state.height = (n >> 4) + 1, (n & 0x0F) + 1
            elif cmd == ord("B"):
                state.inverse = bool(need(1, at)[0] & 1)
                i += 1
            elif cmd == ord("("):
                head = need(3, at)
                i += 3
                size = head[1] + 256 * head[2]
                body = need(size, at)
                i += size
                # GS ( k cn=49 fn=80: store QR code data (m = 48, then the data); fn=81 prints what was stored.
                if head[0] == ord("k") and size >= 3 and body[0] == 49 and body[1] == 80:
                    out.qr_codes.append(bytes(body[3:]).decode("utf-8", errors="replace"))
            elif cmd == ord("v"):
                head = need(6, at)
                i += 6
                if head[0] != ord("0"):
                    raise EscPosDecodeError(f"GS v {head[0]} at byte {at}: not a raster image")
                width_bytes, height = head[2] + 256 * head[3], head[4] + 256 * head[5]
                need(width_bytes * height, at)
                i += width_bytes * height
                if pending:
                    flush()
                out.images.append((width_bytes * 8, height))
            elif cmd == ord("V"):
                m = need(1, at)[0]
                i += 1
                if m in _CUTS_WITH_FEED:
                    need(1, at)
                    i += 1
                elif m not in _CUTS:
                    raise EscPosDecodeError(f"GS V {m} at byte {at}: not a cut")
                if pending:
                    flush()
                out.cuts += 1
            else:
                raise EscPosDecodeError(f"unknown command GS 0x{cmd:02x} at byte {at}")
        elif byte == DLE:
            cmd = need(1, at)[0]
            i += 1
            if cmd != 0x04:
                raise EscPosDecodeError(f"unknown command DLE 0x{cmd:02x} at byte {at}")
            out.status_queries.append(need(1, at)[0])
            i += 1
        else:
            raise EscPosDecodeError(f"unknown control byte 0x{byte:02x} at byte {at}")
    if pending:
        flush()
    return out


def _codec(number: int, at: int) -> str:
    codec = _codecs_by_number().get(number)
    if codec is None:
        raise EscPosDecodeError(f"ESC t {number} at byte {at}: no code page this decoder can read")
    return codec


@functools.cache
def _codecs_by_number() -> dict[int, str]:
    pages = escpos_lib.profile_code_pages("default")
    return {number: CODECS[name] for name, number in pages.items() if name in CODECS}
