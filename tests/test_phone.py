"""Customer phone numbers as E.164 (drivers.pos.phone), shared by the Square and Lightspeed mappings."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from drivers.pos.lightspeed_mapping import e164_phone
from drivers.pos.phone import E164, E164_MAX, to_e164

SQUARE_PHONE_MAX = 17  # FulfillmentRecipient.phone_number maxLength (Square's api.json)


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("+447700900123", None, "+447700900123"),
        # The example: the "(0)" trunk prefix written inside an international number.
        ("+44 (0) 7700 900 123", None, "+447700900123"),
        ("+44 (0) 7700 900 123", "GB", "+447700900123"),
        ("07700 900123", "GB", "+447700900123"),
        ("07700 900123", "gb", "+447700900123"),
        ("0044 7700 900123", "GB", "+447700900123"),
        ("+1 (415) 555-2671", "GB", "+14155552671"),
        ("(415) 555-2671", "US", "+14155552671"),
        ("tel:+44-20-7946-0958", None, "+442079460958"),
        ("030 1234567", "DE", "+49301234567"),
        # Not placeable without the venue's country, or not a whole number: the caller shows it as typed.
        ("07700 900123", None, None),
        ("0044 7700 900123", None, None),
        ("07700 900123", "ZZ", None),
        ("+0 123", None, None),
        ("call me", "GB", None),
        ("123", "GB", None),
        ("", "GB", None),
        ("+44 7700 900123 4567 8901", None, None),
        # E.164 has no room for an extension, and the number without it would ring the switchboard.
        ("07700 900123 ext. 12", "GB", None),
    ],
)
def test_to_e164(raw: str, region: str | None, e164: str | None) -> None:
    """Numbers in national habits become E.164 with the venue's country; what cannot be placed is None."""
    assert to_e164(raw, region) == e164


@settings(max_examples=400, deadline=timedelta(seconds=1), suppress_health_check=[HealthCheck.too_slow])
@given(
    raw=st.one_of(
        st.text(max_size=40),
        st.text(alphabet="+0123456789 ()-./x#*extEXT", max_size=40),
        st.from_regex(r"\+?[0-9 ()-]{0,30}", fullmatch=True),
        st.text(st.characters(categories=["Nd", "Pd", "Ps", "Pe", "Zs", "Sm"]), max_size=30),
    ),
    region=st.one_of(st.none(), st.sampled_from(["GB", "US", "DE", "FR", "JP", "IN", "AQ", "ZZ", "gb", "", "XYZ"])),
)
@example(raw="+" + "9" * 250, region=None)
@example(raw="\u0663\u0664\u0665", region="EG")  # Arabic-Indic digits
@example(raw="+44 (0) 7700 900 123", region="GB")
def test_to_e164_never_raises_and_gives_e164_or_none(raw: str, region: str | None) -> None:
    """Whatever a customer typed, the answer is None or E.164 (``+`` and at most 15 digits): it fits Square."""
    e164 = to_e164(raw, region)
    if e164 is not None:
        assert E164.fullmatch(e164), e164
        assert len(e164) <= E164_MAX <= SQUARE_PHONE_MAX


def test_lightspeed_uses_the_shared_parser() -> None:
    """Lightspeed's contactNumberAsE164 no longer keeps the "(0)" of "+44 (0) 7700 ..." (no such number)."""
    assert e164_phone("+44 (0) 7700 900 123") == "+447700900123"
    assert e164_phone("07700 900123") is None  # no country code: shown to staff in the order note, as before
