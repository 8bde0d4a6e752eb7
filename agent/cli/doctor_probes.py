"""``venue-agent doctor``: measuring. Each probe gathers facts for a verdict in agent/cli/doctor.py, bounded in time.

Doctor never disturbs the running agent: it opens the outbox read-only, never refreshes a Lightspeed token (refresh
tokens are single-use; only the agent rotates them), reads serial and USB printers from the agent's health instead
of opening them while it runs, and tests the broker under its own client id.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import shutil
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.cli.client import AgentClient, AgentUnreachable
from agent.cli.config_check import ConfigReport
from agent.cli.doctor import (
    AgentFacts,
    ClockFacts,
    Finding,
    OutboxFacts,
    adjtimex_synchronised,
    judge_agent,
    judge_clock,
    judge_config,
    judge_disk,
    judge_orders,
    judge_outbox,
    parse_timedatectl,
)
from agent.cli.doctor_link_probes import mqtt_facts, pos_facts, printer_facts
from agent.cli.doctor_links import judge_mqtt, judge_pos, judge_printer
from agent.cli.operator import Context
from agent.outbox import readonly as outbox_readonly
from agent.outbox.identity import diagnose, integrity_check

SYSTEMD_RUN_DIR = Path("/run/systemd/system")
UNIT = "venue-agent.service"
COMMAND_TIMEOUT = 5.0
API_TIMEOUT = 5.0


async def run_checks(report: ConfigReport) -> list[Finding]:
    """Return every finding, in report order; checks that need a valid config are skipped without one."""
    findings = judge_config(report)
    ctx = report.context
    if ctx is None:
        return findings
    settings = ctx.settings
    agent, health = await asyncio.to_thread(agent_facts, ctx)
    outbox_task = asyncio.create_task(asyncio.to_thread(outbox_facts, ctx))
    clock_task = asyncio.create_task(asyncio.to_thread(clock_facts))
    pos_task = asyncio.create_task(pos_facts(ctx, health))
    printer_tasks = [asyncio.create_task(printer_facts(ctx, p.name, health)) for p in settings.printers]
    mqtt_task = asyncio.create_task(mqtt_facts(ctx, agent_ready=agent.api == "ready"))
    outbox = await outbox_task
    free, error = disk_free(ctx.outbox)
    findings += [
        judge_agent(agent),
        judge_outbox(outbox),
        judge_orders(outbox, now=datetime.now(UTC), print_after_seconds=settings.fallback.print_after_seconds),
        judge_disk(free, min_free_mb=settings.storage.min_free_mb, path=str(ctx.outbox.parent), error=error),
        judge_clock(await clock_task),
        judge_pos(await pos_task),
        *[judge_printer(await task) for task in printer_tasks],
        judge_mqtt(await mqtt_task),
    ]
    return findings


def run_tool(*command: str, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str] | None:
    """Run a system tool (a fixed argument list, no shell); None when it is not installed or did not finish in time."""
    if shutil.which(command[0]) is None:
        return None
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired):
        return None


# ---- the agent ---------------------------------------------------------------------------------------


def agent_facts(ctx: Context) -> tuple[AgentFacts, dict[str, Any] | None]:
    """Return the service's state (systemctl) and the API's answer, with the health snapshot when it gave one."""
    systemd = None
    if SYSTEMD_RUN_DIR.is_dir():
        done = run_tool("systemctl", "is-active", UNIT)
        systemd = (done.stdout.strip() or "unknown") if done is not None else "unknown"
    client = AgentClient(ctx.settings, timeout=API_TIMEOUT)
    try:
        response = client.call("GET", "/v1/health")
    except AgentUnreachable:
        return AgentFacts(systemd, "unreachable", client.base), None
    finally:
        client.close()
    if response.status_code == 401:
        return AgentFacts(systemd, "refused", client.base, ctx.token_hint()), None
    try:
        health = response.json()
    except ValueError:
        return AgentFacts(systemd, "error", client.base, f"{response.status_code} without JSON"), None
    if response.status_code == 503:
        return AgentFacts(systemd, "not_ready", client.base, "a loop stopped, or it is starting"), health
    if response.status_code != 200:
        return AgentFacts(systemd, "error", client.base, f"{response.status_code}"), None
    return AgentFacts(systemd, "ready", client.base), health


# ---- outbox, disk, clock -----------------------------------------------------------------------------


def outbox_facts(ctx: Context) -> OutboxFacts:
    """Read the outbox read-only: refusal, quick_check, counts, oldest due and last injection."""
    path = ctx.outbox
    base: dict[str, Any] = {"path": str(path), "source": ctx.outbox_source, "sizes": outbox_readonly.file_sizes(path)}
    refusal = diagnose(path)
    if refusal is not None:
        return OutboxFacts(exists=path.exists(), refusal=f"{refusal.reason}: {refusal.message}", **base)
    if not path.is_file():
        return OutboxFacts(exists=False, **base)
    try:
        conn = outbox_readonly.connect(path)
        try:
            problems = integrity_check(conn)
            return OutboxFacts(
                exists=True,
                integrity=problems,
                counts=outbox_readonly.counts(conn),
                oldest_due=outbox_readonly.oldest_due(conn),
                last_injected=outbox_readonly.last_injected(conn),
                **base,
            )
        finally:
            conn.close()
    except (sqlite3.Error, OSError) as exc:
        return OutboxFacts(exists=True, error=str(exc), **base)


def disk_free(path: Path) -> tuple[int | None, str]:
    """Return the free bytes on the file system holding ``path`` (its nearest existing directory), or why not."""
    for directory in (path.parent, *path.parent.parents):
        if directory.is_dir():
            try:
                return shutil.disk_usage(directory).free, ""
            except OSError as exc:
                return None, str(exc)
    return None, "no such directory"


def clock_facts() -> ClockFacts:
    """Ask timedated (``timedatectl``) whether NTP synchronised the clock; else the kernel (adjtimex)."""
    done = run_tool("timedatectl", "show", "-p", "NTPSynchronized")
    if done is not None and done.returncode == 0:
        value = parse_timedatectl(done.stdout)
        if value is not None:
            return ClockFacts(value, "timedatectl")
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        timex = ctypes.create_string_buffer(512)  # struct timex (208 bytes on 64-bit) with modes = 0: read only
        state = int(libc.adjtimex(timex))
    except (OSError, AttributeError) as exc:
        return ClockFacts(None, "", f"neither timedatectl nor adjtimex answered: {exc}")
    if state < 0:
        return ClockFacts(None, "", f"adjtimex failed (errno {ctypes.get_errno()})")
    return ClockFacts(adjtimex_synchronised(state), "kernel adjtimex; timedatectl did not answer")
