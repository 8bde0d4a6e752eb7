"""The box in a venue (issue 16): end to end on an SD card (l), an idle kitchen (k), a month of orders (m) and
the slow box (n). ``.venv/bin/python benchmarks/run.py --only box`` runs them alone (about 6 minutes)."""

from __future__ import annotations

from pathlib import Path

from benchmarks import sdcard
from benchmarks.agents import Sim, children
from benchmarks.harness import Report
from benchmarks.idle import IDLE_SECONDS, run_idle
from benchmarks.month import run_month
from benchmarks.orders import run_sdcard_end_to_end
from benchmarks.slowbox import run_slow_box


async def run_box(report: Report, workdir: Path) -> None:
    shim = sdcard.build(workdir)
    with children(workdir) as procs:
        sim = Sim(procs)
        try:
            await sim.ready()
            pq = report.facts.get("persist-queue +10 ms")
            await run_sdcard_end_to_end(report, procs, sim, workdir, shim=shim, persist_queue_rate=pq)
            await run_idle(report, procs, sim, workdir)
            await run_month(report, procs, sim, workdir)
            await run_slow_box(report, procs, sim, workdir, idle_seconds=IDLE_SECONDS)
        finally:
            await sim.client.aclose()


async def run_idle_only(report: Report, workdir: Path) -> None:
    """(k) alone: ``.venv/bin/python benchmarks/run.py --only idle`` (about 75 s)."""
    with children(workdir) as procs:
        sim = Sim(procs)
        try:
            await sim.ready()
            await run_idle(report, procs, sim, workdir)
        finally:
            await sim.client.aclose()
