"""The health snapshot (``GET /v1/health`` and MQTT ``P/health``), measured, not guessed."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

from agent import __version__
from agent.dispatch.dispatcher import Dispatcher
from agent.outbox.store import Outbox
from agent.printing.worker import PrintWorker

OUTBOX_STATES = ("held", "scheduled", "queued", "retrying", "awaiting_pos", "failed")


def rss_mb() -> float:
    """Return this process's resident set size in MB (from /proc; 0 where there is none)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


class HealthReporter:
    """Builds health snapshots; ``seq`` grows by one with every snapshot."""

    def __init__(self, *, outbox: Outbox, dispatcher: Dispatcher, printer: PrintWorker) -> None:
        self.outbox = outbox
        self.dispatcher = dispatcher
        self.printer = printer
        self.started = time.monotonic()
        self.seq = 0

    async def snapshot(self, *, ready: bool) -> dict[str, Any]:
        """Return the current health snapshot."""
        now = self.outbox.clock.now()
        counts, oldest, last = await self.outbox.health_figures()  # one read: one wake of the reader thread
        self.seq += 1
        pos = self.dispatcher.pos
        integrity = self.outbox.integrity
        circuit = self.dispatcher.circuit
        return {
            "ts": now.isoformat(),
            "ready": ready,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "version": __version__,
            "outbox": {state: counts[state] for state in OUTBOX_STATES} | {"sending": counts["sending"]},
            "oldest_pending_age_s": _age(now, oldest),
            "last_injected_at": last.isoformat() if last else None,
            "pos": {
                "driver": pos.driver,
                "state": pos.state(circuit),
                "latency_ms": pos.latency_ms,
                "circuit": circuit.state.value,
                "last_error": pos.last_error,
                "conditions": pos.conditions,
            },
            "printers": self.printer.health(),
            "disk_free_mb": round(self.outbox.disk_free_bytes() / 1_048_576, 1),
            "db_size_mb": round(self.outbox.db_size_bytes() / 1_048_576, 2),
            "storage": {
                "outbox_id": self.outbox.outbox_id,
                "integrity": integrity.state,
                "integrity_checked_at": integrity.checked_at.isoformat() if integrity.checked_at else None,
                "integrity_detail": integrity.detail,
            },
            "rss_mb": rss_mb(),
            "seq": self.seq,
        }


def _age(now: datetime, then: datetime | None) -> float | None:
    return round((now - then).total_seconds(), 1) if then else None
