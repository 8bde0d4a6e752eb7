"""``venue-agent doctor``: the verdicts. Pure functions from measured facts to ok / warn / fail and what to do.

The facts are gathered by agent/cli/doctor_probes.py; nothing here touches a file, a socket or the clock. This module
holds the findings, their reports and the verdicts on this box (config, the running agent, outbox, disk, clock);
doctor_links.py those on the POS, the printers and the MQTT broker.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from agent.cli.config_check import ConfigReport
from agent.cli.table import table

Level = Literal["ok", "warn", "fail"]
EXIT_CODES: dict[Level, int] = {"ok": 0, "warn": 1, "fail": 2}
CHECK_WIDTH = 16
MB = 1_048_576


@dataclass(frozen=True)
class Finding:
    """One check's verdict: its name, level, what was found and (for warn/fail) what to do."""

    check: str
    level: Level
    detail: str
    todo: str = ""


def exit_code(findings: Iterable[Finding]) -> int:
    """Return 0 when every check is ok, 1 when the worst is a warning, 2 when any failed."""
    return max((EXIT_CODES[f.level] for f in findings), default=0)


def render(findings: Sequence[Finding], *, width: int | None = None) -> str:
    """Return the human report: ``<level>  <check>  <detail>`` per check, a ``what to do`` line under warn/fail.

    Details wrap between words at ``width`` (None: one line each).
    """
    rows = []
    for f in findings:
        rows.append([f.level, f.check, f.detail])
        if f.level != "ok" and f.todo:
            rows.append(["", "", f"what to do: {f.todo}"])
    return "\n".join(table(rows, min_widths=(5, CHECK_WIDTH), gap=" ", width=width))


def as_json(findings: Sequence[Finding], **meta: Any) -> dict[str, Any]:
    """Return the machine report: the exit code, every finding and the context given in ``meta``."""
    code = exit_code(findings)
    return {"ok": code == 0, "exit": code, **meta, "checks": [asdict(f) for f in findings]}


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _mb(size: float) -> str:
    return f"{size / MB / 1024:.1f} GB" if size >= 10 * 1024 * MB else f"{size / MB:.1f} MB"


# ---- config -----------------------------------------------------------------------------------------


def judge_config(report: ConfigReport) -> list[Finding]:
    """Return the config finding (every problem at once) and one finding per secret file."""
    findings = []
    if report.context is None:
        listed = "; ".join(str(p) for p in report.problems)
        return [Finding("config", "fail", listed, "fix the file: 'venue-agent config check' lists the same")]
    ctx = report.context
    settings = ctx.settings
    if report.problems:
        listed = "; ".join(f"{p.key}: {p.message}" for p in report.problems)
        findings.append(Finding("config", "fail", f"{ctx.path}: {listed}", f"fix {ctx.path}, then run doctor again"))
    else:
        detail = (
            f"{ctx.path}: valid; venue {settings.venue.id}, pos {settings.pos.driver},"
            f" {len(settings.printers)} printer(s), mqtt {'on' if settings.mqtt.enabled else 'off'}"
        )
        warnings = [w for w in report.warnings if not w.startswith(tuple(s.key for s in ctx.secrets))]
        if warnings:
            findings.append(Finding("config", "warn", f"{detail}; {'; '.join(warnings)}", "see the warning"))
        else:
            findings.append(Finding("config", "ok", detail))
    for secret in ctx.secrets:
        problems = [p.message for p in report.secret_problems if p.key == secret.key]
        if problems:
            todo = f"put the secret in {secret.located.path} (root-only, 0600) and hand it to the service"
            findings.append(Finding("secret", "fail", f"{secret.key}: {'; '.join(problems)}", todo))
        elif secret.error:
            detail = f"{secret.key} = {secret.describe()}: not readable by this user"
            findings.append(Finding("secret", "warn", detail, "run 'sudo venue-agent doctor' to check it"))
        else:
            findings.append(Finding("secret", "ok", f"{secret.key} = {secret.describe()}, readable"))
    return findings


# ---- the running agent ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentFacts:
    """Whether systemd runs the unit (``systemd`` None: no systemd here) and how the local API answered."""

    systemd: str | None
    api: Literal["ready", "not_ready", "refused", "unreachable", "error"]
    base_url: str
    detail: str = ""


def judge_agent(facts: AgentFacts) -> Finding:
    """Return the verdict on the service's state and the agent's API."""
    answers = {
        "ready": f"ready at {facts.base_url}",
        "not_ready": f"answers at {facts.base_url} but is NOT READY ({facts.detail})",
        "refused": f"answers at {facts.base_url} but refused this user ({facts.detail})",
        "unreachable": f"nothing answers at {facts.base_url}",
        "error": f"{facts.base_url} answered {facts.detail}",
    }[facts.api]
    logs = "journalctl -u venue-agent -n 50 -o cat"
    if facts.systemd is None:
        where = "systemd is not running on this machine"
        if facts.api == "ready":
            return Finding("agent", "ok", f"{answers} ({where})")
        if facts.api == "refused":
            return Finding("agent", "warn", f"{answers} ({where})", "run doctor with sudo")
        return Finding("agent", "fail", f"{answers} ({where})", "start it: venue-agent run --config <file>")
    state = f"service {facts.systemd}"
    if facts.systemd == "active" and facts.api == "ready":
        return Finding("agent", "ok", f"{state}, {answers}")
    if facts.systemd == "active" and facts.api == "refused":
        return Finding("agent", "warn", f"{state}, {answers}", "run doctor with sudo to see its health")
    if facts.systemd == "active" and facts.api == "unreachable":
        todo = f"check intake.listen is the service's (--config of the unit); {logs}"
        return Finding("agent", "fail", f"{state}, {answers}", todo)
    if facts.api == "ready":
        todo = "an agent started by hand runs beside systemd: stop it, then: sudo systemctl start venue-agent"
        return Finding("agent", "warn", f"{state}, but an agent is {answers}", todo)
    if facts.systemd in ("activating", "reloading", "deactivating"):
        return Finding("agent", "warn", f"{state}, {answers}", f"wait a few seconds and run doctor again; {logs}")
    if facts.systemd == "active":
        return Finding("agent", "fail", f"{state}, {answers}", logs)
    todo = f"see why: {logs}; fix it, then: sudo systemctl restart venue-agent"
    return Finding("agent", "fail", f"{state}, {answers}", todo)


# ---- outbox, orders, disk ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OutboxFacts:
    """The outbox file as read (read-only) by doctor."""

    path: str
    source: str
    exists: bool
    sizes: dict[str, int] = field(default_factory=dict)
    refusal: str | None = None
    integrity: str | None = None  # None: ok; else quick_check's findings or why it could not run
    error: str | None = None  # why the file could not be read at all
    counts: dict[str, int] = field(default_factory=dict)
    oldest_due: datetime | None = None
    last_injected: datetime | None = None


def judge_outbox(facts: OutboxFacts) -> Finding:
    """Return the verdict on the outbox file: present, accepted by the agent, intact."""
    where = f"{facts.path} ({facts.source})"
    if facts.refusal is not None:
        return Finding(
            "outbox",
            "fail",
            f"{where}: the agent refuses it: {facts.refusal}",
            "see docs/operations.md, 'The outbox refused at start'",
        )
    if not facts.exists:
        return Finding("outbox", "warn", f"{where}: no file yet", "the agent creates it when it first starts")
    if facts.error is not None:
        return Finding("outbox", "warn", f"{where}: cannot read it: {facts.error}", "run doctor with sudo")
    sizes = f"{_mb(facts.sizes.get('db', 0))} + {_mb(facts.sizes.get('wal', 0))} WAL"
    if facts.integrity is not None:
        todo = (
            "stop the agent, copy outbox.db* somewhere safe, restore a backup"
            " (docs/operations.md, 'The outbox refused at start')"
        )
        return Finding("outbox", "fail", f"{where}: quick_check failed: {facts.integrity}", todo)
    return Finding("outbox", "ok", f"{where}: integrity ok, {sizes}")


def judge_orders(facts: OutboxFacts, *, now: datetime, print_after_seconds: float) -> Finding:
    """Return the verdict on the orders waiting: none stuck beyond the fallback delay, none failed."""
    if not facts.exists or facts.error is not None or facts.refusal is not None:
        return Finding("orders", "warn", "unknown: the outbox could not be read", "see the outbox check")
    pending = sum(facts.counts.get(s, 0) for s in ("queued", "sending", "retrying", "awaiting_pos"))
    failed, held, scheduled = (facts.counts.get(s, 0) for s in ("failed", "held", "scheduled"))
    last = (
        f"last injected {_ago((now - facts.last_injected).total_seconds())} ago"
        if facts.last_injected
        else "none injected yet"
    )
    parts = [f"{pending} waiting for the POS"]
    if pending and facts.oldest_due is not None:
        parts[0] += f" (oldest due {_ago((now - facts.oldest_due).total_seconds())} ago)"
    parts += [f"{n} {name}" for n, name in ((scheduled, "scheduled"), (held, "held unpaid"), (failed, "FAILED")) if n]
    detail = f"{', '.join(parts)}; {last}"
    if failed:
        todo = (
            "venue-agent orders list --state failed; fix the cause, then venue-agent orders resubmit ID"
            " (or enter the order in the POS by hand)"
        )
        return Finding("orders", "warn", detail, todo)
    if pending and facts.oldest_due is not None and (now - facts.oldest_due).total_seconds() > print_after_seconds:
        todo = "the POS is not taking orders (see the pos check); the kitchen gets fallback tickets meanwhile"
        return Finding("orders", "warn", detail, todo)
    return Finding("orders", "ok", detail)


def judge_disk(free_bytes: int | None, *, min_free_mb: int, path: str, error: str = "") -> Finding:
    """Return the verdict on free space where the outbox lives: fail below min_free_mb, warn below twice it."""
    if free_bytes is None:
        return Finding("disk", "warn", f"cannot tell the free space at {path}: {error}", "check the path exists")
    detail = f"{_mb(free_bytes)} free at {path} (intake refuses orders below {min_free_mb} MB)"
    todo = "free space: old logs (journalctl --vacuum-size=100M), apt caches (apt-get clean), core dumps"
    if free_bytes < min_free_mb * MB:
        return Finding("disk", "fail", detail + ": REFUSING ORDERS NOW", todo)
    if free_bytes < 2 * min_free_mb * MB:
        return Finding("disk", "warn", detail, todo)
    return Finding("disk", "ok", detail)


# ---- clock -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClockFacts:
    """Whether the system clock is NTP-synchronised (None: cannot tell) and where that came from."""

    synchronised: bool | None
    source: str
    detail: str = ""


def parse_timedatectl(output: str) -> bool | None:
    """Return ``NTPSynchronized`` from ``timedatectl show -p NTPSynchronized`` output (None: not in it)."""
    for line in output.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key == "NTPSynchronized":
            return {"yes": True, "no": False}.get(value.strip())
    return None


def adjtimex_synchronised(state: int) -> bool:
    """Return whether adjtimex(2)'s clock state says synchronised (every state but TIME_ERROR, 5)."""
    return state != 5


def judge_clock(facts: ClockFacts) -> Finding:
    """Return the verdict on the clock; not synchronised or unknown is a warning."""
    why = "a wrong clock breaks POS logins (OAuth), signed MQTT commands and pre-order times"
    todo = f"check time sync: timedatectl timesync-status; systemctl status systemd-timesyncd ({why})"
    if facts.synchronised is None:
        return Finding("clock", "warn", f"cannot tell whether the clock is synchronised ({facts.detail})", todo)
    if not facts.synchronised:
        return Finding("clock", "warn", f"NOT synchronised ({facts.source})", todo)
    return Finding("clock", "ok", f"NTP synchronised ({facts.source})")
