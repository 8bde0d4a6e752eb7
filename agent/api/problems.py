"""RFC 9457 problem documents: every error the intake API answers with."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from agent.domain.errors import FieldError

PROBLEM_TYPE = "https://venue-agent.invalid/problems/"
TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Unprocessable order",
    500: "Internal error",
    503: "Service unavailable",
}


def problem(
    status: int,
    detail: str,
    *,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
    slug: str | None = None,
    **extra: Any,
) -> JSONResponse:
    """Return an ``application/problem+json`` response."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + (slug or str(status)),
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "errors": [e.as_dict() for e in errors or []],
        **extra,
    }
    return JSONResponse(body, status_code=status, headers=headers, media_type="application/problem+json")
