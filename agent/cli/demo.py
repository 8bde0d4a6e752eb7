"""``venue-agent demo``: a newcomer's first command.

Starts the POS simulator and the agent on loopback with ``config/demo.toml``, sends a handful of
realistic orders, switches the POS off mid-way so fallback tickets print (the grill's printer has
jammed, so its tickets come out at the pass), changes, cancels and reprints some of them, brings the POS
back, and ends with what happened to each order and a preview of every ticket that came out.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import sqlite3
import tomllib
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import httpx

from agent.cli.demo_orders import demo_order, down_orders, first_orders
from agent.cli.table import output_width, table
from agent.domain.config import Settings, settings_from_dict
from agent.outbox.records import OrderRecord, PrintJob
from agent.printing.tickets import TicketFacts, order_ticket, stored_facts
from agent.service import logs
from agent.service.service import Agent
from drivers.pos.sim_state import SimulatorState
from drivers.pos.simulator import serve_simulator
from drivers.printers.layout import TicketKind, banners
from drivers.printers.ticket_text import render_text

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "demo.toml"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _load_demo_config() -> dict[str, Any]:
    if DEMO_CONFIG.is_file():
        return tomllib.loads(DEMO_CONFIG.read_text(encoding="utf-8"))
    # Installed as a package (no source tree): the same file ships as package data.
    return tomllib.loads(resources.files("agent").joinpath("demo.toml").read_text(encoding="utf-8"))


async def _wait_for(client: httpx.AsyncClient, order_id: str, states: set[str], seconds: float) -> str:
    state = "?"
    for _ in range(int(seconds * 10)):
        state = str((await client.get(f"/v1/orders/{order_id}")).json()["state"])
        if state in states:
            return state
        await asyncio.sleep(0.1)
    return state


def _say(text: str) -> None:
    print(text, flush=True)


async def _demo(output: Path, fast: bool) -> int:
    raw = _load_demo_config()
    sim_port, agent_port = _free_port(), _free_port()
    raw["storage"]["path"] = str(output / "outbox.db")
    raw["intake"]["listen"] = f"127.0.0.1:{agent_port}"
    raw["pos"]["simulator"]["url"] = f"http://127.0.0.1:{sim_port}/orders"
    jammed = await asyncio.start_server(_jammed_printer, "127.0.0.1", 0)
    for printer in raw["printers"]:
        if printer["name"] == "pass":
            printer["path"] = str(output / "tickets.txt")
        elif printer["name"] == "grill":
            printer["port"] = jammed.sockets[0].getsockname()[1]
    settings = settings_from_dict(raw, source=str(DEMO_CONFIG))
    pass_printer = next(p for p in settings.printers if p.name == "pass")
    pause = 0.2 if fast else 1.0

    sim_state = SimulatorState()
    sim_state.faults.update({"sold_out_skus": ["PA-LOBSTER"]})
    sim_ready, sim_stop = asyncio.Event(), asyncio.Event()
    sim_task = asyncio.create_task(
        serve_simulator("127.0.0.1", sim_port, state=sim_state, ready=sim_ready, shutdown=sim_stop), name="demo pos-sim"
    )
    await sim_ready.wait()
    _say(f"1. POS simulator listening on http://127.0.0.1:{sim_port} (it has sold out of PA-LOBSTER)")
    agent = Agent(settings)
    await agent.start()
    _say(f"2. venue-agent ready on http://127.0.0.1:{agent_port}, outbox {settings.storage.path}")
    now = datetime.now(UTC)
    orders = first_orders(now)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{agent_port}", trust_env=False) as client:
        _say("3. Sending orders while the POS is up:")
        for label, order in orders:
            response = await client.post("/v1/orders", json=order)
            _say(f"   {order['id']}  {label}: HTTP {response.status_code} {response.json()['state']}")
            await asyncio.sleep(pause / 2)
        for _, order in orders:
            await _wait_for(client, order["id"], {"injected", "failed", "scheduled"}, 10)

        _say("4. The POS goes down (simulator answers 503). Four more orders arrive:")
        await client.post(f"http://127.0.0.1:{sim_port}/_sim/faults", json={"down": True})
        late = down_orders(datetime.now(UTC))
        for label, order in late:
            response = await client.post("/v1/orders", json=order)
            _say(f"   {order['id']}  {label}: HTTP {response.status_code} {response.json()['state']}")
        _say("   ...retries back off, the circuit opens, the kitchen gets fallback tickets meanwhile")
        _say("   (the grill's printer has jammed: it takes the pizza ticket and never answers, so the pass prints it)")
        for _, order in late:
            await _wait_printed(client, order["id"], 1)
        await asyncio.sleep(pause)

        _say("5. While the POS is still down: table 4 adds a dessert, Noah cancels, the pass asks for a reprint")
        changed = demo_order(
            "demo-1007",
            now=datetime.now(UTC),
            source="qr_table",
            fulfillment={"type": "dine_in", "table": "4", "covers": 1},
            items=[
                {"name": "Caesar salad", "sku": "SA-CAES", "quantity": 1, "unit_price": 900},
                {
                    "name": "Tiramisu",
                    "sku": "DS-TIRA",
                    "quantity": 1,
                    "unit_price": 650,
                    "notes": "Egg allergy, is there an egg-free dessert?",
                },
            ],
        )
        put = await client.put("/v1/orders/demo-1007", json=changed)
        _say(f"   demo-1007  PUT (a dessert added): HTTP {put.status_code} -> a MODIFIED ticket")
        cancel = await client.post("/v1/orders/demo-1009/cancel")
        _say(f"   demo-1009  cancel: HTTP {cancel.status_code} -> a CANCELLED - DO NOT MAKE ticket")
        reprint = await client.post("/v1/orders/demo-1006/reprint")
        _say(f"   demo-1006  reprint: HTTP {reprint.status_code} -> a REPRINT ticket, counted as a copy")
        for order_id, count in (("demo-1007", 2), ("demo-1009", 2), ("demo-1006", 2)):
            await _wait_printed(client, order_id, count)
        await asyncio.sleep(pause)

        _say("6. The POS is back: waiting orders go in, marked ALREADY PRINTED so nothing is made twice")
        await client.post(f"http://127.0.0.1:{sim_port}/_sim/faults", json={"down": False})
        for _, order in late:
            await _wait_for(client, order["id"], {"injected", "failed", "cancelled"}, 90)
        await asyncio.sleep(pause)

        _say("\nWhat happened to each order:")
        rows = []
        for _, order in [*orders, *late]:
            detail = (await client.get(f"/v1/orders/{order['id']}")).json()
            tickets = ", ".join(f"{t['kind']}" for t in detail["tickets"] if t["state"] == "printed") or "-"
            why = detail.get("last_error") or ""
            if detail["state"] == "scheduled":
                due = datetime.fromisoformat(detail["due_at"]).astimezone(settings.venue.tz)
                why = f"pre-order: goes to the POS at {due:%H:%M} ({settings.venue.timezone})"
            elif detail["state"] == "injected" and detail["tickets"]:
                why = "printed while the POS was down, then injected marked ALREADY PRINTED"
            elif detail["state"] == "cancelled":
                why = "cancelled after printing: a CANCELLED ticket followed"
            state, reference = detail["state"], detail.get("pos_reference") or "-"
            rows.append([detail["order_id"], detail["display_code"], state, reference, tickets, why])
        header = ["ORDER", "CODE", "STATE", "POS REF", "TICKETS", "WHY"]
        for line in table(rows, header=header, indent="   ", width=output_width()):
            _say(line)
        sim_orders = (await client.get(f"http://127.0.0.1:{sim_port}/_sim/orders")).json()
        _say(f"\nThe simulated POS holds {len(sim_orders)} orders, one per idempotency key.")
    await agent.stop()
    jammed.close()
    sim_stop.set()
    with contextlib.suppress(Exception):
        await sim_task
    labels = {order["id"]: label for label, order in [*orders, *late]}
    previews = _write_previews(settings, output / "tickets")
    _say(f"\nEvery ticket that came out, as the kitchen saw it (PNG, and .txt beside it) in {output / 'tickets'}:")
    for path, facts in previews:
        order_id = path.name.split("-", 2)[0] + "-" + path.name.split("-", 2)[1]
        _say(f"   {path.name:<30} {_what_it_shows(facts)}: {labels.get(order_id, order_id)}")
    _say(f"Kitchen tickets (plain text, as the pass printer wrote them): {pass_printer.path}")
    query = "select ts, type, order_id, state from events"
    _say(f"The outbox with every event:  {settings.storage.path}  (try: sqlite3 {settings.storage.path} '{query}')")
    _say(f"The agent's log (JSON lines): {output / 'agent.log'}")
    return 0


def _write_previews(settings: Settings, folder: Path) -> list[tuple[Path, TicketFacts]]:
    """Write every printed ticket as ``<order>-<job>-<kind>.png`` and ``.txt`` from what it carried; return them."""
    from drivers.printers.png import render_png

    folder.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(f"file:{settings.storage.path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        printed = conn.execute("SELECT * FROM print_jobs WHERE state = 'printed' ORDER BY printed_at, id")
        jobs = [PrintJob.from_row(r) for r in printed]
        records = {r["id"]: OrderRecord.from_row(r) for r in conn.execute("SELECT * FROM orders")}
    finally:
        conn.close()
    written = []
    for job in jobs:
        record = records[job.order_id]
        facts = stored_facts(job)
        ticket = order_ticket(
            record.order,
            facts,
            columns=facts.columns or settings.printers[0].columns,
            tz=settings.venue.tz,
            received_at=record.received_at,
            currency=settings.venue.currency,
            tickets=settings.tickets,
        )
        stem = folder / f"{job.order_id}-{job.id:02d}-{job.kind}"
        stem.with_suffix(".txt").write_text(render_text(ticket), encoding="utf-8")
        stem.with_suffix(".png").write_bytes(render_png(ticket))
        written.append((stem.with_suffix(".png"), facts))
    return written


def _what_it_shows(facts: TicketFacts) -> str:
    """Return a ticket's banners in one line, with the flags a cook looks for."""
    shown = banners(
        TicketKind(facts.kind),
        in_doubt=facts.in_doubt,
        late_minutes=facts.late_minutes,
        backup_for=facts.backup_for,
        copy=facts.copy,
    )
    if facts.flagged_skus:
        shown.append("SOLD OUT IN POS")
    return " + ".join(shown)


async def _wait_printed(client: httpx.AsyncClient, order_id: str, count: int) -> None:
    """Wait until ``count`` of the order's tickets have printed (bounded)."""
    for _ in range(300):
        detail = (await client.get(f"/v1/orders/{order_id}")).json()
        if sum(t["state"] == "printed" for t in detail["tickets"]) >= count:
            return
        await asyncio.sleep(0.1)


async def _jammed_printer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A printer that takes a connection and never reads or answers (jammed), until the client hangs up."""
    try:
        await asyncio.sleep(120)
    finally:
        writer.transport.abort()


def run_demo(output: Path, *, fast: bool = False) -> int:
    """Run the demo into ``output`` (emptied first); return the exit code."""
    if output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    with (output / "agent.log").open("w", encoding="utf-8") as log_file:
        logs.configure("info", "json", stream=log_file)
        try:
            return asyncio.run(_demo(output.resolve(), fast))
        finally:
            logs.configure("info", "console")
