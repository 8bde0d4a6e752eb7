#!/usr/bin/env python3
"""Benchmarks of the outbox and of the running agent, on loopback only; prints a Markdown table.

Run from the repository root with the project's virtualenv::

    .venv/bin/python benchmarks/run.py

The table (with the machine and the command in its header) is also written to ``benchmarks/results.md``,
overwriting the previous one. The whole run takes about 15 minutes on a quiet 2-core machine.
``--only SECTION`` runs one section and only prints its table (results.md is left alone):

``--only cycle``
    (a) at +0, +2 and +10 ms per fsync, one to two minutes;
``--only box``
    (a), then (l), (k), (m), (n), eight to ten minutes;
``--only printing``
    (g), (h) and the RSS of the printing agents, about 30 s;
``--only tickets``
    (g) for every banner kind at 32/42/48 columns and (j), about 20 s;
``--only mqtt``
    (i), in ``benchmarks/publishing.py``, three to four minutes;
``--only idle``
    (k) alone: an idle agent's CPU and wake-ups over 60 s (about 75 s).
``--only drain``
    (d), (e) alone: the drain of ``--drain-orders`` queued orders (10,000 unless told), 10 to 80 s.
``--only transport``
    (d') the HTTP driver's client CPU per order against httpx's AsyncClient, about 20 s.

Measures:

(a) outbox full cycle (submit -> claim -> injected, ``synchronous=FULL``) against persist-queue's
    ``SQLiteAckQueue`` (put -> get -> ack) on the same disk, at +0, +2 and +10 ms per fsync (an SD card's, through
    the ``LD_PRELOAD`` shim of ``benchmarks/sdcard.py``);
(b) HTTP intake throughput with 64 concurrent keep-alive clients (unpaid orders: ``held``, so nothing
    is dispatched and intake is measured alone);
(c) agent overhead from the 202 to the POS simulator receiving the order, at 20 orders/s;
(d) drain of 10,000 queued orders into an unthrottled simulator, and 400 orders at 20/s;
(d') the HTTP driver's client CPU per order: its transport against httpx's AsyncClient;
(e) start-up to ready with 10,000 pending orders;
(f) peak RSS (VmHWM) of the agent processes, and of agents with python-escpos loaded (a network printer);
(g) a 20-line kitchen ticket laid out and rendered to ESC/POS bytes (and the one-off python-escpos load);
(h) fallback ticket latency: 202 -> the ticket's cut at a fake network printer while the POS is down;
(j) one printer hung (takes the bytes, never answers) next to a healthy one: the healthy station's ticket
    latency (job due -> cut), and the hung station's tickets failing over, against both printers healthy;
(i) MQTT publishing: the order figures of (b)-(f) with the broker down and a backlog of unpublished events,
    against MQTT off; then a real mosquitto comes up and the backlog is published (time to the agent's
    ``online`` status, to the 1,000th and to the last queued event; seq order, none missing);
(k) an idle agent's CPU and wake-ups over 60 s; (l) end to end on an SD card (+10 ms per fsync);
(m) a month of orders (100,000): start-up, intake p99, list/status answers, the purge, size, query plans;
(n) the slow box: (d), (e), (b), (k) on a quarter of one core.

docs/benchmarks.md says what each row measures and how.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: make ``agent`` and ``tests`` importable

from benchmarks.box import run_box, run_idle_only  # noqa: E402
from benchmarks.cycle import run_outbox_vs_persist_queue  # noqa: E402
from benchmarks.harness import RESULTS, Report, machine_header, render  # noqa: E402
from benchmarks.orders import run_drain_only, run_processes  # noqa: E402
from benchmarks.tickets import run_printing, run_queues, run_ticket_kinds  # noqa: E402
from benchmarks.transport import run_transport  # noqa: E402


def run_mqtt(report: Report, workdir: Path) -> None:
    """(i), in ``benchmarks/publishing.py`` (which builds on ``benchmarks/agents.py``)."""
    from benchmarks import publishing

    logs = workdir / "mqtt"
    logs.mkdir(exist_ok=True)
    asyncio.run(publishing.run_publishing(report, logs))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--only",
        choices=["cycle", "box", "idle", "printing", "tickets", "mqtt", "drain", "transport"],
        help="run only these measures: cycle = (a) outbox vs persist-queue at +0/+2/+10 ms per fsync (about "
        "1 min); box = (a) then (l) end to end on an SD card, (k) idle, (m) a month of orders, (n) the slow box "
        "(about 8 min); idle = (k) alone (about 75 s); printing = (g) ticket rendering, (h) fallback ticket latency "
        "and the "
        "RSS of an agent with python-escpos loaded (about 30 s); tickets = (g) for every ticket kind and (j) "
        "a hung printer next to a healthy one (about 20 s); drain = (d), (e) the drain of --drain-orders queued orders "
        "and start-up with them pending; transport = (d') the HTTP driver's client CPU per order against httpx's "
        "AsyncClient (about 20 s); mqtt = (i) order figures with the MQTT broker "
        "down, and the backlog's publication when it comes back (3-4 min); the table is printed, "
        "results.md is left alone",
    )
    parser.add_argument(
        "--drain-orders",
        type=int,
        default=10_000,
        help="orders queued for --only drain (10,000 unless told; a smaller drain is a quicker comparison)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="venue-agent-bench-"))
    report = Report()
    header = machine_header(workdir)
    try:
        if args.only in (None, "cycle", "box"):
            run_outbox_vs_persist_queue(report, workdir)
        if args.only is None:
            asyncio.run(run_processes(report, workdir))
        if args.only == "idle":
            asyncio.run(run_idle_only(report, workdir))
        if args.only == "drain":
            asyncio.run(run_drain_only(report, workdir, total=args.drain_orders))
        if args.only in (None, "box"):
            asyncio.run(run_box(report, workdir))
        if args.only in (None, "transport"):
            asyncio.run(run_transport(report, workdir))
        if args.only in (None, "printing"):
            asyncio.run(run_printing(report, workdir))
        if args.only in (None, "tickets"):
            run_ticket_kinds(report)
            asyncio.run(run_queues(report, workdir))
        if args.only in (None, "mqtt"):
            run_mqtt(report, workdir)
    except BaseException:
        print(f"benchmark failed; logs and databases kept in {workdir}", file=sys.stderr)
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    text = render(header, report, time.perf_counter() - started)
    if args.only is None:
        RESULTS.write_text(text, encoding="utf-8")
    print()
    print(text)
    if args.only is not None:
        print(f"(--only {args.only}: {os.path.relpath(RESULTS, ROOT)} not written; a full run writes it)")
    return 0 if all(row.ok is not False for row in report.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
