"""``venue-agent orders``: list, show, resubmit, cancel and reprint; read from the outbox file when the
agent cannot be asked."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Callable
from typing import Any

from agent.cli import operator
from agent.cli.client import AgentClient, AgentUnreachable
from agent.cli.table import output_width, table
from agent.domain.states import State
from agent.outbox import readonly as outbox_readonly

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def add_commands(sub: Any, config_parent: argparse.ArgumentParser, json_parent: argparse.ArgumentParser) -> None:
    """Add ``orders list|show|resubmit|cancel|reprint`` to the sub-command parser ``sub``."""
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
    rows = []
    for o in orders:
        error = f"{o['error_class']}: {o['last_error']}" if o.get("error_class") else (o.get("last_error") or "")
        rows.append(
            [
                o["received_at"][:19],  # the timestamp to the second
                o["order_id"],
                o["display_code"],
                o["state"],
                str(o["attempts"]),
                o.get("customer") or "-",
                error,
            ]
        )
    header = ["RECEIVED", "ORDER", "CODE", "STATE", "TRIES", "CUSTOMER", "ERROR"]
    print("\n".join(table(rows, header=header, right={4}, width=output_width())))
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
    rows = [
        [e["ts"][:23], e["type"], e["state"] or "", e["detail"].get("reason") or e["detail"].get("error") or ""]
        for e in detail["events"]
    ]
    print("\n".join(table(rows, indent="  ", width=output_width())))
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
