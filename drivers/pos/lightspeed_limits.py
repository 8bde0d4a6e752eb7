"""The Lightspeed K-Series create-order body's length limits (``FIELD_LIMITS``, each with its source) and fitting.

Lengths are counted as Java does (UTF-16 units). The driver's mapping fits values to these limits, and the
simulator's Lightspeed dialect refuses what breaks them (``limit_violations``), so both sides read one table.
"""

from __future__ import annotations

from typing import Any

# --- field limits ----------------------------------------------------------------------------------
# Every length limit of the create-order body, in one table. Lengths are UTF-16 code units: the API is Java
# (its 400 is Spring bean validation, "Validation failed for object='toGoOrder'"), and @Size counts
# String.length(), so an emoji counts 2. OAS = the Order and Pay OpenAPI file named in lightspeed_mapping's docstring
# (api-evangelist/lightspeed openapi/lightspeed-order-and-pay-api-openapi.yml, commit 3cc966a; the same text as
# https://api-docs.lsk.lightspeed.app/operation/operation-apeplacetogoorder and ...-apelocalorder).
# What happens at each limit is decided in build_order_request: codes are never cut (a cut SKU, code or address
# is a different one), free text is cut visibly with ELLIPSIS and its full text goes in the orderNote.
FIELD_LIMITS: dict[str, int] = {
    # OAS toGo/local body: thirdPartyReference minLength 1, maxLength 48. A longer key is hashed to fit.
    "thirdPartyReference": 48,
    # OAS toGo/local body: collectionCode maxLength 8. A longer one is not sent (Lightspeed generates one,
    # "If left blank, one will be automatically generated") and is named in the note.
    "collectionCode": 8,
    # OAS apeCustomerInfo.firstName: minLength 1, maxLength 128. Cut visibly; the full name goes in the note.
    "customerInfo.firstName": 128,
    # OAS gives no maxLength for lastName; the agent keeps firstName's 128. Cut like firstName.
    "customerInfo.lastName": 128,
    # OAS gives none; RFC 5321 §4.5.3.1.3 (a 256-octet path less its angle brackets), as intake enforces.
    # An address cut short is a wrong address: a longer one is not sent and is named in the note.
    "customerInfo.email": 254,
    # OAS gives none ("displayed on the printed dockets"); the agent keeps 1000. Parts are cut in priority order.
    "orderNote": 1000,
    # OAS deliveryAddress.addressLine1/addressLine2/zip/city: plain strings, no maxLength. 255 is an inference,
    # not a documented limit: JPA's default column length on a Java backend. Cut visibly; full text in the note.
    "deliveryAddress.addressLine1": 255,
    "deliveryAddress.addressLine2": 255,
    "deliveryAddress.zip": 255,
    "deliveryAddress.city": 255,
    # OAS local body: tableNumber is a string, but the floor plan's table number is int32 (apeTable.number),
    # at most 10 digits. A table that is not such a number fails the order (rejected) before sending.
    "tableNumber": 10,
    # OAS apeToGoOrderItemLine.sku / apeLocalOrderItemLine.sku: maxLength 25. Never cut: a longer SKU is a
    # permanent menu error naming the item, before any request.
    "items[].sku": 25,
    # OAS apeSubItemOrderLine.sku: maxLength 25, at every nesting level of subItems. As items[].sku.
    "items[].subItems[].sku": 25,
}
ELLIPSIS = "..."  # ASCII: any docket printer's code page has it, and it counts 3 in UTF-16 as in every charset
REFERENCE_MAX = FIELD_LIMITS["thirdPartyReference"]
SKU_MAX = FIELD_LIMITS["items[].sku"]
COLLECTION_CODE_MAX = FIELD_LIMITS["collectionCode"]
FIRST_NAME_MAX = FIELD_LIMITS["customerInfo.firstName"]
ORDER_NOTE_MAX = FIELD_LIMITS["orderNote"]


# --- lengths ---------------------------------------------------------------------------------------


def utf16_len(text: str) -> int:
    """Return the length Java's ``String.length()`` gives ``text`` (a character beyond U+FFFF counts 2)."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def fit(text: str, limit: int) -> str:
    """Return ``text`` if it is at most ``limit`` UTF-16 units, else its start ending in ELLIPSIS, within it."""
    if utf16_len(text) <= limit:
        return text
    room, used, kept = limit - len(ELLIPSIS), 0, 0
    while kept < len(text) and used + (width := 2 if ord(text[kept]) > 0xFFFF else 1) <= room:
        used += width
        kept += 1
    return text[:kept].rstrip() + ELLIPSIS


def limit_violations(body: dict[str, Any]) -> list[tuple[str, int, int]]:
    """Return ``(field, length, limit)`` for every string of a create-order body over its FIELD_LIMITS entry."""
    found: list[tuple[str, int, int]] = []

    def check(path: str, key: str, value: object) -> None:
        if isinstance(value, str) and utf16_len(value) > FIELD_LIMITS[key]:
            found.append((path, utf16_len(value), FIELD_LIMITS[key]))

    def lines(items: object, path: str, key: str) -> None:
        for index, line in enumerate(items if isinstance(items, list) else []):
            if isinstance(line, dict):
                check(f"{path}[{index}].sku", f"{key}.sku", line.get("sku"))
                lines(line.get("subItems"), f"{path}[{index}].subItems", "items[].subItems[]")

    for key in FIELD_LIMITS:
        head, _, tail = key.partition(".")
        if "[" in key:
            continue
        section = body.get(head) if tail else body
        if isinstance(section, dict):
            check(key, key, section.get(tail or head))
    lines(body.get("items"), "items", "items[]")
    return found
