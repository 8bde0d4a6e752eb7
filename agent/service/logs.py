"""Structured logging: JSON lines under systemd (the journal), a readable console on a terminal.

When the log stream is the journal, every line starts with its syslog priority as ``<N>`` (sd-daemon(3)): journald
(``SyslogLevelPrefix=``, on by default) takes the priority from it and strips it, so ``journalctl -p warning`` shows
the agent's warnings and errors, and ``journalctl -o cat`` still shows one JSON object per line. The stream counts as
the journal only when ``$JOURNAL_STREAM`` names its device and inode, which systemd sets for a unit whose output goes
to the journal; never on a terminal, in a pipe or in a file.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any, Literal, TextIO

import structlog

from agent.service.log_limits import RateLimitFilter, RateLimitProcessor, RepeatLimiter, emit_summary

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# syslog(3) priorities: LOG_CRIT 2, LOG_ERR 3, LOG_WARNING 4, LOG_NOTICE 5, LOG_INFO 6, LOG_DEBUG 7.
PRIORITIES = {"critical": 2, "exception": 3, "error": 3, "warning": 4, "warn": 4, "info": 6, "debug": 7}
DEFAULT_PRIORITY = 6


def syslog_priority(level: str) -> int:
    """Return the syslog priority of a structlog level name (``info`` for one it does not know)."""
    return PRIORITIES.get(level.lower(), DEFAULT_PRIORITY)


def stdlib_priority(levelno: int) -> int:
    """Return the syslog priority of a standard-library logging level number."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    return 6 if levelno >= logging.INFO else 7


def with_priority(line: str, priority: int) -> str:
    """Return ``line`` prefixed with ``<priority>`` for journald."""
    return f"<{priority}>{line}"


def is_journal(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``stream`` is the journal stream systemd connected (``$JOURNAL_STREAM`` = its device:inode).

    Never true for a terminal, and never from ``$INVOCATION_ID`` alone: a unit may send its output to a file.
    """
    expected = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        fd = stream.fileno()
        if os.isatty(fd):
            return False
        info = os.fstat(fd)
    except (OSError, ValueError, AttributeError):
        return False
    return expected.strip() == f"{info.st_dev}:{info.st_ino}"


class JournalPrefix:
    """A structlog renderer wrapper: the inner renderer's line, prefixed with the event's syslog priority."""

    def __init__(self, inner: structlog.typing.Processor) -> None:
        self.inner = inner

    def __call__(self, logger: Any, method_name: str, event_dict: structlog.typing.EventDict) -> str:
        """Render the event and put ``<N>`` in front of it."""
        priority = syslog_priority(str(event_dict.get("level", method_name)))
        return with_priority(str(self.inner(logger, method_name, event_dict)), priority)


class _PriorityFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return with_priority(super().format(record), stdlib_priority(record.levelno))


def configure(
    level: str = "info", fmt: Literal["json", "console"] = "console", *, stream: TextIO | None = None
) -> None:
    """Route structlog (and the standard library's logging) to ``stream`` (stderr) in the chosen format.

    Every event name (and standard-library message) is rate-limited: see agent/service/log_limits.py. On the journal
    each line carries its priority (see the module docstring).
    """
    global _processor
    out = stream or sys.stderr
    journal = is_journal(out)
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    if journal:
        renderer = JournalPrefix(renderer)
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
        if journal:
            handler.setFormatter(_PriorityFormatter("%(name)s: %(message)s"))


_processor: RateLimitProcessor | None = None


def error_line(text: str, *, stream: TextIO | None = None) -> None:
    """Write one line of error text for people to stderr; on the journal it carries the error priority."""
    out = stream or sys.stderr
    print(with_priority(text, 3) if is_journal(out) else text, file=out)


def flush_suppressed() -> None:
    """Write the ``log_suppressed`` summaries of windows that have ended (called periodically by the agent)."""
    if _processor is not None:
        _processor.flush()
