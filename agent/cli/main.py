"""The ``venue-agent`` command line (SPEC §10). Exit codes: 0 ok, 1 runtime failure, 2 bad usage or config."""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agent import __version__
from agent.cli import operator
from agent.cli.client import AgentClient, AgentUnreachable
from agent.cli.tomlout import dumps
from agent.domain.config import load_settings, redacted
from agent.domain.errors import AgentError, ConfigError, OutboxRefused
from agent.domain.states import State
from agent.outbox import readonly as outbox_readonly
from agent.outbox.identity import diagnose
from agent.service import logs

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    # Commands other than ``run`` and ``demo`` (which set up their own) log warnings only, to stderr:
    # stdout carries their output, which scripts parse.
    logs.configure("warning", "console")
    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        _config_problems(exc, getattr(args, "config", None))
        return EXIT_USAGE
    except AgentUnreachable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE
    return code


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="venue-agent",
        description="Online orders into the POS, or onto paper.",
        epilog=(
            "On an installed box every command but 'run' finds what the service uses: relative *_file secrets from"
            " $CREDENTIALS_DIRECTORY, else the unit's LoadCredential= source, else /etc/venue-agent/credentials/;"
            " the outbox from storage.path, else /var/lib/venue-agent/. Run them with sudo (read-only ones also as"
            " a member of the group venue-agent). First stop for a technician: venue-agent doctor."
        ),
    )
    parser.add_argument("--version", action="version", version=f"venue-agent {__version__}")
    config_parent = argparse.ArgumentParser(add_help=False)
    config_parent.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: $VENUE_AGENT_CONFIG, /etc/venue-agent/agent.toml, then the user config dir)",
    )
    json_parent = argparse.ArgumentParser(add_help=False)
    json_parent.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(metavar="COMMAND")

    run = sub.add_parser("run", parents=[config_parent], help="run the agent in the foreground")
    run.set_defaults(handler=cmd_run)

    config = sub.add_parser("config", help="check or show the configuration")
    config_sub = config.add_subparsers(metavar="ACTION")
    check = config_sub.add_parser(
        "check",
        parents=[config_parent, json_parent],
        help="report every problem, and where each secret and the outbox are found",
    )
    check.set_defaults(handler=cmd_config_check)
    show = config_sub.add_parser("show", parents=[config_parent, json_parent], help="effective settings, redacted")
    show.set_defaults(handler=cmd_config_show)

    status = sub.add_parser(
        "status",
        parents=[config_parent, json_parent],
        help="health of the running agent (without it, or without its token: what the outbox file holds)",
    )
    status.set_defaults(handler=cmd_status)

    orders = sub.add_parser("orders", help="list, inspect and act on orders")
    orders_sub = orders.add_subparsers(metavar="ACTION")
    listing = orders_sub.add_parser(
        "list",
        parents=[config_parent, json_parent],
        help="newest first (from the outbox file when the agent is stopped)",
    )
    listing.add_argument("--state", choices=[s.value for s in State])
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(handler=cmd_orders_list)
    for action, text in (
        ("show", "one order with its history (from the outbox file when the agent is stopped)"),
        ("resubmit", "send a failed order again (through the running agent)"),
        ("cancel", "cancel an order the POS does not have yet (through the running agent)"),
        ("reprint", "print the ticket again, marked REPRINT (through the running agent)"),
    ):
        p = orders_sub.add_parser(action, parents=[config_parent, json_parent], help=text)
        p.add_argument("order_id")
        p.set_defaults(handler=cmd_orders_show if action == "show" else _order_action(action))

    from agent.cli import printers as cli_printers

    cli_printers.add_commands(sub, config_parent, json_parent)
    from agent.fleet import console, sim_cli

    console.add_commands(sub, config_parent, json_parent)
    sim_cli.add_commands(sub)
    from agent.cli import pos as cli_pos

    cli_pos.add_commands(sub, config_parent, json_parent)
    from agent.cli import outbox as cli_outbox

    cli_outbox.add_commands(sub, config_parent, json_parent)
    from agent.cli import doctor_command as cli_doctor

    cli_doctor.add_commands(sub, config_parent, json_parent)

    sim = sub.add_parser("pos-sim", help="run the POS simulator (for demos, rehearsals and tests)")
    from drivers.pos import simulator_cli

    simulator_cli.add_arguments(sim)
    sim.set_defaults(handler=simulator_cli.run)

    demo = sub.add_parser("demo", help="a guided tour: simulator + agent on loopback, a handful of orders")
    demo.add_argument("--output", default="demo-output", help="where tickets and the summary go")
    demo.add_argument("--fast", action="store_true", help="shorter pauses (for tests)")
    demo.set_defaults(handler=cmd_demo)
    return parser


def _config_problems(exc: ConfigError, path: str | None) -> None:
    # Under systemd (a failed start) these lines reach the journal as errors, not as plain output.
    logs.error_line(f"config check: {len(exc.problems)} problem(s)")
    for problem in exc.problems:
        logs.error_line(f"  {problem}")


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon until SIGTERM/SIGINT."""
    settings, _ = load_settings(args.config)
    logs.configure(settings.logging.level, settings.logging.format)
    from agent.service.service import run_agent
    from drivers.pos.errors import PosConfigError

    try:
        return asyncio.run(run_agent(settings))
    except PosConfigError as exc:
        logs.error_line(f"error: {exc}")
        return EXIT_USAGE
    except OutboxRefused as exc:  # restarting cannot fix it: exit 2, which the unit does not restart
        logs.error_line(f"error: cannot start: {exc}")
        return EXIT_USAGE
    except (AgentError, OSError) as exc:
        logs.error_line(f"error: cannot start: {exc}")
        return EXIT_FAILURE


def cmd_config_check(args: argparse.Namespace) -> int:
    """Validate the config as the service would use it; print a summary (0) or every problem (2)."""
    from agent.cli import config_check

    report = config_check.check(args.config)
    if args.json:
        print(json.dumps(config_check.as_json(report), indent=2))
        return EXIT_OK if report.ok else EXIT_USAGE
    if not report.ok:
        raise ConfigError(report.all_problems)
    print("\n".join(config_check.summary(report)))
    return EXIT_OK


def cmd_config_show(args: argparse.Namespace) -> int:
    """Print the effective settings with every secret redacted."""
    data = redacted(operator.load(args.config).settings)
    print(json.dumps(data, indent=2) if args.json else dumps(data), end="" if not args.json else "\n")
    return EXIT_OK


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


def _ask_agent(ctx: operator.Context, path: str, params: dict[str, Any] | None = None) -> Any:
    """GET ``path`` from the local API; None when the agent is not running or refuses this user (said on stderr)."""
    client = AgentClient(ctx.settings)
    try:
        response = client.call("GET", path, params=params)
    except AgentUnreachable as exc:
        print(f"venue-agent: {exc}; reading the outbox file instead", file=sys.stderr)
        return None
    finally:
        client.close()
    if response.status_code == 401:
        hint = ctx.token_hint()
        print(f"venue-agent: {client.base} refused: {hint}; reading the outbox file instead", file=sys.stderr)
        return None
    return response


def _from_outbox(ctx: operator.Context, read: Callable[[sqlite3.Connection], Any]) -> Any:
    ctx.announce_outbox()
    conn = outbox_readonly.connect(ctx.outbox)
    try:
        return read(conn)
    finally:
        conn.close()


def cmd_orders_list(args: argparse.Namespace) -> int:
    """List orders, newest first (from the outbox file when the agent cannot be asked)."""
    ctx = operator.load(args.config)
    params: dict[str, Any] = {"limit": args.limit}
    if args.state:
        params["state"] = args.state
    response = _ask_agent(ctx, "/v1/orders", params)
    if response is None:
        try:
            orders = _from_outbox(ctx, lambda c: outbox_readonly.list_orders(c, state=args.state, limit=args.limit))
        except (sqlite3.Error, OSError) as exc:
            print(f"error: cannot read the outbox {ctx.outbox}: {exc}", file=sys.stderr)
            return EXIT_FAILURE
    elif response.status_code != 200:
        return _print_problem(response)
    else:
        orders = response.json()["orders"]
    if args.json:
        print(json.dumps(orders, indent=2))
        return EXIT_OK
    if not orders:
        print("no orders")
        return EXIT_OK
    print(f"{'RECEIVED':<20} {'ORDER':<24} {'CODE':<8} {'STATE':<12} {'TRIES':>5}  {'CUSTOMER':<18} ERROR")
    for o in orders:
        error = f"{o['error_class']}: {o['last_error']}" if o.get("error_class") else (o.get("last_error") or "")
        print(
            f"{o['received_at'][:19]:<20} {o['order_id'][:24]:<24} {o['display_code']:<8} {o['state']:<12}"
            f" {o['attempts']:>5}  {(o.get('customer') or '-')[:18]:<18} {error[:60]}"
        )
    return EXIT_OK


def cmd_orders_show(args: argparse.Namespace) -> int:
    """Show one order with its tickets and history (from the outbox file when the agent cannot be asked)."""
    ctx = operator.load(args.config)
    response = _ask_agent(ctx, f"/v1/orders/{args.order_id}")
    if response is None:
        try:
            detail = _from_outbox(ctx, lambda c: outbox_readonly.detail(c, args.order_id))
        except (sqlite3.Error, OSError) as exc:
            print(f"error: cannot read the outbox {ctx.outbox}: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        if detail is None:
            print(f"error: 404 no order with id {args.order_id!r}", file=sys.stderr)
            return EXIT_USAGE
    elif response.status_code != 200:
        return _print_problem(response)
    else:
        detail = response.json()
    if args.json:
        print(json.dumps(detail, indent=2))
        return EXIT_OK
    order = detail["order"]
    print(f"order    {detail['order_id']} (code {detail['display_code']}, revision {detail['revision']})")
    print(
        f"state    {detail['state']}"
        + (f" - {detail['error_class']}: {detail['last_error']}" if detail.get("error_class") else "")
    )
    print(f"attempts {detail['attempts']}, POS reference {detail.get('pos_reference') or '-'}")
    customer = (order.get("customer") or {}).get("name") or "-"
    print(
        f"customer {customer}; {order['fulfillment']['type']}; total {order['total']} {order['payment']['currency']}"
        f" minor units, payment {order['payment']['status']}"
    )
    for item in order["items"]:
        print(f"         {item['quantity']} x {item['name']}")
    print("tickets  " + (", ".join(f"{t['kind']} {t['state']}" for t in detail["tickets"]) or "none"))
    print("history")
    for event in detail["events"]:
        extra = event["detail"].get("reason") or event["detail"].get("error") or ""
        print(f"  {event['ts'][:23]}  {event['type']:<20} {event['state'] or '':<12} {extra}")
    return EXIT_OK


def _order_action(action: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        ctx = operator.load(args.config)
        client = AgentClient(ctx.settings)
        try:
            response = client.call("POST", f"/v1/orders/{args.order_id}/{action}")
        finally:
            client.close()
        if response.status_code == 401:
            print(f"error: {client.base} refused: {ctx.token_hint()}", file=sys.stderr)
            return EXIT_FAILURE
        if response.status_code >= 300:
            return _print_problem(response)
        body = response.json()
        print(
            json.dumps(body)
            if args.json
            else f"{action}: {args.order_id} -> " + ", ".join(f"{k} {v}" for k, v in body.items() if k != "order_id")
        )
        return EXIT_OK

    return handler


def _print_problem(response: Any) -> int:
    try:
        body = response.json()
        detail = body.get("detail", "")
        errors = body.get("errors") or []
    except ValueError:
        detail, errors = response.text[:200], []
    print(f"error: {response.status_code} {detail}", file=sys.stderr)
    for error in errors:
        print(f"  {'.'.join(map(str, error['loc']))}: {error['msg']}", file=sys.stderr)
    return EXIT_USAGE if response.status_code in (404, 409, 422) else EXIT_FAILURE


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the guided demo."""
    from agent.cli.demo import run_demo

    return run_demo(Path(args.output), fast=args.fast)


if __name__ == "__main__":
    sys.exit(main())
