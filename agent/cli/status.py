"""``venue-agent status``: the running agent's health, or what the outbox file holds when it cannot be asked."""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path
from typing import Any

from agent.cli import operator
from agent.cli.client import AgentClient, AgentUnreachable
from agent.outbox import readonly as outbox_readonly
from agent.outbox.identity import diagnose

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def add_commands(sub: Any, config_parent: argparse.ArgumentParser, json_parent: argparse.ArgumentParser) -> None:
    """Add ``status`` to the sub-command parser ``sub``."""
    status = sub.add_parser(
        "status",
        parents=[config_parent, json_parent],
        help="health of the running agent (without it, or without its token: what the outbox file holds)",
    )
    status.set_defaults(handler=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    """Print the running agent's health; without an agent (or its token), what the outbox holds."""
    ctx = operator.load(args.config)
    client = AgentClient(ctx.settings)
    try:
        response = client.call("GET", "/v1/health")
    except AgentUnreachable as exc:
        return _status_from_outbox(ctx, args.json, running=False, why=str(exc))
    finally:
        client.close()
    if response.status_code == 401:
        return _status_from_outbox(ctx, args.json, running=True, why=f"{client.base} refused: {ctx.token_hint()}")
    health = response.json()
    if args.json:
        print(json.dumps(health, indent=2))
    else:
        print(_format_health(health))
    return EXIT_OK if response.status_code == 200 else EXIT_FAILURE


def _status_from_outbox(ctx: operator.Context, as_json: bool, *, running: bool, why: str) -> int:
    counts = _offline_counts(ctx.outbox)
    refusal = diagnose(ctx.outbox)
    refused = {"reason": refusal.reason, "message": refusal.message} if refusal else None
    outbox = {"path": str(ctx.outbox), "source": ctx.outbox_source, "counts": counts}
    if as_json:
        body = {"running": running, "error": why, "outbox": counts, "refused": refused, "file": outbox}
        print(json.dumps(body, indent=2))
    else:
        print(f"agent: RUNNING, but {why}" if running else f"agent: NOT RUNNING ({why})")
        print(f"outbox: {ctx.outbox} ({ctx.outbox_source})")
        if refusal is not None:
            print(f"outbox: REFUSED ({refusal.reason}): {refusal.message}")
        if counts is not None:
            print("outbox: " + (", ".join(f"{k} {v}" for k, v in counts.items() if v) or "empty"))
    return EXIT_OK if running else EXIT_FAILURE


def _format_health(h: dict[str, Any]) -> str:
    pos = h["pos"]
    waiting = {k: v for k, v in h["outbox"].items() if v}
    lines = [
        f"agent    {'READY' if h.get('ready') else 'NOT READY'}, version {h['version']}, up {h['uptime_s']:.0f} s",
        f"pos      {pos['driver']}: {pos['state']}, circuit {pos['circuit']}"
        + (f", {pos['latency_ms']:.0f} ms" if pos.get("latency_ms") is not None else "")
        + (f" (last error: {pos['last_error']})" if pos.get("last_error") else "")
        + (
            "; readiness " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in pos["conditions"].items())
            if pos.get("conditions")
            else ""
        ),
        "outbox   " + (", ".join(f"{v} {k}" for k, v in waiting.items()) or "nothing waiting"),
        f"oldest   {h['oldest_pending_age_s']} s waiting"
        if h.get("oldest_pending_age_s") is not None
        else "oldest   -",
        f"last in  {h.get('last_injected_at') or 'never'}",
        "printers " + (", ".join(f"{p['name']} {p['state']}" for p in h["printers"]) or "none configured"),
        f"disk     {h['disk_free_mb']} MB free, outbox {h['db_size_mb']} MB, agent {h['rss_mb']} MB RSS",
    ]
    return "\n".join(lines)


def _offline_counts(path: Path) -> dict[str, int] | None:
    if not path.exists() or path.stat().st_size == 0:  # SQLite would delete the -wal of an empty file
        return None
    try:
        conn = outbox_readonly.connect(path)
        try:
            return outbox_readonly.counts(conn)
        finally:
            conn.close()
    except (sqlite3.Error, OSError):
        return None
