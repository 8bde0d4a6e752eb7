"""Structured logging: JSON lines under systemd (the journal), a readable console on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog

from agent.log_limits import RateLimitFilter, RateLimitProcessor, RepeatLimiter, emit_summary

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure(
    level: str = "info", fmt: Literal["json", "console"] = "console", *, stream: TextIO | None = None
) -> None:
    """Route structlog (and the standard library's logging) to ``stream`` (stderr) in the chosen format.

    Every event name (and standard-library message) is rate-limited: see agent/log_limits.py.
    """
    global _processor
    out = stream or sys.stderr
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    limiter = RepeatLimiter()
    _processor = RateLimitProcessor(limiter, emit_summary(limiter.interval))
    shared: list[structlog.typing.Processor] = [
        _processor,
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(
        level=max(LEVELS[level], logging.WARNING), stream=out, format="%(name)s: %(message)s", force=True
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RateLimitFilter(_processor))


_processor: RateLimitProcessor | None = None


def flush_suppressed() -> None:
    """Write the ``log_suppressed`` summaries of windows that have ended (called periodically by the agent)."""
    if _processor is not None:
        _processor.flush()
