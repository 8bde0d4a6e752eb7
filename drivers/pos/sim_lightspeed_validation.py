"""What the simulator's Lightspeed K-Series dialect refuses in an order body, answered as Spring bean validation.

The required fields of the OAS, whole-number quantities and courses, and every length limit of
``lightspeed_mapping.FIELD_LIMITS`` (counted in UTF-16 units, as Java does).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.responses import JSONResponse, Response

from drivers.pos.lightspeed_limits import limit_violations


@dataclass(frozen=True)
class Problem:
    """One field the real API would refuse: Spring's field path, constraint code, message and rejected value."""

    field: str
    code: str
    message: str
    rejected: object = None


def validate_order(body: dict[str, Any], *, local: bool, location: int | None) -> list[Problem]:
    """Return what the real API's bean validation would reject (the fields the OAS marks required)."""
    problems: list[Problem] = []
    blid = body.get("businessLocationId")
    if not isinstance(blid, int) or isinstance(blid, bool):
        problems.append(Problem("businessLocationId", "NotNull", "must not be null", blid))
    elif location is not None and blid != location:
        problems.append(Problem("businessLocationId", "Invalid", "Invalid input business location id", blid))
    reference = body.get("thirdPartyReference")
    if not isinstance(reference, str) or not reference:
        problems.append(Problem("thirdPartyReference", "NotNull", "must not be null", reference))
    endpoint = body.get("endpointId")
    if not isinstance(endpoint, str) or not endpoint:
        problems.append(Problem("endpointId", "NotNull", "must not be null", endpoint))
    customer = body.get("customerInfo")
    first = customer.get("firstName") if isinstance(customer, dict) else None
    if not isinstance(customer, dict):
        problems.append(Problem("customerInfo", "NotNull", "must not be null", customer))
    elif not isinstance(first, str) or not first:
        problems.append(Problem("customerInfo.firstName", "Size", "size must be between 1 and 128", first))
    wait = body.get("maxTimeToAttemptOrderDeliverToPos")
    if wait is not None and (not isinstance(wait, int) or wait < 60000):
        problems.append(Problem("maxTimeToAttemptOrderDeliverToPos", "Min", "must be greater than or equal to 60000"))
    items = body.get("items")
    if not isinstance(items, list) or not items:
        problems.append(Problem("items", "NotEmpty", "must not be empty", items))
    else:
        _validate_lines(items, "items", problems, local=local)
    # Every length limit the mapping keeps (one table, with its sources), counted in UTF-16 units as Java does.
    for name, _length, limit in limit_violations(body):
        low = 1 if name in ("thirdPartyReference", "customerInfo.firstName") else 0
        problems.append(Problem(name, "Size", f"size must be between {low} and {limit}", _at(body, name)))
    return problems


def _at(body: object, path: str) -> object:
    """Return the value at a Spring-style field path (``items[0].subItems[1].sku``) of ``body``."""
    node = body
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path):
        if name:
            node = node.get(name) if isinstance(node, dict) else None
        else:
            node = node[int(index)] if isinstance(node, list) and int(index) < len(node) else None
    return node


def _validate_lines(lines: list[Any], path: str, problems: list[Problem], *, local: bool) -> None:
    for index, line in enumerate(lines):
        where = f"{path}[{index}]"
        if not isinstance(line, dict):
            problems.append(Problem(where, "NotNull", "must not be null", line))
            continue
        sku = line.get("sku")
        if not isinstance(sku, str) or not sku:
            problems.append(Problem(f"{where}.sku", "NotBlank", "must not be blank", sku))
        quantity = line.get("quantity")
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
            problems.append(Problem(f"{where}.quantity", "NotNull", "must be a whole number >= 1", quantity))
        course = line.get("course")
        if course is not None and (not isinstance(course, int) or course < 0):
            problems.append(Problem(f"{where}.course", "Min", "must be greater than or equal to 0", course))
        subs = line.get("subItems")
        if isinstance(subs, list):
            _validate_lines(subs, f"{where}.subItems", problems, local=False)


def validation_error(path: str, object_name: str, problems: list[Problem]) -> Response:
    """Return the 400 Spring answers for ``problems``: one ``errors`` entry per field."""
    errors = [
        {
            "codes": [f"{p.code}.{object_name}.{p.field}", p.code],
            "arguments": None,
            "defaultMessage": p.message,
            "objectName": object_name,
            "field": p.field,
            "rejectedValue": p.rejected,
            "bindingFailure": False,
            "code": p.code,
        }
        for p in problems
    ]
    body = {
        "timestamp": datetime.now(UTC).isoformat(),
        "status": 400,
        "error": "Bad Request",
        "message": f"Validation failed for object='{object_name}'. Error count: {len(problems)}",
        "errors": errors,
        "path": path,
    }
    return JSONResponse(body, status_code=400)


def order_skus(lines: object) -> list[str]:
    """Return every SKU of the item lines and their sub-items, in order."""
    found: list[str] = []
    if not isinstance(lines, list):
        return found
    for line in lines:
        if isinstance(line, dict):
            sku = line.get("sku")
            if isinstance(sku, str):
                found.append(sku)
            found.extend(order_skus(line.get("subItems")))
    return found
