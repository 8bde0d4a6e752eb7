"""The printer commands of the command line: ``print-test``, ``ticket render`` and ``discover`` (docs/printers.md)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from agent.cli import operator
from agent.cli.table import output_width, table
from agent.domain.config import PrinterSettings, Settings
from agent.domain.config_problems import printer_key
from agent.domain.errors import ConfigError, Problem
from agent.domain.models import Order, parse_order
from agent.outbox import readonly as outbox_readonly
from agent.outbox.records import OrderRecord, PrintJob
from agent.printing.print_test import confirm_kind, print_test, where
from agent.printing.tickets import PrinterSetup, TicketFacts, late_minutes, order_ticket, stored_facts, ticket_skus
from drivers.printers.errors import PrinterConfigError
from drivers.printers.layout import Ticket, TicketKind
from drivers.printers.ticket_text import render_text

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

SAMPLE_ORDER: dict[str, Any] = {
    "schema_version": 1,
    "id": "sample-0001",
    "display_code": "A17",
    "source": "web",
    "created_at": "2026-11-23T18:42:00+00:00",
    "fulfillment": {
        "type": "delivery",
        "address": {"line1": "12 Harbour Row", "city": "Bristol", "postcode": "BS1 4RN"},
        "instructions": "Ring the side door",
    },
    "customer": {"name": "Zoë Ødegård", "phone": "+447700900456"},
    "items": [
        {
            "name": "Margherita",
            "sku": "PZ-MARG",
            "quantity": 2,
            "unit_price": 950,
            "category": "Pizza",
            "course": 1,
            "allergens": ["gluten", "milk"],
            "modifiers": [
                {
                    "name": "Extra basil",
                    "sku": "MOD-BASIL",
                    "quantity": 1,
                    "unit_price": 50,
                    "modifiers": [{"name": "On the side", "quantity": 1, "unit_price": 0}],
                },
            ],
            "notes": "well done, cut in 8",
        },
        {
            "name": "Crème brûlée",
            "sku": "DS-CREME",
            "quantity": 1,
            "unit_price": 650,
            "category": "Dessert",
            "course": 2,
        },
    ],
    "charges": {"delivery_fee": 299, "service_charge": 0, "tip": 0},
    "payment": {"status": "paid", "method": "card", "amount": 2949, "currency": "GBP"},
    "total": 2949,
    "notes": "No cutlery please 🙏",
}


def add_commands(sub: Any, config_parent: argparse.ArgumentParser, json_parent: argparse.ArgumentParser) -> None:
    """Add ``print-test``, ``ticket render`` and ``discover`` to the sub-command parser ``sub``."""
    test = sub.add_parser(
        "print-test", parents=[config_parent, json_parent], help="print a test ticket and report each printer's status"
    )
    test.add_argument("--printer", metavar="NAME", help="only this printer (default: every configured printer)")
    test.set_defaults(handler=cmd_print_test)

    ticket = sub.add_parser("ticket", help="preview kitchen tickets")
    ticket_sub = ticket.add_subparsers(metavar="ACTION")
    render = ticket_sub.add_parser("render", parents=[config_parent], help="render an order's ticket to text or PNG")
    render.add_argument("order_id", nargs="?", help="an order in the outbox")
    render.add_argument("--sample", action="store_true", help="render a built-in sample order instead")
    render.add_argument("--format", choices=("text", "png"), default="text")
    render.add_argument("--output", metavar="FILE", help="where to write (default: stdout for text)")
    render.add_argument("--printer", metavar="NAME", help="lay out for this printer (default: the first fallback one)")
    render.add_argument("--columns", type=int, choices=(32, 42, 48), help="override the printer's columns")
    render.add_argument("--kind", choices=[k.value for k in TicketKind if k is not TicketKind.TEST], default="fallback")
    render.add_argument("--job", type=int, metavar="ID", help="a printed job of the order, exactly as it was printed")
    render.set_defaults(handler=cmd_ticket_render)

    discover = sub.add_parser(
        "discover", parents=[json_parent], help="find printers and POS terminals on the network (mDNS, Epson UDP)"
    )
    discover.add_argument("--seconds", type=float, default=5.0, help="how long to listen (default 5)")
    discover.set_defaults(handler=cmd_discover)


def printer_problems(settings: Settings, source: str) -> list[Problem]:
    """Return what is wrong with the printers' profiles and code pages (this loads python-escpos)."""
    problems = []
    for index, printer in enumerate(settings.printers):
        if printer.writes_text:
            continue
        try:
            PrinterSetup(printer).code_page  # noqa: B018 - resolving it is the check
        except PrinterConfigError as exc:
            key = "code_page" if printer.code_page and "code page" in str(exc) else "profile"
            problems.append(Problem(f"{printer_key(printer.name, index)}.{key}", str(exc), source))
    return problems


def cmd_print_test(args: argparse.Namespace) -> int:
    """Print the test page on each chosen printer; report status before and after; 0 if every one printed."""
    settings = operator.load(args.config).settings
    chosen = [p for p in settings.printers if args.printer in (None, p.name)]
    if not chosen:
        names = ", ".join(p.name for p in settings.printers) or "none"
        what = f"no printer named {args.printer!r}" if args.printer else "no printers are configured"
        print(f"error: {what} (configured: {names})", file=sys.stderr)
        return EXIT_USAGE
    results = asyncio.run(_print_tests(settings, chosen))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        rows = []
        for r in results:
            outcome = "PRINTED" if r["printed"] else f"NOT PRINTED: {r['error']}"
            rows.append([r["printer"], r["connection"], f"before {r['before']}", f"after {r['after']}", outcome])
            rows.extend(["", "", "", "", line] for line in r["notes"])
        print("\n".join(table(rows, width=output_width())))
    return EXIT_OK if all(r["printed"] for r in results) else EXIT_FAILURE


async def _print_tests(settings: Settings, printers: list[PrinterSettings]) -> list[dict[str, Any]]:
    from drivers.printers.transports import build_transport

    return [await print_test(PrinterSetup(p), build_transport(p), tz=settings.venue.tz) for p in printers]


def describe_printer(printer: PrinterSettings) -> str:
    """Return one summary line: name, connection, profile, code page, columns, roles and categories."""
    if printer.writes_text:
        encoding = "plain text"
    else:
        setup = PrinterSetup(printer)
        encoding = f"{printer.profile}, {setup.code_page.name}"
    categories = ", ".join(printer.categories) if printer.categories else "all items"
    kind = confirm_kind(printer)
    confirms = f"confirmed by {kind}" if kind and printer.two_way else "unconfirmed (status)"
    if printer.confirm is False or not printer.two_way:
        confirms = "unconfirmed (counts once written)"
    return (
        f"{printer.name}: {where(printer)}, {encoding}, {printer.columns} columns,"
        f" roles {'/'.join(printer.roles)}, {categories}, {confirms}"
    )


def cmd_ticket_render(args: argparse.Namespace) -> int:
    """Render an order's (or the sample's) ticket as text or PNG; 0 on success, 2 on bad usage."""
    if bool(args.order_id) == bool(args.sample):
        print("error: give an ORDER_ID or --sample (one of them)", file=sys.stderr)
        return EXIT_USAGE
    settings = _settings_for_render(args)
    printer = _render_printer(settings, args.printer)
    if printer is None:
        print(f"error: no printer named {args.printer!r}", file=sys.stderr)
        return EXIT_USAGE
    if args.columns:
        printer = printer.model_copy(update={"columns": args.columns})
    tz = settings.venue.tz if settings else ZoneInfo("UTC")
    currency = settings.venue.currency if settings else "GBP"
    if args.sample:
        order: Order = parse_order(SAMPLE_ORDER, venue_id=settings.venue.id if settings else "sample")
        received = order.created_at
        facts = TicketFacts(kind=args.kind, flagged_skus=("DS-CREME",))
    else:
        assert settings is not None
        found = _read_order(settings, args.order_id, kind=args.kind, job_id=args.job, printer=printer)
        if isinstance(found, str):
            print(f"error: {found}", file=sys.stderr)
            return EXIT_FAILURE
        record, facts = found
        order, received = record.order, record.received_at
        if facts.columns and not args.columns and args.printer is None:
            printer = printer.model_copy(update={"columns": facts.columns})
    ticket = order_ticket(
        order,
        facts,
        columns=printer.columns,
        tz=tz,
        received_at=received,
        currency=currency,
        tickets=settings.tickets if settings else None,
    )
    setup = PrinterSetup(printer)
    code_page = None if printer.writes_text else setup.code_page
    if args.format == "png":
        from drivers.printers.png import render_png

        output = Path(args.output or f"ticket-{order.id}.png")
        output.write_bytes(render_png(ticket, code_page=code_page))
        print(f"wrote {output}", file=sys.stderr)
        return EXIT_OK
    text = render_text(_as_printed(ticket, code_page.codec) if code_page else ticket)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _as_printed(ticket: Ticket, codec: str) -> Ticket:
    from drivers.printers.encoding import printable

    return Ticket(
        lines=tuple(replace(line, text=printable(line.text, codec)) for line in ticket.lines),
        columns=ticket.columns,
        cut=ticket.cut,
    )


def _settings_for_render(args: argparse.Namespace) -> Settings | None:
    try:
        settings = operator.load(args.config).settings
    except ConfigError as exc:
        no_file = len(exc.problems) == 1 and exc.problems[0].key == "config" and "no config file" in str(exc)
        if args.sample and args.config is None and no_file:
            return None
        raise
    return settings


def _render_printer(settings: Settings | None, name: str | None) -> PrinterSettings | None:
    default = PrinterSettings(name="preview", connection="file", path=Path("/dev/null"), format="escpos")
    if settings is None:
        return default if name is None else None
    if name is not None:
        return next((p for p in settings.printers if p.name == name), None)
    candidates = settings.fallback_printers() or settings.printers
    return candidates[0] if candidates else default


def _read_order(
    settings: Settings, order_id: str, *, kind: str, job_id: int | None, printer: PrinterSettings
) -> tuple[OrderRecord, TicketFacts] | str:
    """Return an order and its ticket's facts: a printed job's as stored, else as it would print now.

    Returns what is missing (the order, the job) as a message instead.
    """
    from agent.outbox import print_jobs, snoozes

    path = settings.storage.path
    if not path.exists():
        return f"no order {order_id!r} in {path}"
    conn = outbox_readonly.connect(path)
    try:
        row = conn.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
        if row is None:
            return f"no order {order_id!r} in {path}"
        record = OrderRecord.from_row(row)
        if job_id is not None:
            found = conn.execute("SELECT * FROM print_jobs WHERE id = ? AND order_id = ?", (job_id, order_id))
            job_row = found.fetchone()
            if job_row is None:
                return f"order {order_id!r} has no print job {job_id}"
            return record, stored_facts(PrintJob.from_row(job_row))
        now = datetime.now(UTC)
        flagged = {s.sku for s in snoozes.active(conn, now=now)}
        copies = print_jobs.copies_printed(conn, order_id, None)
    finally:
        conn.close()
    late = late_minutes(
        record.due_at,
        now,
        late_after_minutes=settings.tickets.late_after_minutes,
        requested_at=record.order.requested_at,
    )
    skus = set(ticket_skus(record.order, None))
    facts = TicketFacts(
        kind=kind,
        copy=copies + 1 if kind != "cancelled" else 1,
        late_minutes=late,
        flagged_skus=tuple(sorted(flagged & skus)),
        printer=printer.name,
        columns=printer.columns,
    )
    return record, facts


def cmd_discover(args: argparse.Namespace) -> int:
    """Browse for printers and POS terminals; print a table and ready-to-paste TOML."""
    from agent.cli.discover_command import run_discover

    if args.seconds <= 0 or args.seconds > 120:
        print("error: --seconds must be between 0 and 120", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(run_discover(args.seconds, as_json=args.json, out=sys.stdout))
