"""(n) The slow box: the drain, intake and idle rows again on one core with a quarter of it (issue 16, target 7).

A Pi-class core is several times slower than this machine's. The agent under test runs pinned to CPU 0
(``taskset -c 0``) in a CPU cgroup limited to 25 ms per 100 ms: ``cpu.max`` on cgroup v2, else
``cpu.cfs_quota_us`` on the v1 ``cpu`` controller. ``systemd-run --scope -p CPUQuota=25%`` does the same where
systemd is PID 1; it is not here, so the benchmark writes the cgroup itself (root needed). Without a writable
CPU controller the section says so and is skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from benchmarks.agents import Children, Sim, agent_config, cpu_seconds, stop_agent, wait_http
from benchmarks.harness import Report
from benchmarks.idle import run_idle
from benchmarks.orders import intake_throughput, run_drain

PERIOD_US = 100_000
QUOTA_US = 25_000
COLUMN = " [slow box: 1 core, 25% quota]"
V2 = Path("/sys/fs/cgroup")
V1 = Path("/sys/fs/cgroup/cpu")


def _make(parent: Path, name: str) -> Path | None:
    group = parent / name
    try:
        group.mkdir(exist_ok=True)
        if (parent / "cgroup.controllers").exists() and (group / "cpu.max").exists():
            (group / "cpu.max").write_text(f"{QUOTA_US} {PERIOD_US}\n")
        elif (group / "cpu.cfs_quota_us").exists():
            (group / "cpu.cfs_period_us").write_text(f"{PERIOD_US}\n")
            (group / "cpu.cfs_quota_us").write_text(f"{QUOTA_US}\n")
        else:
            group.rmdir()
            return None
    except OSError:
        with contextlib.suppress(OSError):
            group.rmdir()
        return None
    return group


@contextlib.contextmanager
def quarter_core() -> Iterator[tuple[tuple[str, ...], str] | None]:
    """Yield (a command prefix that runs a program on CPU 0 at a quarter of it, how), or None if impossible."""
    name = f"venue-agent-bench-{os.getpid()}"
    group = None
    for parent in (V2, V1):
        if parent.is_dir():
            group = _make(parent, name)
            if group is not None:
                break
    if group is None or shutil.which("taskset") is None:
        yield None
        return
    how = "cgroup v2 cpu.max" if (group / "cpu.max").exists() else "cgroup v1 cpu.cfs_quota_us"
    wrapper = ("sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec taskset -c 0 "$@"', str(group))
    try:
        yield wrapper, f"{how} {QUOTA_US}/{PERIOD_US} us + taskset -c 0"
    finally:
        with contextlib.suppress(OSError):
            group.rmdir()  # its processes have ended by now


async def run_slow_box(report: Report, procs: Children, sim: Sim, workdir: Path, *, idle_seconds: float) -> None:
    with quarter_core() as limited:
        if limited is None:
            report.notes.append("- (n) slow box: skipped, no writable CPU cgroup (needs root) or no taskset here")
            return
        wrapper, how = limited
        print(f"(n) slow box: {how}", flush=True)
        await run_drain(report, procs, sim, workdir, total=2_000, wrapper=wrapper, column=COLUMN)

        config, _, port = agent_config(workdir, f"slow-intake{len(procs.started)}", sim_port=sim.port, rate=200)
        popen = procs.spawn("agent-slow-intake", "run", "--config", str(config), wrapper=wrapper)
        await wait_http(f"http://127.0.0.1:{port}/v1/health", within=60)
        latencies: list[float] = []
        cpu0 = cpu_seconds(popen.pid)
        rate, errors, p50 = await intake_throughput(
            port, clients=64, seconds=9, warmup=2, prefix="slow-intake", latencies=latencies
        )
        cores = (cpu_seconds(popen.pid) - cpu0) / 9
        await stop_agent(popen, report, f"intake agent{COLUMN}")
        ordered = sorted(latencies)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else float("nan")
        report.add(
            f"(b) HTTP intake, 64 keep-alive clients, 202 after commit (unpaid orders){COLUMN}",
            ">= 3,000 orders/s; p99 <= 50 ms",
            f"{rate:,.0f} orders/s (p50 {p50:.0f} ms, p99 {p99:.0f} ms, {errors} non-202, agent {cores:.2f} cores)",
            rate >= 3000 and p99 <= 50 and errors == 0,
        )
        await run_idle(report, procs, sim, workdir, seconds=idle_seconds, wrapper=wrapper, column=COLUMN)
        report.notes.append(f"- (n) slow box: {how}; the simulator and the benchmark itself run unconstrained.")
