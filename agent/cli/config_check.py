"""``venue-agent config check``: every problem at once, where each secret comes from, and a summary.

Shared with ``venue-agent doctor``, whose first checks are exactly these.
"""

from __future__ import annotations

import asyncio
import os
import pwd
from dataclasses import dataclass, field
from typing import Any

from agent.cli import operator
from agent.domain import config
from agent.domain.errors import ConfigError, ConfigNotFound, Problem


@dataclass
class ConfigReport:
    """What ``config check`` found: the loaded context (None when the file does not validate) and its verdicts."""

    context: operator.Context | None
    problems: list[Problem] = field(default_factory=list)
    secret_problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Set when there is no config file at all (the command line then offers ``config init``).
    not_found: ConfigNotFound | None = None

    @property
    def ok(self) -> bool:
        """Whether the service could start with this config (warnings allowed)."""
        return not self.problems and not self.secret_problems

    @property
    def all_problems(self) -> list[Problem]:
        """Return the problems, the secrets' included."""
        return [*self.problems, *self.secret_problems]


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def check(explicit: str | os.PathLike[str] | None) -> ConfigReport:
    """Validate the config as the service would use it; never raises ConfigError (it is in the report)."""
    try:
        ctx = operator.load(explicit)
    except ConfigNotFound as missing:
        return ConfigReport(None, missing.problems, not_found=missing)
    except ConfigError as lenient:
        # The lenient load skipped the secret files; the service's own load lists their problems too.
        try:
            config.load_settings(explicit)
        except ConfigError as strict:
            return ConfigReport(None, strict.problems)
        return ConfigReport(None, lenient.problems)
    source = str(ctx.path)
    report = ConfigReport(ctx)
    for secret in ctx.secrets:
        if secret.error and secret.denied and os.geteuid() != 0:
            report.warnings.append(
                f"{secret.key}: cannot check {secret.describe()} as user {_user()} (it is root-only, as it should"
                " be): run 'sudo venue-agent config check' to check it"
            )
        elif secret.error:
            report.secret_problems.append(Problem(secret.key, secret.error, source))
        if secret.service_problem:
            report.secret_problems.append(Problem(secret.key, secret.service_problem, source))
    from agent.cli.printers import printer_problems

    report.problems.extend(printer_problems(ctx.settings, source))
    if not ctx.unreadable("pos"):  # else the driver would only repeat that a secret is missing
        driver_problem = _driver_problem(ctx.settings, source)
        if driver_problem is not None:
            report.problems.insert(0, driver_problem)
    if ctx.settings.fallback.enabled and not ctx.settings.fallback_printers():
        report.warnings.append("fallback is on but no printer has the 'fallback' role: tickets cannot print")
    return report


def _driver_problem(settings: config.Settings, source: str) -> Problem | None:
    from drivers.pos.errors import PosConfigError
    from drivers.pos.registry import build_driver

    async def build_and_close() -> None:
        driver = build_driver(settings)
        await driver.aclose()

    try:
        asyncio.run(build_and_close())
    except PosConfigError as exc:
        key, _, message = str(exc).partition(": ")
        return Problem(key, message or str(exc), source)
    return None


def summary(report: ConfigReport) -> list[str]:
    """Return the one-screen summary of a valid config."""
    assert report.context is not None
    ctx = report.context
    settings = ctx.settings
    printers = settings.fallback_printers()
    lines = [
        f"{ctx.path}: OK",
        f"  venue        {settings.venue.id} ({settings.venue.name or 'no name'}), {settings.venue.timezone},"
        f" {settings.venue.country or 'no country'}, {settings.venue.currency}",
        f"  intake       {settings.intake.listen}, token {_token_state(ctx)}",
        f"  outbox       {settings.storage.path} ({ctx.outbox_source}; keep {settings.storage.retention_days} days,"
        f" refuse orders below {settings.storage.min_free_mb} MB free)",
        f"  pos          {settings.pos.driver}, timeout {settings.pos.timeout_seconds:g} s,"
        f" at most {settings.pos.rate_limit_per_second:g} requests/s",
        f"  pre-orders   {settings.injection.preorders}"
        + (f" ({settings.injection.buffer_minutes} min before)" if settings.injection.preorders == "buffered" else "")
        + f", unpaid orders {'held' if settings.injection.hold_unpaid else 'sent'}",
        f"  fallback     {'on' if settings.fallback.enabled else 'OFF'},"
        f" after {settings.fallback.print_after_seconds:g} s,"
        f" then {settings.fallback.after_print}; printers: {', '.join(p.name for p in printers) or 'NONE'}",
        f"  mqtt         {'on, ' + str(settings.mqtt.host) if settings.mqtt.enabled else 'off'}",
        f"  tickets      LATE after {settings.tickets.late_after_minutes} min,"
        f" {len(settings.tickets.allergy_words)} extra allergy words,"
        f" QR {settings.tickets.qr_url if settings.tickets.qr == 'order_url' else 'none'}",
    ]
    from agent.cli.printers import describe_printer

    lines.extend(f"  printer      {describe_printer(p)}" for p in settings.printers)
    for secret in ctx.secrets:
        state = "not checked" if secret.error else "readable"
        lines.append(f"  secret       {secret.key} = {secret.value!r}: {secret.describe()}, {state}")
    lines.extend(f"  warning: {w}" for w in report.warnings)
    return lines


def _token_state(ctx: operator.Context) -> str:
    if ctx.settings.intake.token is not None:
        return "set"
    return "set (not readable by this user)" if ctx.unreadable("intake") else "not set"


def as_json(report: ConfigReport) -> dict[str, Any]:
    """Return the report for ``config check --json``."""
    problems = [{"source": p.source, "key": p.key, "message": p.message} for p in report.all_problems]
    if report.context is None:
        return {"ok": False, "problems": problems, "warnings": report.warnings}
    ctx = report.context
    return {
        "ok": report.ok,
        "file": str(ctx.path),
        "problems": problems,
        "warnings": report.warnings,
        "outbox": {"path": str(ctx.outbox), "source": ctx.outbox_source},
        "secrets": [
            {
                "key": s.key,
                "path": str(s.located.path),
                "found_by": s.located.how,
                "readable": s.error is None,
                "error": s.error,
                "service_problem": s.service_problem,
            }
            for s in ctx.secrets
        ],
        "settings": config.redacted(ctx.settings),
    }
