"""ESC/POS kitchen tickets (docs/printers.md): render real orders, decode the bytes, check what the cook reads."""

from __future__ import annotations

import copy
import os
import shutil
import statistics
import subprocess
import sys
import timeit
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.domain.models import Order
from drivers.printers import escpos_lib
from drivers.printers.decode import Decoded, decode_escpos
from drivers.printers.encoding import CodePage, choose_code_page
from drivers.printers.errors import EscPosDecodeError, PrinterConfigError
from drivers.printers.escpos_render import BUZZ_KINDS, BuzzKind, render_escpos, resolve_buzzer
from drivers.printers.layout import Line, Ticket, TicketKind, layout_ticket

LONDON = ZoneInfo("Europe/London")
RECEIVED = datetime(2026, 11, 23, 12, 0, 5, tzinfo=UTC)
GOLDEN = Path(__file__).parent / "golden"
ROOT = Path(__file__).parent.parent
CP858 = CodePage("CP858", 19, "cp858")
CP437 = CodePage("CP437", 0, "cp437")

_ORDER: dict[str, Any] = {
    "schema_version": 1,
    "id": "ord_01HX3Z9K7Q2M9XA",
    "source": "web",
    "display_code": "K7Q2M9XA",
    "created_at": "2026-11-23T12:00:05+00:00",
    "requested_at": None,
    "fulfillment": {"type": "pickup"},
    "customer": {"name": "Sam Reed", "phone": "+447700900123"},
    "items": [
        {
            "name": "Margherita",
            "sku": "PZ-MARG",
            "quantity": 2,
            "unit_price": 950,
            "course": 1,
            "notes": "well done",
            "allergens": ["gluten", "milk"],
            "modifiers": [{"name": "Extra basil", "quantity": 1, "unit_price": 50}],
        }
    ],
    "charges": {"delivery_fee": 0, "service_charge": 0, "tip": 100},
    "payment": {"status": "paid", "method": "card", "amount": 2100, "currency": "GBP"},
    "total": 2100,
    "notes": "No cutlery",
}


def make_order(
    *, name: str = "Sam Reed", item: str = "Margherita", notes: str | None = "No cutlery", **rest: Any
) -> Order:
    """A valid pickup order for 2 x ``item`` (£21.00 with the tip), with customer ``name`` and ``notes``."""
    data = copy.deepcopy(_ORDER)
    data["customer"]["name"] = name
    data["items"][0]["name"] = item
    data["notes"] = notes
    data.update(rest)
    return Order.model_validate(data)


def lay(order: Order, columns: int = 48, kind: TicketKind = TicketKind.FALLBACK) -> Ticket:
    """Lay the order out as the venue would."""
    return layout_ticket(order, kind=kind, columns=columns, tz=LONDON, received_at=RECEIVED)


def render(ticket: Ticket, profile: str = "TM-T88V", code_page: CodePage = CP858, buzzer: BuzzKind = "none") -> bytes:
    """Render with the usual settings unless overridden."""
    return render_escpos(ticket, profile=profile, code_page=code_page, buzzer=buzzer)


def round_trip(ticket: Ticket, **kwargs: Any) -> Decoded:
    """Render then decode, checking every line fits the paper on the way."""
    decoded = decode_escpos(render(ticket, **kwargs))
    for line in decoded.lines:
        assert len(line.text) <= (ticket.columns // 2 if line.double else ticket.columns), line
    return decoded


def only(decoded: Decoded, text: str) -> Any:
    """The one decoded line whose stripped text is ``text``."""
    matches = [line for line in decoded.lines if line.text.strip() == text]
    assert len(matches) == 1, (text, decoded.text)
    return matches[0]


# Round trips of real orders


@pytest.mark.parametrize("columns", [32, 42, 48])
def test_round_trip_keeps_the_layout_and_its_styles(columns: int) -> None:
    """Banner double size inverse across the paper, code and items double and bold, one cut, one ESC t 19."""
    ticket = lay(make_order(), columns)
    decoded = round_trip(ticket)
    banner = decoded.lines[0]
    assert banner.text.strip() == ("FALLBACK" if columns == 32 else "FALLBACK - NOT IN POS")
    assert banner.inverse and banner.bold and banner.double and banner.align == "center"
    assert len(banner.text) == columns // 2
    code = only(decoded, "K7Q2M9XA")
    assert code.double and code.bold and code.align == "center" and not code.inverse
    item = only(decoded, "2 x Margherita")
    assert item.double and item.bold and item.align == "left"
    assert decoded.cuts == 1
    assert decoded.code_pages == [19]
    assert decoded.buzzes == []
    assert decoded.status_queries == []
    assert [line.text.strip() for line in decoded.lines] == [line.text.strip() for line in ticket.lines]


def test_styles_never_leak_into_the_next_line() -> None:
    """Each line after a styled one is decoded with exactly its own styles."""
    ticket = lay(make_order(payment={"status": "pending", "amount": 2100, "currency": "GBP"}), 42)
    decoded = round_trip(ticket)
    assert len(decoded.lines) == len(ticket.lines)
    for laid, printed in zip(ticket.lines, decoded.lines, strict=True):
        assert (printed.width, printed.height, printed.bold, printed.inverse, printed.align) == (
            2 if laid.double else 1,
            2 if laid.large else 1,
            laid.bold,
            laid.inverse,
            laid.align,
        ), laid
    not_paid = only(decoded, "NOT PAID")
    assert not_paid.inverse and (not_paid.width, not_paid.height) == (1, 2) and len(not_paid.text) == 42


def test_bytes_start_with_init_and_one_forced_code_page() -> None:
    """ESC @ first, then ESC t n; python-escpos never switches pages by itself (no ESC t 0 before text)."""
    data = render(lay(make_order(name="Søren Ærø", notes="Café £ €")))
    assert data.startswith(b"\x1b@\x1bt\x13")
    assert data.count(b"\x1bt") == 1


def test_tm_u220_prints_cp437_and_only_feeds_at_the_end() -> None:
    """The TM-U220 profile has no cutter and only CP437: ESC t 0, a feed, no GS V."""
    ticket = lay(make_order(name="Søren"), 42)
    code_page = choose_code_page("TM-U220", None)
    data = render(ticket, profile="TM-U220", code_page=code_page)
    decoded = decode_escpos(data)
    assert decoded.code_pages == [0]
    assert decoded.cuts == 0
    assert b"\x1dV" not in data
    assert data.endswith(b"\x1bd\x06")
    assert "Soren" in decoded.text


def test_tm_u220b_gets_a_partial_cut() -> None:
    """The TM-U220B has a partial cutter only: the ticket ends with a feed then GS V 1."""
    data = render(lay(make_order(), 42), profile="TM-U220B", code_page=CP437)
    assert data.endswith(b"\x1bd\x06\x1dV\x01")
    assert decode_escpos(data).cuts == 1


def test_a_ticket_without_cut_is_not_cut() -> None:
    """Ticket.cut false sends neither a cut nor the feed before it."""
    ticket = Ticket(lines=(Line("hello"),), columns=42, cut=False)
    data = render(ticket)
    assert decode_escpos(data).cuts == 0
    assert data.endswith(b"hello\n")


# Buzzer


@pytest.mark.parametrize(
    ("kind", "command"),
    [
        ("none", b""),
        ("esc_b", b"\x1bB\x03\x02"),
        ("epson_fn48", b"\x1b(A\x04\x00\x30\x31\x03\x0a"),
        ("drawer_pin2", b"\x1bp\x00\x32\x32"),
        ("drawer_pin5", b"\x1bp\x01\x32\x32"),
        ("bel", b"\x07"),
    ],
)
def test_each_buzzer_sends_its_command_right_after_init(kind: BuzzKind, command: bytes) -> None:
    """The alert goes right after ESC @ and before the code page, and the decoder names it."""
    data = render(lay(make_order()), buzzer=kind)
    assert data.startswith(b"\x1b@" + command + b"\x1bt\x13")
    assert decode_escpos(data).buzzes == ([] if kind == "none" else [kind])


@pytest.mark.parametrize(
    ("setting", "profile", "expected"),
    [
        (True, "TM-T88V", "epson_fn48"),
        (True, "TM-U220", "epson_fn48"),
        (True, "default", "esc_b"),
        (True, "POS-5890", "esc_b"),
        (False, "TM-T88V", "none"),
        ("bel", "TM-T88V", "bel"),
        ("drawer_pin5", "default", "drawer_pin5"),
    ],
)
def test_buzzer_setting_resolves_per_profile(setting: bool | str, profile: str, expected: str) -> None:
    """True means Epson's beep on TM- profiles and ESC B elsewhere; a name is taken as is."""
    assert resolve_buzzer(setting, profile) == expected


def test_unknown_buzzer_is_a_config_error() -> None:
    """A misspelt buzzer names the valid ones."""
    with pytest.raises(PrinterConfigError, match="epson_fn48"):
        resolve_buzzer("loud", "default")
    assert set(BUZZ_KINDS) == {"none", "esc_b", "epson_fn48", "drawer_pin2", "drawer_pin5", "bel"}


# Languages, symbols, emoji, long words


@pytest.mark.parametrize(
    ("name", "item", "notes", "cp858", "cp437"),
    [
        ("Françoise Lefèvre", "Crème brûlée", "Très bien", "Françoise Lefèvre", "Françoise Lefèvre"),
        ("Søren Ærø", "Smørrebrød", "Åse", "Søren Ærø", "Soren Æro"),
        ("Jürgen Großmann", "Käsespätzle", "Straße", "Jürgen Großmann", "Jürgen Großmann"),
        ("Łukasz Żółć", "Pierogi ruskie", "Świętość ćma ńa", "Lukasz Zólc", "Lukasz Zólc"),
        ("Şükrü Ağaoğlu", "İskender", "ılık", "Sükrü Agaoglu", "Sükrü Agaoglu"),
        ("Sam £ €", "Margherita", "pay £5 or €6", "Sam £ €", "Sam £ EUR"),
    ],
)
@pytest.mark.parametrize("columns", [32, 42, 48])
def test_names_print_readably_in_any_language(
    name: str, item: str, notes: str, cp858: str, cp437: str, columns: int
) -> None:
    """Accented names print as the page has them and transliterate where it has not; never a ?."""
    ticket = lay(make_order(name=name, item=item, notes=notes), columns)
    for code_page, expected in ((CP858, cp858), (CP437, cp437)):
        decoded = round_trip(ticket, code_page=code_page)
        assert expected in decoded.text
        assert "?" not in decoded.text


def test_emoji_in_notes_print_as_names() -> None:
    """An emoji note prints its name; the line still fits after growing."""
    decoded = round_trip(lay(make_order(notes="Birthday!! 🎂🎂 candles please 🕯️ 👍🏽"), 32))
    text = " ".join(line.text.strip() for line in decoded.lines)
    assert "(birthday cake)" in text
    assert "(thumbs up sign)" in text
    assert "?" not in decoded.text


def test_unrepresentable_text_is_one_question_mark_per_run() -> None:
    """A note in Japanese prints one ? per run of characters the page cannot show."""
    decoded = round_trip(lay(make_order(notes="お箸 please 寿司"), 42))
    assert "ORDER NOTE: ? please ?" in decoded.text


def test_very_long_words_are_broken_to_fit() -> None:
    """A 200-character word is broken across lines that each fit, double size included."""
    word = "Donaudampfschifffahrtsgesellschaftskapitänsmütze" * 4
    decoded = round_trip(lay(make_order(item=word, notes=word, name=word[:60]), 32))
    printed = "".join(line.text.strip() for line in decoded.lines)
    assert printed.count(word) == 2


def test_lines_grown_by_transliteration_are_wrapped_not_cut() -> None:
    """A line that fits in Unicode but grows past the paper once emoji become names is wrapped."""
    ticket = Ticket(lines=(Line("  🎂🍕🎂🍕🎂🍕", bold=True), Line("€" * 40, double=True)), columns=32, cut=False)
    decoded = round_trip(ticket, code_page=CP437)
    assert [line.text for line in decoded.lines[:2]] == [
        "  (birthday cake)(slice of",
        "    pizza)(birthday cake)(slice",
    ]
    assert all(line.bold for line in decoded.lines[:4])
    assert "".join(line.text.strip() for line in decoded.lines if line.double) == "EUR" * 40


_TEXT = st.text(
    st.one_of(st.characters(codec="utf-8"), st.sampled_from([*"éøßłğİı€£🎂👍🏽寿", "\u200d", "\ufe0f"])),
    max_size=60,
)
_LINES = st.lists(
    st.builds(
        Line,
        text=_TEXT,
        double=st.booleans(),
        bold=st.booleans(),
        inverse=st.booleans(),
        align=st.sampled_from(["left", "center", "right"]),
        tall=st.booleans(),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=_LINES,
    columns=st.sampled_from([32, 42, 48]),
    code_page=st.sampled_from([CP858, CP437, CodePage("CP1251", 46, "cp1251")]),
)
def test_any_text_renders_decodes_and_fits(lines: list[Line], columns: int, code_page: CodePage) -> None:
    """Whatever the text, the bytes decode without error, one page is selected and every line fits."""
    decoded = round_trip(Ticket(lines=tuple(lines), columns=columns), code_page=code_page)
    assert decoded.code_pages == [code_page.number]
    assert decoded.cuts == 1
    assert len(decoded.lines) >= len(lines)


def test_render_is_fast() -> None:
    """A 20-line ticket renders in well under 5 ms (measured about 0.25 ms)."""
    ticket = lay(make_order(name="Søren Ærø", notes="🎂 please"), 42)
    ticket = Ticket(lines=(ticket.lines * 2)[:20], columns=42)
    render(ticket)
    runs = [timeit.timeit(lambda: render(ticket), number=50) / 50 for _ in range(5)]
    assert statistics.median(runs) < 0.005


def test_golden_pickup_fallback_42_bytes() -> None:
    """A ticket's bytes match the golden dump exactly (one escaped line per printed line)."""
    order = make_order(name="Søren Łukasz", notes="Birthday 🎂, ring at the side door", item="Crème brûlée")
    data = render(lay(order, 42), buzzer="epson_fn48")
    dump = "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x5C else "\n" if b == 0x0A else f"\\x{b:02x}" for b in data)
    path = GOLDEN / "pickup_fallback_42.escpos.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(dump, encoding="ascii")
    assert dump == path.read_text(encoding="ascii")


# The decoder


def test_decoder_reads_sizes_status_queries_and_pages() -> None:
    """GS ! sizes, DLE EOT queries, ESC t pages and text through the page are all reported."""
    data = b"\x10\x04\x01\x10\x04\x04\x1bt\x13\x1d!\x11\xd5 \x9c\n\x1d!\x00\x1ba\x02ok\n"
    decoded = decode_escpos(data)
    assert decoded.status_queries == [1, 4]
    assert decoded.code_pages == [19]
    assert (decoded.lines[0].text, decoded.lines[0].width, decoded.lines[0].height) == ("€ £", 2, 2)
    assert decoded.lines[0].double
    assert (decoded.lines[1].text, decoded.lines[1].align, decoded.lines[1].double) == ("ok", "right", False)
    assert decoded.text == "€ £\nok"


@pytest.mark.parametrize(
    ("data", "offset"),
    [
        (b"abc\n\x1bz\x01", 4),
        (b"ok\x1d\x99", 2),
        (b"\x1b@\x00", 2),
        (b"x\x10\x05\x01", 1),
        (b"\x1bt\x06", 0),
    ],
)
def test_decoder_rejects_unknown_commands_with_the_offset(data: bytes, offset: int) -> None:
    """An unknown command, control byte or page is an error naming where it starts."""
    with pytest.raises(EscPosDecodeError, match=rf"at byte {offset}\b"):
        decode_escpos(data)


@pytest.mark.parametrize("data", [b"\x1b", b"\x1b!", b"\x1b(A\x04\x00\x30\x31", b"\x1dV\x41", b"\x10\x04"])
def test_decoder_rejects_commands_cut_short(data: bytes) -> None:
    """A command missing its parameters at the end of the data is an error, not silently dropped."""
    with pytest.raises(EscPosDecodeError, match="cut short"):
        decode_escpos(data)


# python-escpos import side effects


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_loading_escpos_leaves_no_temporary_directory_and_no_log_handler(tmp_path: Path) -> None:
    """python-escpos 3.1 leaves a /tmp/tmpXXXX per import and a root handler; load_escpos leaves neither."""
    tmp, cache = tmp_path / "tmp", tmp_path / "cache"
    tmp.mkdir()
    env = {"TMPDIR": str(tmp), "CACHE_DIRECTORY": str(cache)}
    bare = _python("import escpos.printer", env)
    assert bare.returncode == 0, bare.stderr
    assert [p.name for p in tmp.iterdir() if p.name.startswith("tmp")], "the check cannot see the leak"
    for leaked in tmp.iterdir():
        shutil.rmtree(leaked)
    code = (
        "import logging, os\n"
        "from drivers.printers.escpos_lib import load_escpos\n"
        "assert load_escpos().Dummy\n"
        "assert not logging.getLogger().handlers, logging.getLogger().handlers\n"
        "assert 'ESCPOS_CAPABILITIES_PICKLE_DIR' not in os.environ\n"
    )
    result = _python(code, env)
    assert result.returncode == 0, result.stderr
    assert list(tmp.iterdir()) == []
    assert any(p.name.endswith(".capabilities.pickle") for p in cache.iterdir())


def test_rendering_modules_do_not_import_escpos_until_used() -> None:
    """Importing the renderer, decoder, encoding and PNG modules costs nothing: escpos loads on first use."""
    code = (
        "import sys\n"
        "import drivers.printers.escpos_render, drivers.printers.decode, drivers.printers.png\n"
        "assert not any(m == 'escpos' or m.startswith('escpos.') for m in sys.modules)\n"
    )
    result = _python(code, {})
    assert result.returncode == 0, result.stderr


def test_unknown_profile_lists_the_known_ones() -> None:
    """A misspelt profile is a config error naming the profiles python-escpos knows."""
    with pytest.raises(PrinterConfigError, match=r"unknown printer profile 'TM-T88X'; known: .*TM-T88V.*TM-U220"):
        escpos_lib.check_profile("TM-T88X")
    with pytest.raises(PrinterConfigError):
        render(Ticket(lines=(Line("x"),), columns=42), profile="TM-T88X")


def test_profile_facts() -> None:
    """Profiles report their code pages by ESC t number and whether they can cut."""
    assert escpos_lib.profile_code_pages("TM-U220") == {"CP437": 0}
    assert escpos_lib.profile_code_pages("default")["CP858"] == 19
    assert "TM-U220B" in escpos_lib.profile_names()
    assert not escpos_lib.profile_can_cut("TM-U220")
    assert escpos_lib.profile_can_cut("TM-U220B")
    assert escpos_lib.profile_can_cut("TM-T88V")
