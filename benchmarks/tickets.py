"""(g), (h), (j) Kitchen tickets: rendering, fallback latency, one hung printer next to a healthy one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from agent.domain.config import PrinterSettings
from agent.domain.models import parse_order
from agent.domain.states import place
from agent.outbox import print_jobs
from agent.outbox.store import Outbox
from agent.printing.tickets import PrinterSetup, TicketFacts, order_ticket
from benchmarks.agents import (
    Children,
    Sim,
    agent_config,
    children,
    percentile,
    post_request,
    read_response,
    terminate,
    vm_hwm_kb,
    wait_http,
)
from benchmarks.harness import VENUE, Report
from drivers.printers.layout import Ticket, layout_ticket
from tests.conftest import make_order
from tests.fake_printer import FakeNetworkPrinter

# ---- (g), (h) kitchen tickets ----------------------------------------------------------------

# A pickup order whose 48-column fallback ticket has 20 lines: three items in Danish, Polish and Turkish, a
# modifier and an item note with an emoji; the header, customer, rules, totals and footer take the other 15.
TICKET_ITEMS: list[dict[str, Any]] = [
    {
        "name": "Smørrebrød",
        "sku": "DK-SMOR",
        "quantity": 2,
        "unit_price": 850,
        "category": "Mains",
        "course": 1,
        "modifiers": [],
    },
    {
        "name": "Zażółć pierogi",
        "sku": "PL-PIER",
        "quantity": 1,
        "unit_price": 1100,
        "category": "Mains",
        "course": 1,
        "modifiers": [{"name": "Śmietana", "sku": "MOD-SOUR", "quantity": 2, "unit_price": 50, "modifiers": []}],
    },
    {
        "name": "Şiş köfte",
        "sku": "TR-SIS",
        "quantity": 1,
        "unit_price": 1250,
        "category": "Grill",
        "course": 1,
        "notes": "Très doux 🌶️ no chilli, sans oignon",
        "modifiers": [],
    },
]
CUT = b"\x1dV"  # GS V: the cut, the last command of a ticket


def ticket_payload(order_id: str, **changes: Any) -> dict[str, Any]:
    """Return the 20-line ticket's order as a JSON payload (totals adding up)."""
    items_total = sum(
        i["quantity"] * (i["unit_price"] + sum(m["quantity"] * m["unit_price"] for m in i["modifiers"]))
        for i in TICKET_ITEMS
    )
    tip = 100
    total = items_total + tip
    return make_order(
        order_id,
        items=TICKET_ITEMS,
        discounts=[],
        charges={"delivery_fee": 0, "service_charge": 0, "tip": tip},
        payment={"status": "paid", "method": "card", "amount": total, "currency": "GBP"},
        total=total,
        notes=None,
        **changes,
    )


def run_ticket_render(report: Report, *, runs: int = 2000, warmup: int = 200) -> None:
    print("(g) kitchen ticket: layout + ESC/POS bytes", flush=True)
    order = parse_order(ticket_payload("ord_BENCH-TICKET"), venue_id=VENUE, currency="GBP")
    setup = PrinterSetup(PrinterSettings(name="pass", connection="network", host="127.0.0.1", profile="TM-T20II"))
    tz = ZoneInfo("Europe/London")
    received_at = datetime.now(UTC)
    preloaded = "escpos.printer" in sys.modules

    def render() -> tuple[Ticket, bytes]:
        facts = TicketFacts(kind="fallback")
        ticket = order_ticket(order, facts, columns=48, tz=tz, received_at=received_at, currency="GBP")
        return ticket, setup.payload(ticket)

    started = time.perf_counter()
    ticket, data = render()
    first_ms = (time.perf_counter() - started) * 1000
    assert CUT in data[-8:], f"the ticket does not end with a cut: {data[-16:]!r}"
    for _ in range(warmup):
        render()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        render()
        samples.append((time.perf_counter() - started) * 1000)
    p50, p99 = percentile(samples, 50), percentile(samples, 99)
    report.add(
        "(g) first ticket rendered in this process: loads python-escpos, resolves the code page"
        + (" (python-escpos was already imported)" if preloaded else ""),
        "-",
        f"{first_ms:.0f} ms",
        None,
    )
    shape = f"{len(ticket.lines)} lines at 48 columns, TM-T20II, {len(data):,} bytes; {runs:,} runs after {warmup}"
    report.add(
        "(g) 20-line kitchen ticket, layout + ESC/POS bytes (`order_ticket` + `PrinterSetup.payload`), median",
        "<= 5 ms",
        f"{p50:.2f} ms ({shape})",
        p50 <= 5,
    )
    report.add("(g) same, p99", "<= 5 ms", f"{p99:.2f} ms (max {max(samples):.2f} ms)", p99 <= 5)


@dataclass
class FallbackRun:
    """What one fallback-latency pass saw."""

    latencies_ms: list[float]
    missing: list[str]
    reasons: dict[str, int]
    rss_kb: int


async def fallback_latency(
    procs: Children,
    sim: Sim,
    workdir: Path,
    name: str,
    *,
    print_after_seconds: float,
    print_when_pos_not_ready: bool,
    orders: int,
    spacing: float,
) -> FallbackRun:
    """Post ASAP orders to an agent whose POS is down; return 202 -> cut on a fake network printer, in ms.

    The gaps between orders are ``spacing`` +- 50 % (seeded): every intake wakes the scheduler, whose 1 s
    ticks would otherwise line up with the fallback deadlines of evenly spaced orders.
    """
    async with FakeNetworkPrinter.running() as printer:
        config, _, port = agent_config(
            workdir,
            name,
            sim_port=sim.port,
            rate=20,
            printer_port=printer.port,
            print_after_seconds=print_after_seconds,
            print_when_pos_not_ready=print_when_pos_not_ready,
        )
        popen = procs.spawn(f"agent-{name}", "run", "--config", str(config))
        log_path = procs.logs / f"agent-{name}-{len(procs.started) - 1:02d}.log"
        try:
            await wait_http(f"http://127.0.0.1:{port}/v1/health", within=15)
            # The POS goes down once the agent saw it up: its first orders fail, then the circuit opens.
            (await sim.client.post(f"{sim.base}/_sim/faults", json={"down": True})).raise_for_status()
            ids = [f"{name}-{i:03d}" for i in range(orders)]
            acked: dict[str, float] = {}
            cut_at: dict[str, float] = {}
            done = asyncio.Event()

            async def watch() -> None:
                """Note when each order's ticket is complete (its cut arrived) at the printer; 2 ms polls."""
                checked = 0  # jobs before this index are complete and attributed
                while not done.is_set():
                    seen = time.perf_counter()
                    jobs = printer.jobs
                    while checked < len(jobs) and CUT in jobs[checked]:
                        job = jobs[checked]
                        for order_id in ids:
                            if order_id not in cut_at and f"Order {order_id}".encode() in job:
                                cut_at[order_id] = seen
                        checked += 1
                    if len(cut_at) == orders:
                        return
                    await asyncio.sleep(0.002)

            gaps = random.Random(7)
            watcher = asyncio.create_task(watch())
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                for i, order_id in enumerate(ids):
                    if i:
                        await asyncio.sleep(spacing * gaps.uniform(0.5, 1.5))
                    now = datetime.now(UTC).isoformat(timespec="milliseconds")
                    body = json.dumps(ticket_payload(order_id, created_at=now), separators=(",", ":")).encode()
                    writer.write(post_request(port, body))
                    status, _, answer = await read_response(reader)
                    if status != 202:
                        msg = f"intake answered {status}: {answer!r}"
                        raise RuntimeError(msg)
                    acked[order_id] = time.perf_counter()
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(watcher), timeout=print_after_seconds + 5)
            done.set()
            await watcher
            rss = vm_hwm_kb(popen.pid)
        finally:
            await terminate(popen)
            with contextlib.suppress(httpx.HTTPError):
                await sim.client.post(f"{sim.base}/_sim/faults", json={"down": False})
    reasons: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("event") == "fallback_ticket_requested" and entry.get("order_id") in acked:
                    reasons[entry["reason"]] = reasons.get(entry["reason"], 0) + 1
    return FallbackRun(
        latencies_ms=[(cut_at[i] - acked[i]) * 1000 for i in ids if i in cut_at],
        missing=[i for i in ids if i not in cut_at],
        reasons=reasons,
        rss_kb=rss,
    )


def _fallback_summary(run: FallbackRun) -> str:
    values = run.latencies_ms
    text = (
        f"p50 {percentile(values, 50) / 1000:.2f} s, max {max(values) / 1000:.2f} s "
        f"(min {min(values) / 1000:.2f} s; {len(values)} of {len(values) + len(run.missing)} tickets cut"
        if values
        else f"no ticket printed (0 of {len(run.missing)}"
    )
    reasons = "; ".join(f"{n} x {r!r}" for r, n in sorted(run.reasons.items(), key=lambda kv: -kv[1]))
    return text + (f"; reasons: {reasons})" if reasons else ")")


async def run_printing(report: Report, workdir: Path) -> None:
    """(g) in this process, then (h) and the RSS of an agent with a network printer, against a down POS."""
    run_ticket_render(report)
    after, orders, spacing = 2.0, 10, 0.5
    logs = workdir / "printing"
    logs.mkdir(exist_ok=True)
    with children(logs) as procs:
        sim = Sim(procs)
        try:
            await sim.ready()
            print(f"(h) fallback ticket latency, POS down, print_after_seconds = {after:g}", flush=True)
            rule_a = await fallback_latency(
                procs,
                sim,
                logs,
                "fallback-a",
                print_after_seconds=after,
                print_when_pos_not_ready=False,
                orders=orders,
                spacing=spacing,
            )
            defaults = await fallback_latency(
                procs,
                sim,
                logs,
                "fallback-c",
                print_after_seconds=after,
                print_when_pos_not_ready=True,
                orders=orders,
                spacing=spacing,
            )
        finally:
            await sim.client.aclose()
    worst = max(rule_a.latencies_ms, default=float("inf"))
    report.add(
        f"(h) fallback ticket, 202 -> cut at a fake network printer (TCP, ESC/POS), POS down (503), {orders} ASAP "
        f"orders {spacing * 0.5:g}-{spacing * 1.5:g} s apart, print_after_seconds = {after:g}, "
        "print_when_pos_not_ready = false (rule a)",
        f"<= print_after_seconds + 1 s = {after + 1:g} s",
        _fallback_summary(rule_a),
        not rule_a.missing and worst <= (after + 1) * 1000,
    )
    report.add(
        "(h) same with print_when_pos_not_ready = true (the default): rule (c) prints once the circuit is open",
        "-",
        _fallback_summary(defaults),
        None,
    )
    peak = max(rule_a.rss_kb, defaults.rss_kb) / 1024
    report.add(
        "(f) peak RSS with python-escpos loaded (VmHWM of the (h) agents, network printer, after their tickets)",
        "<= 80 MB",
        f"{peak:.1f} MB (rule (a) agent: {rule_a.rss_kb / 1024:.1f} MB, "
        f"default agent: {defaults.rss_kb / 1024:.1f} MB)",
        peak <= 80,
    )


# ---- (g) every kind, (j) one hung printer --------------------------------------------------------


def run_ticket_kinds(report: Report, *, rounds: int = 40) -> None:
    """(g) layout + ESC/POS for every banner kind at 32, 42 and 48 columns (the golden scenarios of the tests)."""
    from tests.test_ticket_kinds import KINDS, WIDTHS, scenario

    print("(g) every ticket kind at 32/42/48 columns: layout + ESC/POS", flush=True)
    setup = PrinterSetup(PrinterSettings(name="pass", connection="network", host="127.0.0.1", profile="TM-T20II"))
    order_changes = {name: scenario(name, 48)[0] for name in KINDS}
    samples: list[float] = []
    for round_no in range(rounds + 1):  # the first round warms up (loads python-escpos) and is not counted
        for name, (_, options, _) in KINDS.items():
            for columns in WIDTHS:
                started = time.perf_counter()
                ticket = layout_ticket(
                    order_changes[name],
                    columns=columns,
                    tz=ZoneInfo("Europe/London"),
                    received_at=datetime.now(UTC),
                    **options,
                )
                setup.payload(ticket)
                if round_no:
                    samples.append((time.perf_counter() - started) * 1000)
    p50, p99 = percentile(samples, 50), percentile(samples, 99)
    shape = f"{len(KINDS)} kinds x {len(WIDTHS)} widths x {rounds} rounds = {len(samples):,} tickets"
    report.add(
        "(g) every banner kind (fallback, pre-order, reprint, modified, cancelled, late, backup + duplicate), "
        "layout + ESC/POS, median",
        "<= 5 ms",
        f"{p50:.2f} ms ({shape})",
        p50 <= 5,
    )
    report.add("(g) same, p99", "<= 5 ms", f"{p99:.2f} ms (max {max(samples):.2f} ms)", p99 <= 5)


@dataclass
class QueueRun:
    """What one (j) pass saw: ms from a job falling due to its cut, per station."""

    healthy_ms: list[float]
    failover_ms: list[float]
    hung_connections: int


async def hung_printer_latency(workdir: Path, name: str, *, hang: bool, orders: int, spacing: float) -> QueueRun:
    """Print pizza (grill) and drink (bar) tickets through one in-process PrintWorker to fake network printers.

    With ``hang`` the grill takes the bytes and never answers. Each pair of orders falls due ``spacing``
    seconds after the last; the latency is from the fallback request to the ticket's cut at the bar.
    """
    from agent.domain.clock import SystemClock as Clock
    from agent.domain.config import settings_from_dict
    from agent.printing.worker import PrintWorker

    pizza = {"name": "Margherita", "sku": "PZ-MARG", "quantity": 1, "unit_price": 950, "category": "Pizza"}
    beer = {"name": "Pale ale", "sku": "DR-ALE", "quantity": 2, "unit_price": 500, "category": "Drinks"}
    async with FakeNetworkPrinter.running("black_hole" if hang else "ok") as grill, FakeNetworkPrinter.running() as bar:
        settings = settings_from_dict(
            {
                "venue": {"id": VENUE, "timezone": "Europe/London"},
                "storage": {"path": str(workdir / f"{name}.db"), "min_free_mb": 0},
                "pos": {"driver": "http", "http": {"url": "http://127.0.0.1:9/orders"}},
                "printers": [
                    {
                        "name": "grill",
                        "connection": "network",
                        "host": "127.0.0.1",
                        "port": grill.port,
                        "categories": ["Pizza"],
                        "profile": "TM-T20II",
                    },
                    {
                        "name": "bar",
                        "connection": "network",
                        "host": "127.0.0.1",
                        "port": bar.port,
                        "categories": ["Drinks"],
                        "profile": "TM-T20II",
                    },
                ],
            }
        )
        clock = Clock()
        outbox = Outbox(settings.storage.path, clock=clock, min_free_mb=0)
        await outbox.open()
        worker = PrintWorker(outbox=outbox, settings=settings, clock=clock)
        await worker.prepare()
        runner = asyncio.create_task(worker.run())
        requested: dict[str, float] = {}
        cut_at: dict[str, float] = {}
        try:
            for i in range(orders):
                for kind, item in (("pizza", pizza), ("beer", beer)):
                    order_id = f"{name}-{kind}-{i:02d}"
                    payload = make_order(order_id)
                    payload.update(
                        items=[item],
                        discounts=[],
                        charges={"delivery_fee": 0, "service_charge": 0, "tip": 0},
                        total=item["quantity"] * item["unit_price"],
                    )
                    payload["payment"] = {**payload["payment"], "amount": payload["total"]}
                    order = parse_order(payload, venue_id=VENUE)
                    now = clock.now()
                    placement = place(order, now=now, hold_unpaid=True, buffered=True, buffer_minutes=20)
                    await outbox.submit(order, placement, key=f"{VENUE}:{order_id}")
                    await outbox.write(
                        lambda c, o=order_id, t=now: print_jobs.request_fallback(
                            c, o, now=t, reason="bench", skip=False
                        )
                    )
                    requested[order_id] = time.perf_counter()
                    worker.wake()
                deadline = time.perf_counter() + spacing
                while time.perf_counter() < deadline:
                    seen = time.perf_counter()
                    for job in bar.jobs:
                        if CUT in job:
                            for order_id in requested:
                                if order_id not in cut_at and f"Order {order_id}".encode() in job:
                                    cut_at[order_id] = seen
                    await asyncio.sleep(0.002)
            async with asyncio.timeout(30):
                while len(cut_at) < len(requested):
                    seen = time.perf_counter()
                    for job in bar.jobs:
                        for order_id in requested:
                            if order_id not in cut_at and CUT in job and f"Order {order_id}".encode() in job:
                                cut_at[order_id] = seen
                    if not hang:
                        for job in grill.jobs:
                            for order_id in requested:
                                if order_id not in cut_at and CUT in job and f"Order {order_id}".encode() in job:
                                    cut_at[order_id] = seen
                    await asyncio.sleep(0.002)
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
            await outbox.close()
        connections = grill.connections
    beer_ms = [(cut_at[o] - t) * 1000 for o, t in requested.items() if "-beer-" in o and o in cut_at]
    pizza_ms = [(cut_at[o] - t) * 1000 for o, t in requested.items() if "-pizza-" in o and o in cut_at]
    return QueueRun(beer_ms, pizza_ms, connections)


async def run_queues(report: Report, workdir: Path) -> None:
    """(j) a hung printer next to a healthy one, against both healthy."""
    orders, spacing = 10, 0.3
    print("(j) ticket latency on a healthy printer while another hangs", flush=True)
    calm = await hung_printer_latency(workdir, "queues-calm", hang=False, orders=orders, spacing=spacing)
    hung = await hung_printer_latency(workdir, "queues-hung", hang=True, orders=orders, spacing=spacing)
    status_timeout_ms = 1000.0

    def summary(values: list[float]) -> str:
        return f"p50 {percentile(values, 50):.0f} ms, max {max(values):.0f} ms ({len(values)} tickets)"

    report.add(
        f"(j) bar (healthy) ticket latency, fallback requested -> cut, {orders} drink orders "
        f"{spacing:g} s apart, both printers healthy",
        "-",
        summary(calm.healthy_ms),
        None,
    )
    report.add(
        "(j) same while the grill printer hangs (takes the bytes, never answers: 1 s status timeouts)",
        f"max < one status timeout ({status_timeout_ms / 1000:g} s)",
        summary(hung.healthy_ms),
        len(hung.healthy_ms) == orders and max(hung.healthy_ms) < status_timeout_ms,
    )
    report.add(
        "(j) the hung grill's pizza tickets, printed on the bar (BACKUP FOR GRILL); the first waits out the "
        "grill's two status timeouts, the rest skip it",
        "-",
        summary(hung.failover_ms) + f"; grill connections: {hung.hung_connections}",
        None,
    )
