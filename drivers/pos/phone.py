"""Customer phone numbers as E.164 for the POS drivers: pure, and never raises.

Square's ``FulfillmentRecipient.phone_number`` takes at most 17 characters (connect-api-specification
api.json, ``components.schemas.FulfillmentRecipient.properties.phone_number.maxLength``) and Lightspeed
K-Series wants ``customerInfo.contactNumberAsE164``. Customers type numbers in every national habit
("+44 (0) 7700 900 123", "07700 900123", "0044 7700 900123"); Google's libphonenumber (its Python port,
``phonenumbers``, installed from the phonenumberslite distribution) knows each country's numbering plan,
trunk prefix and international prefix. A number it cannot place is not guessed at: the caller shows it to
staff as typed instead.
"""

from __future__ import annotations

import re

import phonenumbers

# ITU-T E.164: "+", a country code that does not start with 0, at most 15 digits in all.
E164 = re.compile(r"^\+[1-9]\d{1,14}$")
E164_MAX = 16


def to_e164(raw: str, default_region: str | None) -> str | None:
    """Return ``raw`` as E.164 (``+447700900123``), or None when it is not a complete number.

    ``default_region`` (ISO 3166-1 alpha-2, the venue's country) places a number written without its
    country code; without it only numbers written with ``+`` or an international prefix known to the
    number itself can be placed. A number with an extension is None: E.164 cannot carry the extension,
    and a number missing it would ring the wrong desk.
    """
    region = default_region.upper() if default_region else None
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if number.extension:
        return None
    # "Possible" (the right length for its country) rather than "valid": validity tables lag new ranges and
    # leave out the ranges set aside for drama and tests, and a possible number is still what staff would dial.
    if phonenumbers.is_possible_number_with_reason(number) != phonenumbers.ValidationResult.IS_POSSIBLE:
        return None
    formatted = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return formatted if E164.match(formatted) else None
