"""File descriptors: the agent's own limit, and how many of them intake connections may take."""

from __future__ import annotations

import resource

import structlog

log = structlog.get_logger("venue_agent.descriptors")

# Kept free of intake connections whatever the limit: the outbox (database, WAL, shm), the POS client's
# pool, printers, MQTT, mDNS, the journal, and the listening sockets.
RESERVED = 128
MIN_CONNECTIONS = 8


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (if allowed); return the (soft, hard) now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError) as exc:  # e.g. the unit's seccomp filter (~@resources) forbids setrlimit
            log.warning("fd_limit_not_raised", soft=soft, hard=hard, error=str(exc))
    return soft, hard


def connection_cap(max_connections: int, soft_limit: int) -> int:
    """Return how many intake connections may be open: ``max_connections``, but RESERVED below ``soft_limit``."""
    return max(MIN_CONNECTIONS, min(max_connections, soft_limit - RESERVED))
