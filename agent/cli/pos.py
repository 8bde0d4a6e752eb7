"""The POS commands of the command line: ``snoozes list|clear`` and ``pos authorize``."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.cli import operator
from agent.cli.client import AgentClient, AgentUnreachable
from agent.cli.table import output_width, table
from agent.domain.config import Settings
from agent.outbox import readonly as outbox_readonly
from agent.outbox import snoozes

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def add_commands(sub: Any, config_parent: argparse.ArgumentParser, json_parent: argparse.ArgumentParser) -> None:
    """Add ``snoozes`` and ``pos`` to the sub-command parser ``sub``."""
    snooze = sub.add_parser("snoozes", help="items the POS reported sold out, snoozed until 08:00")
    snooze_sub = snooze.add_subparsers(metavar="ACTION")
    listing = snooze_sub.add_parser("list", parents=[config_parent, json_parent], help="snoozes in force")
    listing.set_defaults(handler=cmd_snoozes_list)
    clearing = snooze_sub.add_parser(
        "clear", parents=[config_parent], help="release snoozed SKUs (through the running agent, if it runs)"
    )
    clearing.add_argument("skus", nargs="*", metavar="SKU")
    clearing.add_argument("--all", action="store_true", help="release every snoozed SKU")
    clearing.set_defaults(handler=cmd_snoozes_clear)

    pos = sub.add_parser("pos", help="the POS connection")
    pos_sub = pos.add_subparsers(metavar="ACTION")
    authorize = pos_sub.add_parser(
        "authorize", parents=[config_parent], help="give the agent a new Lightspeed refresh token (stdin or --file)"
    )
    authorize.add_argument("--file", metavar="PATH", help="read the token from this file (default: stdin)")
    authorize.set_defaults(handler=cmd_pos_authorize)


def _connect(settings: Settings) -> sqlite3.Connection | None:
    """Open the outbox for writing (only while the agent is stopped: it is then the only writer)."""
    path = settings.storage.path
    if not path.exists():
        return None
    conn = sqlite3.connect(path, timeout=10)
    conn.row_factory = sqlite3.Row
    return conn


def cmd_snoozes_list(args: argparse.Namespace) -> int:
    """Print the snoozes in force, with their end in venue local time (the outbox file, opened read-only)."""
    ctx = operator.load(args.config)
    settings = ctx.settings
    rows: list[snoozes.Snooze] = []
    if settings.storage.path.exists():
        ctx.announce_outbox()
        try:
            conn = outbox_readonly.connect(settings.storage.path)
        except (sqlite3.Error, OSError) as exc:
            print(f"error: cannot read the outbox {settings.storage.path}: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        try:
            rows = snoozes.active(conn, now=datetime.now(UTC))
        except sqlite3.OperationalError:
            rows = []  # an outbox from before snoozes existed has none
        finally:
            conn.close()
    if args.json:
        listed = [
            {
                "sku": s.sku,
                "until": s.until.isoformat() if s.until else None,
                "source": s.source,
                "reason": s.reason,
                "order_id": s.order_id,
            }
            for s in rows
        ]
        print(json.dumps(listed, indent=2))
        return EXIT_OK
    if not rows:
        print("no items are snoozed")
        return EXIT_OK
    tz = settings.venue.tz
    cells = [
        [s.sku, s.until.astimezone(tz).strftime("%a %d %b %H:%M") if s.until else "cleared by hand", s.source, s.reason]
        for s in rows
    ]
    print("\n".join(table(cells, header=["SKU", "UNTIL", "SOURCE", "REASON"], width=output_width())))
    return EXIT_OK


def cmd_snoozes_clear(args: argparse.Namespace) -> int:
    """Release the named SKUs (or all with --all) through the running agent, else in the outbox file; 2 on bad usage."""
    if bool(args.skus) == bool(args.all):
        print("error: name the SKUs to release, or give --all", file=sys.stderr)
        return EXIT_USAGE
    ctx = operator.load(args.config)
    body: dict[str, Any] = {"all": True} if args.all else {"skus": args.skus}
    client = AgentClient(ctx.settings)
    try:
        response = client.call("POST", "/v1/snoozes/clear", json=body)
    except AgentUnreachable:
        response = None
    finally:
        client.close()
    if response is None:
        cleared = _clear_in_outbox(ctx, args)
        if cleared is None:
            return EXIT_FAILURE
    elif response.status_code == 401:
        print(f"error: {client.base} refused: {ctx.token_hint()}", file=sys.stderr)
        return EXIT_FAILURE
    elif response.status_code != 200:
        print(f"error: the agent refused: {response.status_code} {response.text[:200]}", file=sys.stderr)
        return EXIT_FAILURE
    else:
        cleared = list(response.json()["released"])
    missing = sorted(set(args.skus) - set(cleared))
    print(f"released: {', '.join(cleared) or 'nothing'}")
    if missing:
        print(f"not snoozed: {', '.join(missing)}", file=sys.stderr)
    return EXIT_OK


def _clear_in_outbox(ctx: operator.Context, args: argparse.Namespace) -> list[str] | None:
    """With the agent stopped, write the outbox file directly (it is the only writer then)."""
    ctx.announce_outbox()
    conn = _connect(ctx.settings)
    if conn is None:
        print(f"error: no outbox at {ctx.outbox}", file=sys.stderr)
        return None
    try:
        with conn:
            return snoozes.clear(conn, None if args.all else args.skus, now=datetime.now(UTC), source="technician")
    finally:
        conn.close()


def cmd_pos_authorize(args: argparse.Namespace) -> int:
    """Hand a new refresh token to the running agent (or store it for its next start); never echo it."""
    ctx = operator.load(args.config)
    settings = ctx.settings
    if settings.pos.driver != "lightspeed_k":
        driver = settings.pos.driver
        print(f"error: pos.driver is {driver!r}; only 'lightspeed_k' takes a refresh token", file=sys.stderr)
        return EXIT_USAGE
    text = Path(args.file).read_text(encoding="utf-8") if args.file else sys.stdin.read()
    token = text.strip()
    if not token or any(ch.isspace() for ch in token):
        print("error: expected one refresh token (no spaces), got nothing usable", file=sys.stderr)
        return EXIT_USAGE
    client = AgentClient(settings)
    try:
        response = client.call("POST", "/v1/pos/authorize", json={"refresh_token": token})
    except AgentUnreachable:
        ctx.announce_outbox()
        return _store_for_next_start(settings, token)
    finally:
        client.close()
    if response.status_code == 401:
        print(f"error: {client.base} refused: {ctx.token_hint()}", file=sys.stderr)
        return EXIT_FAILURE
    if response.status_code != 200:
        print(f"error: the agent refused the token: {response.json().get('detail')}", file=sys.stderr)
        return EXIT_FAILURE
    requeued = response.json().get("requeued", 0)
    print(f"authorised: the agent uses the new token now; {requeued} order(s) that failed on credentials are queued")
    return EXIT_OK


def refresh_token_key(settings: Settings) -> str:
    """Return where the Lightspeed driver keeps the rotated refresh token in the outbox's key/value table."""
    lightspeed = settings.pos.lightspeed_k
    location = lightspeed.business_location_id if lightspeed else None
    return f"pos.lightspeed_k.{location}.refresh_token"


def _store_for_next_start(settings: Settings, token: str) -> int:
    conn = _connect(settings)
    if conn is None:
        print(
            "the agent is not running and has no outbox yet: put the token in pos.lightspeed_k.refresh_token_file",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    try:
        with conn:
            conn.execute(
                "INSERT INTO kv (key, value, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (refresh_token_key(settings), token, now),
            )
    finally:
        conn.close()
    print("stored: the agent is not running; it uses the new token when it starts")
    return EXIT_OK
