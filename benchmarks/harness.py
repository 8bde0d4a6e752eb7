"""The table of results: rows, the machine header and the Markdown rendering."""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import persistqueue

ROOT = Path(__file__).resolve().parents[1]
VENUE = "harbour-kitchen"
# The agent and the simulator under test: the development install beside this Python, unless
# $BENCH_AGENT_BIN names another (e.g. a virtualenv with the runtime dependencies only, as on a box).
BIN = Path(os.environ.get("BENCH_AGENT_BIN") or Path(sys.executable).with_name("venue-agent"))
RESULTS = ROOT / "benchmarks" / "results.md"


# ---- results ---------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table."""

    measure: str
    target: str
    result: str
    ok: bool | None  # None: informative, no target

    def cells(self) -> list[str]:
        verdict = "-" if self.ok is None else ("pass" if self.ok else "**miss**")
        return [self.measure, self.target, self.result, verdict]


@dataclass
class Report:
    """Rows, notes and the peak RSS seen per agent process."""

    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rss_kb: dict[str, int] = field(default_factory=dict)
    facts: dict[str, float] = field(default_factory=dict)  # figures a later section compares with

    def add(self, measure: str, target: str, result: str, ok: bool | None) -> None:
        row = Row(measure, target, result, ok)
        self.rows.append(row)
        print(f"  {row.measure}: {row.result} ({row.cells()[3]})", flush=True)


# ---- machine ---------------------------------------------------------------------------------


def machine_header(workdir: Path) -> list[str]:
    """Describe the machine, the disk under the benchmark files and the command."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 0
    mem = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) // 1024} MB"
    fs = subprocess.run(["df", "-PT", str(workdir)], capture_output=True, text=True, check=False).stdout.splitlines()[
        -1:
    ]
    fs_text = " ".join(fs[0].split()[:2]) if fs else "unknown"
    command = " ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable, ROOT), *sys.argv])
    return [
        "# venue-agent benchmarks",
        "",
        f"- date: {datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- command: `{command}` (from the repository root)",
        f"- machine: nproc {usable}, CPU {model}, RAM {mem}, {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, persist-queue "
        f"{getattr(persistqueue, '__version__', '?')}",
        f"- disk under the benchmark files: {fs_text} ({workdir}); 4 KB write+fsync: {fsync_ms(workdir):.2f} ms",
        "- all traffic on loopback (127.0.0.1); agent and POS simulator are separate `venue-agent` processes",
        f"- load average at the start: {' / '.join(f'{x:.2f}' for x in os.getloadavg())} (1/5/15 min)",
    ]


def fsync_ms(directory: Path, rounds: int = 100) -> float:
    """Return the mean time of a 4 KB write followed by fsync in ``directory``."""
    path = directory / "fsync.probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        started = time.perf_counter()
        for _ in range(rounds):
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        return (time.perf_counter() - started) / rounds * 1000
    finally:
        os.close(fd)
        path.unlink()


def render(header: list[str], report: Report, seconds: float) -> str:
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [*header, f"- load average at the end: {load}; benchmark wall time: {seconds:.0f} s", ""]
    lines.append("| measure | target | result | pass/miss |")
    lines.append("|---|---|---|---|")
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row.cells()) + " |" for row in report.rows]
    if report.notes:
        lines += ["", *report.notes]
    return "\n".join(lines) + "\n"
