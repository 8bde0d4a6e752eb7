"""Code page choice and printable text for kitchen printers (readable, never an exception)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.printers.encoding import CODECS, CodePage, choose_code_page, printable
from drivers.printers.errors import PrinterConfigError

# Code page choice


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        ("default", CodePage("CP858", 19, "cp858")),
        ("TM-T88V", CodePage("CP858", 19, "cp858")),
        ("TM-U220", CodePage("CP437", 0, "cp437")),
        ("TM-U220B", CodePage("CP437", 0, "cp437")),
    ],
)
def test_default_code_page_prefers_cp858(profile: str, expected: CodePage) -> None:
    """Without a setting the page is CP858 (it has €) where the profile lists it, else CP437."""
    assert choose_code_page(profile, None) == expected


def test_a_page_the_profile_does_not_list_is_used_with_the_default_tables_number() -> None:
    """The TM-U220 profile lists only CP437, but a technician may force CP858: ESC t 19."""
    assert choose_code_page("TM-U220", "CP858") == CodePage("CP858", 19, "cp858")


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        ("cp858", CodePage("CP858", 19, "cp858")),
        ("iso-8859-15", CodePage("ISO_8859-15", 40, "iso8859_15")),
        ("ISO_8859-15", CodePage("ISO_8859-15", 40, "iso8859_15")),
        ("CP1252", CodePage("CP1252", 16, "cp1252")),
        ("CP866", CodePage("CP866", 17, "cp866")),
    ],
)
def test_wanted_code_page_is_matched_loosely(wanted: str, expected: CodePage) -> None:
    """Names are matched ignoring case, dashes and underscores, and map to a Python codec."""
    assert choose_code_page("default", wanted) == expected


def test_unknown_code_page_is_refused_naming_the_choices() -> None:
    """A page nobody numbers is a config error that lists what the profile has."""
    with pytest.raises(PrinterConfigError, match=r"'CP999'.*profile lists: CP437.*CP858"):
        choose_code_page("TM-U220", "CP999")


@pytest.mark.parametrize("wanted", ["CP932", "CP851", "TCVN-3-1"])
def test_page_python_cannot_encode_is_refused(wanted: str) -> None:
    """Pages without a single-byte Python codec (double-byte CP932, Greek CP851, TCVN-3) are refused."""
    with pytest.raises(PrinterConfigError, match="unknown code page"):
        choose_code_page("default", wanted)


def test_profile_without_any_usable_page_is_refused() -> None:
    """The AF-240 lists only a vendor page Python has no codec for; the technician must set one."""
    with pytest.raises(PrinterConfigError, match="AF-240"):
        choose_code_page("AF-240", None)


def test_unknown_profile_is_refused() -> None:
    """Choosing a page for a profile python-escpos does not know is a config error."""
    with pytest.raises(PrinterConfigError, match="unknown printer profile 'TM-X1'"):
        choose_code_page("TM-X1", None)


def test_every_codec_is_single_byte_and_known_to_python() -> None:
    """Each mapped codec exists and encodes a character in one byte, as ESC t pages do."""
    for codec in CODECS.values():
        assert len("A".encode(codec)) == 1


# Characters the page has are kept


@pytest.mark.parametrize(
    ("text", "codec"),
    [
        ("Café crème brûlée", "cp858"),
        ("Søren Ærø Åse", "cp858"),
        ("Straße Müller", "cp437"),
        ("£12.50 and €3", "cp858"),
        ("Москва", "cp1251"),
        ("Şükrü ğ ı İ", "cp857"),
        ("Łódź żółć", "cp852"),
        ("plain ascii 100% ok", "cp437"),
    ],
)
def test_characters_the_page_has_are_kept(text: str, codec: str) -> None:
    """Nothing is transliterated when the page can print it."""
    assert printable(text, codec) == text


# Fallbacks for characters the page lacks


@pytest.mark.parametrize(
    ("text", "codec", "expected"),
    [
        ("ø Ø", "cp437", "o O"),
        ("€5", "cp437", "EUR5"),
        ("£5", "cp1251", "GBP5"),
        ("£5", "cp437", "£5"),
        ("ł Ł", "cp858", "l L"),
        ("ß", "cp1251", "ss"),
        ("æ Æ œ Œ", "cp1251", "ae AE oe OE"),
        ("đ Đ ð Ð þ Þ", "cp437", "d D d D th Th"),
        ("ı İ", "cp858", "i I"),
        ("‘quoted’ “twice” „low“", "cp437", '\'quoted\' "twice" "low"'),
        ("a–b—c", "cp437", "a-b-c"),
        ("wait…", "cp437", "wait..."),
        ("2\u00a0×\u00a03", "cp1251", "2\u00a0x\u00a03"),
        ("é ş ğ ż ś ć ń", "cp1251", "e s g z s c n"),
        ("Αθήνα", "cp858", "Athina"),
        ("Щука борщ", "cp858", "Shchuka borshch"),
        ("ﬃ ½", "cp1251", "ffi 1/2"),
    ],
)
def test_missing_characters_are_transliterated(text: str, codec: str, expected: str) -> None:
    """Characters the page lacks become a readable stand-in: table, then base letter."""
    assert printable(text, codec) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("🎂", "(birthday cake)"),
        ("Happy birthday 🎂🎂🎂!", "Happy birthday (birthday cake)!"),
        ("👍🏽👍🏽", "(thumbs up sign)"),
        ("❤️", "(heavy black heart)"),
        ("🍕 🍕", "(slice of pizza) (slice of pizza)"),
        ("🍕🎂", "(slice of pizza)(birthday cake)"),
        ("🇬🇧", "(flag GB)"),
        ("👨\u200d👩\u200d👧", "(man)(woman)(girl)"),
    ],
)
def test_emoji_become_their_names(text: str, expected: str) -> None:
    """An emoji prints as its lower-case name, modifiers dropped and a run of the same one collapsed."""
    assert printable(text, "cp858") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("寿司", "?"),
        ("寿司 and ラーメン", "? and ?"),
        ("x\U000e0001\ue000y", "x?y"),
    ],
)
def test_unrepresentable_runs_become_one_question_mark(text: str, expected: str) -> None:
    """CJK and other text with no stand-in is one ? per run, not one per character."""
    assert printable(text, "cp858") == expected


def test_control_characters_never_reach_the_printer() -> None:
    """An ESC in customer text could start a printer command: controls are dropped, tabs become spaces."""
    assert printable("a\tb\x1b@c\x07\r\n", "cp437") == "a b@c  "


def test_decomposed_accents_are_composed_first() -> None:
    """e + combining acute prints as é where the page has it, not as e."""
    assert printable("Cafe\u0301", "cp858") == "Café"


def test_invisible_marks_are_dropped() -> None:
    """Zero-width and direction marks the page lacks vanish rather than print ?."""
    assert printable("a\u200bb\u200ec\ufeffd", "cp858") == "abcd"


# Any text prints

_CODECS = st.sampled_from(["cp437", "cp858", "cp1252", "iso8859_15", "cp1251", "cp864"])


@settings(max_examples=300, deadline=None)
@given(text=st.text(), codec=_CODECS)
def test_any_text_encodes_and_never_raises(text: str, codec: str) -> None:
    """Whatever the text, the result encodes in the page and holds no control character."""
    result = printable(text, codec)
    result.encode(codec)
    assert not any(unicodedata.category(ch) == "Cc" for ch in result)
    assert printable(result, codec) == result


_LATIN = st.characters(min_codepoint=0x20, max_codepoint=0x17F, exclude_categories=("Cc", "Sc", "Sm", "So", "Po"))


@settings(max_examples=200, deadline=None)
@given(text=st.text(_LATIN), codec=st.sampled_from(["cp437", "cp1251", "cp866"]))
def test_latin_letters_never_print_question_marks(text: str, codec: str) -> None:
    """Every Latin-1 and Latin Extended-A letter has a stand-in, so no ? appears that was not there."""
    assert printable(text, codec).count("?") <= text.count("?") + text.count("¿")
