"""``venue-agent doctor [--json] [--bundle FILE [--with-orders]]``: the one command a technician runs first.

Exit 0 when every check is ok, 1 with warnings, 2 with failures. The bundle is a tar.gz for support: the redacted
config, the doctor report, the unit's last journal lines and outbox statistics; customer data only with
``--with-orders``. Every secret value the config holds is replaced by ``***`` in every file of the bundle.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import sqlite3
import sys
import tarfile
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from agent import __version__
from agent.cli import config_check
from agent.cli.doctor import Finding, as_json, exit_code, render
from agent.cli.doctor_probes import UNIT, run_checks, run_tool
from agent.cli.operator import Context
from agent.cli.table import output_width
from agent.cli.tomlout import dumps
from agent.domain import config
from agent.domain.errors import ConfigError
from agent.outbox import readonly as outbox_readonly

JOURNAL_LINES = 2000
RECENT_ORDERS = 200


def add_commands(sub: Any, config_parent: argparse.ArgumentParser, json_parent: argparse.ArgumentParser) -> None:
    """Add ``doctor`` to the sub-command parser ``sub``."""
    doctor = sub.add_parser(
        "doctor",
        parents=[config_parent, json_parent],
        help="check everything a venue needs (config, secrets, agent, outbox, disk, clock, POS, printers, MQTT)",
        description="One line per check: ok, warn or fail, and what to do. Exit 0 all ok, 1 warnings, 2 failures.",
    )
    doctor.add_argument("--bundle", metavar="FILE", help="also write a support archive (tar.gz) to FILE")
    doctor.add_argument(
        "--with-orders", action="store_true", help="put recent orders (customer data) in the bundle too"
    )
    doctor.set_defaults(handler=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    """Run every check; print the report (or JSON); write the bundle when asked; exit 0/1/2."""
    if args.with_orders and not args.bundle:
        print("error: --with-orders only goes with --bundle FILE", file=sys.stderr)
        return 2
    started = time.monotonic()
    report = config_check.check(args.config)
    findings = asyncio.run(run_checks(report))
    ctx = report.context
    meta = {
        "version": __version__,
        "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": str(ctx.path) if ctx else None,
        "outbox": str(ctx.outbox) if ctx else None,
        "seconds": round(time.monotonic() - started, 1),
    }
    document = as_json(findings, **meta)
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(render(findings, width=output_width()))
    if args.bundle:
        path = Path(args.bundle)
        size = write_bundle(path, report, findings, document, with_orders=args.with_orders, explicit=args.config)
        print(f"wrote {path} ({size / 1024:.0f} KB)", file=sys.stderr)
    return exit_code(findings)


# ---- the support bundle ------------------------------------------------------------------------------


def secret_values(ctx: Context | None) -> list[str]:
    """Return every secret value the loaded config holds (to be scrubbed from anything written)."""
    if ctx is None:
        return []
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, SecretStr):
            found.append(node.get_secret_value())
        elif isinstance(node, BaseModel):
            for name in type(node).model_fields:
                walk(getattr(node, name))
        elif isinstance(node, list | tuple):
            for item in node:
                walk(item)

    walk(ctx.settings)
    return sorted({v for v in found if len(v) >= 4}, key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    """Return ``text`` with every secret value replaced by ``***``."""
    for value in secrets:
        text = text.replace(value, "***")
    return text


def write_bundle(
    path: Path,
    report: config_check.ConfigReport,
    findings: list[Finding],
    document: dict[str, Any],
    *,
    with_orders: bool,
    explicit: str | None = None,
) -> int:
    """Write the support archive (mode 0600) and return its size in bytes."""
    ctx = report.context
    members: dict[str, str] = {
        "doctor.txt": render(findings) + "\n",
        "doctor.json": json.dumps(document, indent=2),
        "config-check.json": json.dumps(config_check.as_json(report), indent=2, default=str),
        "system.txt": _system(),
    }
    members.update(_config_files(report, explicit))
    members.update(_journal())
    if ctx is not None:
        members.update(_outbox(ctx, with_orders=with_orders))
    members["README.txt"] = (
        f"venue-agent {__version__} support bundle, {document.get('checked_at')}\n"
        f"Secrets are replaced by ***; customer data {'INCLUDED (orders.json)' if with_orders else 'not included'}.\n"
        + "".join(f"  {name}\n" for name in sorted(members))
    )
    secrets = secret_values(ctx)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle, tarfile.open(fileobj=handle, mode="w:gz") as archive:
        now = time.time()
        for name, text in sorted(members.items()):
            data = scrub(text, secrets).encode("utf-8")
            info = tarfile.TarInfo(f"venue-agent-doctor/{name}")
            info.size, info.mtime, info.mode = len(data), now, 0o600
            archive.addfile(info, io.BytesIO(data))
    return path.stat().st_size


def _config_files(report: config_check.ConfigReport, explicit: str | None) -> dict[str, str]:
    if report.context is not None:
        return {"config.toml": dumps(config.redacted(report.context.settings))}
    # The file does not validate: its own text, parsed and redacted key by key (never the raw bytes).
    try:
        source = config.find_config(explicit)
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except (ConfigError, OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return {"config-unreadable.txt": f"the config could not be read or parsed, so it is not included: {exc}\n"}
    return {"config-invalid-redacted.toml": dumps(_redact_raw(raw))}


def _redact_raw(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: ("***" if k in config.SECRET_KEYS else _redact_raw(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_redact_raw(v) for v in node]
    return node


def _journal() -> dict[str, str]:
    done = run_tool("journalctl", "-u", UNIT, "-n", str(JOURNAL_LINES), "-o", "json", "--no-pager", timeout=30)
    if done is None:
        return {"journal-note.txt": "journalctl is not installed here, or did not answer within 30 s\n"}
    if done.returncode == 0 and done.stdout.strip():
        return {"journal.jsonl": done.stdout}
    why = done.stderr.strip() or ("no lines" if done.returncode == 0 else f"exit {done.returncode}")
    return {"journal-note.txt": f"journalctl -u {UNIT} gave no journal lines: {why}\n"}


def _system() -> str:
    lines = [
        f"venue-agent {__version__}, Python {platform.python_version()}, {platform.platform()}",
        f"user {os.geteuid()}, host {platform.node()}",
    ]
    try:
        lines.append(Path("/etc/os-release").read_text(encoding="utf-8").strip())
    except OSError:
        pass
    fields = "ActiveState,SubState,Result,NRestarts,ExecMainStatus,ExecMainStartTimestamp"
    done = run_tool("systemctl", "show", UNIT, "--no-pager", "-p", fields)
    lines.append(done.stdout.strip() if done is not None and done.returncode == 0 else "systemctl: not available here")
    return "\n".join(lines) + "\n"


def _outbox(ctx: Context, *, with_orders: bool) -> dict[str, str]:
    try:
        conn = outbox_readonly.connect(ctx.outbox)
    except (sqlite3.Error, OSError) as exc:
        return {"outbox-stats.json": json.dumps({"path": str(ctx.outbox), "error": str(exc)}, indent=2)}
    try:
        files = {"outbox-stats.json": json.dumps(outbox_readonly.statistics(conn, ctx.outbox), indent=2)}
        if with_orders:
            files["orders.json"] = json.dumps(_orders(conn), indent=2)
    finally:
        conn.close()
    return files


def _orders(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Return every order still open plus the most recent ones, each with its tickets and history."""
    ids = [r[0] for r in conn.execute("SELECT id FROM orders ORDER BY received_at DESC LIMIT ?", (RECENT_ORDERS,))]
    ids += [r[0] for r in conn.execute("SELECT id FROM orders WHERE state NOT IN ('injected', 'cancelled', 'skipped')")]
    seen: list[dict[str, Any]] = []
    for order_id in dict.fromkeys(ids):
        detail = outbox_readonly.detail(conn, order_id)
        if detail is not None:
            seen.append(detail)
    return seen
