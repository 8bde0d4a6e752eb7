"""Money as the project stores it: integer minor units of an ISO 4217 currency."""

from __future__ import annotations

# ISO 4217 minor-unit exponents that are not 2; every other currency has two decimals.
EXPONENTS: dict[str, int] = {
    **dict.fromkeys(
        (
            "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG",
            "RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF",
        ),
        0,
    ),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    **dict.fromkeys(("CLF", "UYW"), 4),
}  # fmt: skip


def currency_exponent(currency: str) -> int:
    """Return the number of minor-unit digits of an ISO 4217 currency (2 unless listed otherwise)."""
    return EXPONENTS.get(currency.upper(), 2)
