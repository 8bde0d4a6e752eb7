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

from agent import __version__, logs
from agent.client import AgentClient, AgentUnreachable
from agent.config import Settings, load_settings, redacted
from agent.errors import AgentError, ConfigError, OutboxRefused
from agent.outbox_identity import diagnose
from agent.states import State
from agent.tomlout import dumps

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
    parser = argparse.ArgumentParser(prog="venue-agent", description="Online orders into the POS, or onto paper.")
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
    check = config_sub.add_parser("check", parents=[config_parent, json_parent], help="report every problem")
    check.set_defaults(handler=cmd_config_check)
    show = config_sub.add_parser("show", parents=[config_parent, json_parent], help="effective settings, redacted")
    show.set_defaults(handler=cmd_config_show)

    status = sub.add_parser("status", parents=[config_parent, json_parent], help="health of the running agent")
    status.set_defaults(handler=cmd_status)

    orders = sub.add_parser("orders", help="list, inspect and act on orders")
    orders_sub = orders.add_subparsers(metavar="ACTION")
    listing = orders_sub.add_parser("list", parents=[config_parent, json_parent], help="newest first")
    listing.add_argument("--state", choices=[s.value for s in State])
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(handler=cmd_orders_list)
    for action, text in (
        ("show", "one order with its history"),
        ("resubmit", "send a failed order again"),
        ("cancel", "cancel an order the POS does not have yet"),
        ("reprint", "print the ticket again, marked REPRINT"),
    ):
        p = orders_sub.add_parser(action, parents=[config_parent, json_parent], help=text)
        p.add_argument("order_id")
        p.set_defaults(handler=cmd_orders_show if action == "show" else _order_action(action))

    from agent import cli_printers

    cli_printers.add_commands(sub, config_parent, json_parent)
    from agent import console

    console.add_commands(sub, config_parent, json_parent)
    from agent import cli_pos

    cli_pos.add_commands(sub, config_parent, json_parent)
    from agent import cli_outbox

    cli_outbox.add_commands(sub, config_parent, json_parent)

    sim = sub.add_parser("pos-sim", help="run the POS simulator (for demos, rehearsals and tests)")
    from drivers.pos import simulator_cli

    simulator_cli.add_arguments(sim)
    sim.set_defaults(handler=simulator_cli.run)

    demo = sub.add_parser("demo", help="a guided tour: simulator + agent on loopback, a handful of orders")
    demo.add_argument("--output", default="demo-output", help="where tickets and the summary go")
    demo.add_argument("--fast", action="store_true", help="shorter pauses (for tests)")
    demo.set_defaults(handler=cmd_demo)
    return parser


def _load(args: argparse.Namespace) -> Settings:
    settings, _ = load_settings(args.config)
    return settings


def _config_problems(exc: ConfigError, path: str | None) -> None:
    print(f"config check: {len(exc.problems)} problem(s)", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon until SIGTERM/SIGINT."""
    settings = _load(args)
    logs.configure(settings.logging.level, settings.logging.format)
    from agent.service import run_agent
    from drivers.pos.errors import PosConfigError

    try:
        return asyncio.run(run_agent(settings))
    except PosConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OutboxRefused as exc:  # restarting cannot fix it: exit 2, which the unit does not restart
        print(f"error: cannot start: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AgentError as exc:
        print(f"error: cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:
        print(f"error: cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def cmd_config_check(args: argparse.Namespace) -> int:
    """Validate the config file; print a one-screen summary or every problem."""
    try:
        settings, path = load_settings(args.config)
    except ConfigError as exc:
        if args.json:
            print(
                json.dumps(
                    {
                        "ok": False,
                        "problems": [{"source": p.source, "key": p.key, "message": p.message} for p in exc.problems],
                    },
                    indent=2,
                )
            )
            return EXIT_USAGE
        raise
    from agent.cli_printers import printer_problems
    from drivers.pos.errors import PosConfigError
    from drivers.pos.registry import build_driver

    problems = printer_problems(settings, str(path))
    try:
        asyncio.run(_build_and_close(settings, build_driver))
    except PosConfigError as exc:
        problems.insert(0, _problem_from(str(exc), str(path)))
    if problems:
        if args.json:
            listed = [{"source": p.source, "key": p.key, "message": p.message} for p in problems]
            print(json.dumps({"ok": False, "problems": listed}, indent=2))
            return EXIT_USAGE
        raise ConfigError(problems)
    if args.json:
        print(json.dumps({"ok": True, "file": str(path), "settings": redacted(settings)}, indent=2))
        return EXIT_OK
    printers = settings.fallback_printers()
    lines = [
        f"{path}: OK",
        f"  venue        {settings.venue.id} ({settings.venue.name or 'no name'}), {settings.venue.timezone},"
        f" {settings.venue.currency}",
        f"  intake       {settings.intake.listen}, token {'set' if settings.intake.token else 'not set'}",
        f"  outbox       {settings.storage.path} (keep {settings.storage.retention_days} days,"
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
    from agent.cli_printers import describe_printer

    lines.extend(f"  printer      {describe_printer(p)}" for p in settings.printers)
    if settings.fallback.enabled and not printers:
        lines.append("  warning: fallback is on but no printer has the 'fallback' role: tickets cannot print")
    print("\n".join(lines))
    return EXIT_OK


async def _build_and_close(settings: Settings, build: Callable[[Settings], Any]) -> None:
    driver = build(settings)
    await driver.aclose()


def _problem_from(text: str, source: str) -> Any:
    from agent.errors import Problem

    key, _, message = text.partition(": ")
    return Problem(key, message or text, source)


def cmd_config_show(args: argparse.Namespace) -> int:
    """Print the effective settings with every secret redacted."""
    settings = _load(args)
    data = redacted(settings)
    print(json.dumps(data, indent=2) if args.json else dumps(data), end="" if not args.json else "\n")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    """Print the running agent's health; without an agent, what the outbox holds."""
    settings = _load(args)
    client = AgentClient(settings)
    try:
        response = client.call("GET", "/v1/health")
    except AgentUnreachable as exc:
        counts = _offline_counts(settings.storage.path)
        refusal = diagnose(settings.storage.path)
        refused = {"reason": refusal.reason, "message": refusal.message} if refusal else None
        if args.json:
            print(json.dumps({"running": False, "error": str(exc), "outbox": counts, "refused": refused}, indent=2))
        else:
            print(f"agent: NOT RUNNING ({exc})")
            if refusal is not None:
                print(f"outbox: REFUSED ({refusal.reason}): {refusal.message}")
            if counts is not None:
                print("outbox: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "outbox: empty")
        return EXIT_FAILURE
    finally:
        client.close()
    health = response.json()
    if args.json:
        print(json.dumps(health, indent=2))
    else:
        print(_format_health(health))
    return EXIT_OK if response.status_code == 200 else EXIT_FAILURE


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
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
        try:
            rows = conn.execute("SELECT state, COUNT(*) FROM orders GROUP BY state").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return {str(state): int(count) for state, count in rows}


def cmd_orders_list(args: argparse.Namespace) -> int:
    """List orders, newest first."""
    settings = _load(args)
    client = AgentClient(settings)
    try:
        params: dict[str, Any] = {"limit": args.limit}
        if args.state:
            params["state"] = args.state
        response = client.call("GET", "/v1/orders", params=params)
    finally:
        client.close()
    if response.status_code != 200:
        return _print_problem(response)
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
    """Show one order with its tickets and history."""
    settings = _load(args)
    client = AgentClient(settings)
    try:
        response = client.call("GET", f"/v1/orders/{args.order_id}")
    finally:
        client.close()
    if response.status_code != 200:
        return _print_problem(response)
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
        settings = _load(args)
        client = AgentClient(settings)
        try:
            response = client.call("POST", f"/v1/orders/{args.order_id}/{action}")
        finally:
            client.close()
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
    from agent.demo import run_demo

    return run_demo(Path(args.output), fast=args.fast)


if __name__ == "__main__":
    sys.exit(main())
