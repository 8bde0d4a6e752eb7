"""Soak: orders at a venue's peak rate while the POS, the printer and the broker fail at random; not in CI.

Run from the repository root (everything on loopback; it stops by itself)::

    .venv/bin/python -m benchmarks.soak --minutes 30 [--rate 3] [--clients 4] [--seed 11]

For ``--minutes`` it posts orders from a few keep-alive clients (paid ASAP orders, pre-orders, unpaid orders that
are paid later, some resent to exercise dedupe) to a real ``venue-agent run``, while the POS simulator is switched
down/hard-down/slow/5xx/429/not-ready and back, a fake network printer goes offline/paper-out/cover-open/refusing and
back, mosquitto is SIGKILLed and restarted, and the agent itself is SIGKILLed and restarted a few times. Then the
faults stop, the outbox drains, and it checks: every acknowledged order (202/200) is in the POS or on a fallback
ticket; no order is in the POS twice; the agent's RSS and open descriptors stayed flat. The Markdown table is printed
and written to ``benchmarks/soak-results.md``. Exit status 0 when every check passes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import os
import random
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from benchmarks import run as core
from tests.conftest import make_order
from tests.fake_printer import FakeNetworkPrinter
from tests.mosquitto import MOSQUITTO, Mosquitto

RESULTS = core.ROOT / "benchmarks" / "soak-results.md"
PENDING = ("held", "scheduled", "queued", "sending", "retrying", "awaiting_pos")
POS_FAULTS: list[dict[str, Any]] = [
    {"down": True},
    # The listener closes, and with it the control endpoint: the simulator must reopen it by itself.
    {"hard_down": True, "hard_down_ms": 20000},
    {"slow_ms": 7000},  # beyond the agent's 5 s POS timeout: the POS has the order, the agent resends (same key)
    {"slow_ms": 1500},
    {"error_rate": 0.5},
    {"error_rate": 1.0},
    {"rate_limit": True},
    {"not_ready": True},
]
POS_HEALTHY = {
    "down": False,
    "hard_down": False,
    "slow_ms": 0,
    "error_rate": 0.0,
    "rate_limit": False,
    "not_ready": False,
}
PRINTER_FAULTS = ("offline", "paper_out", "cover_open", "refuse")


@dataclass
class Ledger:
    """What the senders saw: acknowledged orders by kind, every answer, dedupe misses."""

    acked: dict[str, str] = field(default_factory=dict)  # order id -> kind
    statuses: Counter[str] = field(default_factory=Counter)
    duplicates_answered: int = 0
    dedupe_misses: list[str] = field(default_factory=list)
    gave_up: list[str] = field(default_factory=list)
    paid: set[str] = field(default_factory=set)
    unpaid: dict[str, int] = field(default_factory=dict)  # held order id -> amount
    later: list[tuple[float, int, str, str, bytes]] = field(default_factory=list)  # (due, n, what, id, body)
    faults: Counter[str] = field(default_factory=Counter)


class Agent:
    """The agent process: started, SIGKILLed and restarted on the same outbox; RSS and descriptors sampled."""

    def __init__(self, procs: core.Children, config: Path, port: int) -> None:
        self.procs, self.config, self.base = procs, config, f"http://127.0.0.1:{port}"
        self.popen: subprocess.Popen[bytes] | None = None
        self.incarnation = 0
        self.started_at = 0.0
        self.samples: list[tuple[int, float, int, int]] = []  # (incarnation, age s, rss kB, fds)

    async def start(self) -> None:
        self.incarnation += 1
        self.popen = self.procs.spawn(f"agent-{self.incarnation}", "run", "--config", str(self.config))
        self.started_at = time.monotonic()
        await core.wait_http(f"{self.base}/v1/health", within=60)

    def kill(self) -> None:
        assert self.popen is not None
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def sample(self) -> tuple[int, int] | None:
        """Return (VmRSS kB, open fds) of the running agent, and keep it."""
        if self.popen is None or self.popen.poll() is not None:
            return None
        try:
            status = Path(f"/proc/{self.popen.pid}/status").read_text()
            rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
            fds = sum(1 for _ in Path(f"/proc/{self.popen.pid}/fd").iterdir())
        except (OSError, StopIteration):
            return None
        self.samples.append((self.incarnation, time.monotonic() - self.started_at, rss, fds))
        return rss, fds


def write_config(workdir: Path, *, sim_port: int, printer_port: int, broker_port: int) -> tuple[Path, Path, int]:
    """Write the soaked agent's config; return (config, outbox, intake port)."""
    port = core.free_port()
    db = workdir / "outbox.db"
    path = workdir / "agent.toml"
    path.write_text(
        f"""[venue]
id = "{core.VENUE}"
timezone = "Europe/London"

[storage]
path = {json.dumps(str(db))}
min_free_mb = 0

[intake]
listen = "127.0.0.1:{port}"

[injection]
hold_unpaid = true
buffer_minutes = 1
backoff_base_seconds = 0.5
backoff_max_seconds = 10

[fallback]
print_after_seconds = 30

[pos]
driver = "http"
timeout_seconds = 5
rate_limit_per_second = 20

[pos.http]
url = "http://127.0.0.1:{sim_port}/orders"

[[printers]]
name = "pass"
connection = "network"
host = "127.0.0.1"
port = {printer_port}
profile = "TM-T20II"

[discovery]
advertise = false

[mqtt]
enabled = true
host = "127.0.0.1"
port = {broker_port}
health_interval_seconds = 10

[logging]
level = "warning"
format = "json"
""",
        encoding="utf-8",
    )
    return path, db, port


def new_order(n: int, seed: int, rng: random.Random) -> tuple[str, str, bytes, int]:
    """Return (id, kind, body, amount) of the n-th order: 75 % paid ASAP, 10 % pre-orders, 15 % unpaid."""
    order_id = f"soak-{seed}-{n:06d}"
    now = datetime.now(UTC)
    roll = rng.random()
    changes: dict[str, Any] = {"created_at": now.isoformat(timespec="milliseconds"), "display_code": f"S{n % 10**7}"}
    kind = "asap"
    if roll < 0.10:
        kind = "preorder"  # buffer_minutes = 1: due 10-120 s from now
        changes["requested_at"] = (now + timedelta(seconds=rng.uniform(70, 180))).isoformat(timespec="seconds")
    elif roll < 0.25:
        kind = "unpaid"
        changes["payment"] = dict(core.UNPAID)
    body = json.dumps(make_order(order_id, **changes), separators=(",", ":")).encode()
    return order_id, kind, body, 1910


async def post_until_acked(
    client: httpx.AsyncClient, url: str, body: bytes, *, give_up: float
) -> httpx.Response | None:
    """POST ``body`` until the agent answers below 500 (resending the same body after errors); None if never."""
    deadline = time.monotonic() + give_up
    while time.monotonic() < deadline:
        try:
            response = await client.post(url, content=body, headers={"content-type": "application/json"})
        except httpx.HTTPError:
            await asyncio.sleep(0.5)
            continue
        if response.status_code < 500:
            return response
        await asyncio.sleep(0.5)
    return None


async def sender(
    agent: Agent, ledger: Ledger, rng: random.Random, counter: list[int], *, gap: float, until: float, seed: int
) -> None:
    """One keep-alive client: orders with exponential gaps until ``until``."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(trust_env=False, timeout=10, limits=limits) as client:
        while time.monotonic() < until:
            await asyncio.sleep(rng.expovariate(1 / gap))
            counter[0] += 1
            order_id, kind, body, amount = new_order(counter[0], seed, rng)
            response = await post_until_acked(client, f"{agent.base}/v1/orders", body, give_up=120)
            if response is None:
                ledger.gave_up.append(order_id)
                continue
            ledger.statuses[str(response.status_code)] += 1
            if response.status_code not in (200, 202):
                ledger.dedupe_misses.append(f"{order_id}: {response.status_code} {response.text[:200]}")
                continue
            ledger.acked[order_id] = kind
            if kind == "unpaid":
                ledger.unpaid[order_id] = amount
                heapq.heappush(ledger.later, (time.monotonic() + rng.uniform(5, 60), counter[0], "pay", order_id, b""))
            elif rng.random() < 0.08:  # the platform resends an order it already had an answer for
                heapq.heappush(ledger.later, (time.monotonic() + rng.uniform(0, 30), counter[0], "dup", order_id, body))


async def later_worker(agent: Agent, ledger: Ledger, stop: asyncio.Event) -> None:
    """Pay held orders and resend duplicates when they fall due; after ``stop`` do all that is left at once."""
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        while not (stop.is_set() and not ledger.later):
            if not ledger.later or (ledger.later[0][0] > time.monotonic() and not stop.is_set()):
                await asyncio.sleep(0.2)
                continue
            _, _, what, order_id, body = heapq.heappop(ledger.later)
            if what == "pay":
                payment = json.dumps({"status": "paid", "method": "card", "amount": ledger.unpaid[order_id]}).encode()
                response = await post_until_acked(
                    client, f"{agent.base}/v1/orders/{order_id}/payment", payment, give_up=120
                )
                if response is not None and response.status_code == 200:
                    ledger.paid.add(order_id)
                else:
                    ledger.dedupe_misses.append(f"{order_id}: payment {getattr(response, 'status_code', None)}")
                continue
            response = await post_until_acked(client, f"{agent.base}/v1/orders", body, give_up=120)
            if response is not None and response.status_code == 200 and response.json().get("duplicate") is True:
                ledger.duplicates_answered += 1
            else:
                ledger.dedupe_misses.append(f"{order_id}: resend answered {getattr(response, 'status_code', None)}")


async def pos_faults(sim: core.Sim, ledger: Ledger, rng: random.Random, until: float) -> None:
    """Switch the POS simulator into a random fault for 5-30 s, then healthy for 10-40 s, until ``until``."""
    while time.monotonic() < until:
        await asyncio.sleep(rng.uniform(10, 40))
        fault = rng.choice(POS_FAULTS)
        ledger.faults["pos " + json.dumps(fault)] += 1
        with contextlib.suppress(httpx.HTTPError):
            await sim.client.post(f"{sim.base}/_sim/faults", json=fault)
        await asyncio.sleep(rng.uniform(5, 30))
        with contextlib.suppress(httpx.HTTPError):
            await sim.client.post(f"{sim.base}/_sim/faults", json=POS_HEALTHY)


async def pos_healthy_again(sim: core.Sim, *, give_up: float = 60) -> None:
    """Switch every POS fault off, waiting out a hard-down listener that reopens by itself (``hard_down_ms``)."""
    deadline = time.monotonic() + give_up
    while True:
        try:
            await sim.client.post(f"{sim.base}/_sim/faults", json=POS_HEALTHY)
            return
        except httpx.ConnectError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def printer_faults(printer: FakeNetworkPrinter, ledger: Ledger, rng: random.Random, until: float) -> None:
    """Put the printer offline / out of paper / cover open / refusing for 5-40 s, then back, until ``until``."""
    while time.monotonic() < until:
        await asyncio.sleep(rng.uniform(15, 60))
        fault = rng.choice(PRINTER_FAULTS)
        ledger.faults[f"printer {fault}"] += 1
        if fault == "refuse":
            printer.refuse()
        else:
            printer.mode = fault  # type: ignore[assignment]
        await asyncio.sleep(rng.uniform(5, 40))
        printer.mode = "ok"
        await printer.accept()


async def broker_faults(broker: Mosquitto, ledger: Ledger, rng: random.Random, until: float) -> None:
    """SIGKILL mosquitto every 30-90 s and start it again 3-20 s later, until ``until``."""
    while time.monotonic() < until:
        await asyncio.sleep(rng.uniform(30, 90))
        if broker.popen is not None:
            broker.popen.kill()
            broker.popen.wait(timeout=5)
            broker.popen = None
        ledger.faults["broker SIGKILL"] += 1
        await asyncio.sleep(rng.uniform(3, 20))
        await asyncio.to_thread(broker.start)


async def agent_kills(agent: Agent, ledger: Ledger, rng: random.Random, duration: float, started: float) -> None:
    """SIGKILL the agent a few times in the first 60 % of the run (the last life stays long for the RSS figures)."""
    count = min(12, max(3, round(duration / 300)))
    for at in sorted(rng.uniform(0.1, 0.6) * duration for _ in range(count)):
        await asyncio.sleep(max(0.0, started + at - time.monotonic()))
        agent.kill()
        ledger.faults["agent SIGKILL"] += 1
        await asyncio.sleep(rng.uniform(0.2, 3))
        await agent.start()


async def monitor(agent: Agent, stop: asyncio.Event) -> None:
    """Sample the agent's RSS and descriptors every 5 s."""
    while not stop.is_set():
        agent.sample()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=5)


async def drain(agent: Agent, db: Path, *, within: float) -> tuple[float, dict[str, int], int]:
    """Wait until nothing is pending and every event is published; return (seconds, counts, unpublished)."""
    started = time.monotonic()
    counts: dict[str, int] = {}
    unpublished = -1
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        while time.monotonic() - started < within:
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                counts = await core.outbox_counts(client, agent.base)
                with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
                    unpublished = conn.execute("SELECT count(*) FROM events WHERE published = 0").fetchone()[0]
                if not any(counts.get(s, 0) for s in PENDING) and unpublished == 0:
                    break
            await asyncio.sleep(1)
    return time.monotonic() - started, counts, unpublished


def outbox_rows(db: Path) -> tuple[dict[str, str], set[str]]:
    """Return {order id: state} and the ids with a printed fallback job, from the stopped agent's outbox."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        states = dict(conn.execute("SELECT id, state FROM orders").fetchall())
        printed = {r[0] for r in conn.execute("SELECT order_id FROM print_jobs WHERE state = 'printed'")}
    return states, printed


@dataclass
class Verdict:
    """The end-of-run checks."""

    rows: list[list[str]]
    ok: bool


def judge(
    ledger: Ledger,
    agent: Agent,
    sim_orders: list[dict[str, Any]],
    states: dict[str, str],
    printed: set[str],
    tickets: set[str],
    drained: tuple[float, dict[str, int], int],
) -> Verdict:
    """Compare what was acknowledged with what reached the POS or paper; RSS and fds of the last life."""
    by_id: Counter[str] = Counter(o["order"]["id"] for o in sim_orders)
    keys: Counter[str] = Counter(o["key"] for o in sim_orders)
    in_pos = {i for i in ledger.acked if by_id[i]}
    paper_only = {i for i in ledger.acked if i not in in_pos and (i in printed or i in tickets)}
    lost = sorted(i for i in ledger.acked if i not in in_pos and i not in paper_only)
    duplicated = sorted(i for i, n in by_id.items() if n > 1) + sorted(k for k, n in keys.items() if n > 1)
    marked = sum(1 for o in sim_orders if "ALREADY PRINTED" in str(o["order"].get("notes") or ""))
    kinds = Counter(ledger.acked.values())
    life = [s for s in agent.samples if s[0] == agent.incarnation and s[1] >= 30] or agent.samples[-1:]
    first, last = life[0], life[-1]
    rss_growth = (last[2] - first[2]) / 1024
    fd_growth = last[3] - first[3]
    flat = rss_growth <= max(5.0, first[2] / 1024 * 0.10) and fd_growth <= 4
    seconds, counts, unpublished = drained
    rows = [
        [
            "orders acknowledged (202 or 200)",
            "-",
            f"{len(ledger.acked):,} ({', '.join(f'{k}: {v}' for k, v in sorted(kinds.items()))}); "
            f"answers {dict(ledger.statuses)}; never answered after 120 s: {len(ledger.gave_up)}",
            "-",
        ],
        [
            "acknowledged orders lost (neither in the POS nor on a fallback ticket)",
            "0",
            f"{len(lost)}"
            + (" (e.g. " + ", ".join(f"{i}={states.get(i, 'absent')}" for i in lost[:5]) + ")" if lost else ""),
            "pass" if not lost else "**miss**",
        ],
        [
            "acknowledged orders in the POS / on paper only",
            "-",
            f"{len(in_pos):,} / {len(paper_only)} "
            f"(final outbox states: {dict(Counter(states.get(i, 'absent') for i in ledger.acked))})",
            "-",
        ],
        [
            "duplicate POS orders (an order id under two keys, or a key twice)",
            "0",
            f"{len(duplicated)}" + (f" ({', '.join(duplicated[:5])})" if duplicated else ""),
            "pass" if not duplicated else "**miss**",
        ],
        [
            "fallback tickets cut at the printer / POS orders marked ALREADY PRINTED",
            "-",
            f"{len(tickets)} / {marked}",
            "-",
        ],
        [
            "resends of acknowledged orders answered 200 duplicate / dedupe or payment anomalies",
            "0 anomalies",
            f"{ledger.duplicates_answered} / {len(ledger.dedupe_misses)}"
            + (f" ({'; '.join(ledger.dedupe_misses[:3])})" if ledger.dedupe_misses else ""),
            "pass" if not ledger.dedupe_misses else "**miss**",
        ],
        [
            "drain after faults stopped (nothing pending, every MQTT event published)",
            "<= 600 s",
            f"{seconds:.0f} s (pending: {sum(counts.get(s, 0) for s in PENDING)}, unpublished events: {unpublished})",
            "pass" if not any(counts.get(s, 0) for s in PENDING) and unpublished == 0 else "**miss**",
        ],
        [
            f"agent RSS, last life (#{agent.incarnation}), first sample after 30 s -> end of drain",
            "flat (<= +5 MB or 10 %)",
            f"{first[2] / 1024:.1f} -> {last[2] / 1024:.1f} MB ({rss_growth:+.1f} MB over {last[1] - first[1]:.0f} s; "
            f"max {max(s[2] for s in agent.samples) / 1024:.1f} MB over all lives)",
            "pass" if flat else "**miss**",
        ],
        [
            "agent open file descriptors, same samples",
            "flat (<= +4)",
            f"{first[3]} -> {last[3]} (max {max(s[3] for s in agent.samples)} over all lives)",
            "pass" if fd_growth <= 4 else "**miss**",
        ],
        ["faults injected", "-", "; ".join(f"{n} x {k}" for k, n in sorted(ledger.faults.items())), "-"],
    ]
    return Verdict(rows, not lost and not duplicated and not ledger.dedupe_misses and flat)


def tickets_cut(printer: FakeNetworkPrinter) -> set[str]:
    """Return the ids of orders whose ticket reached the fake printer complete (with its cut)."""
    found: set[str] = set()
    for job in printer.jobs:
        if core.CUT not in job:
            continue
        for part in job.split(b"Order ")[1:]:
            found.add(part.split(b"\n", 1)[0].split(b"\r", 1)[0].split(b"\x1b", 1)[0].strip().decode(errors="replace"))
    return found


async def soak(args: argparse.Namespace, workdir: Path) -> Verdict:
    duration = args.minutes * 60
    rng = random.Random(args.seed)
    streams = [random.Random(rng.random()) for _ in range(6 + args.clients)]
    ledger = Ledger()
    if MOSQUITTO is None:
        raise SystemExit("mosquitto is not installed (apt-get install mosquitto)")
    broker_dir = workdir / "broker"
    broker_dir.mkdir()
    broker = Mosquitto(MOSQUITTO, broker_dir)
    await asyncio.to_thread(broker.start)
    with core.children(workdir) as procs:
        sim = core.Sim(procs)
        async with FakeNetworkPrinter.running() as printer:
            try:
                await sim.ready()
                config, db, port = write_config(
                    workdir, sim_port=sim.port, printer_port=printer.port, broker_port=broker.port
                )
                agent = Agent(procs, config, port)
                await agent.start()
                started = time.monotonic()
                until = started + duration
                stop_monitor, stop_later = asyncio.Event(), asyncio.Event()
                counter = [0]
                gap = args.clients / args.rate
                tasks = [
                    asyncio.create_task(
                        sender(agent, ledger, streams[6 + i], counter, gap=gap, until=until, seed=args.seed),
                        name=f"soak.sender-{i}",
                    )
                    for i in range(args.clients)
                ]
                faults = [
                    asyncio.create_task(pos_faults(sim, ledger, streams[0], until), name="soak.pos-faults"),
                    asyncio.create_task(printer_faults(printer, ledger, streams[1], until), name="soak.printer-faults"),
                    asyncio.create_task(broker_faults(broker, ledger, streams[2], until), name="soak.broker-faults"),
                    asyncio.create_task(
                        agent_kills(agent, ledger, streams[3], duration, started), name="soak.agent-kills"
                    ),
                ]
                side = [
                    asyncio.create_task(later_worker(agent, ledger, stop_later), name="soak.later"),
                    asyncio.create_task(monitor(agent, stop_monitor), name="soak.monitor"),
                ]
                await asyncio.gather(*tasks)
                print(f"traffic done: {len(ledger.acked)} acknowledged; faults stop, drain", flush=True)
                await asyncio.gather(*faults[3:])  # an agent restart in progress completes
                for task in faults[:3]:
                    task.cancel()
                await asyncio.gather(*faults[:3], return_exceptions=True)
                await pos_healthy_again(sim)
                printer.mode = "ok"
                await printer.accept()
                if broker.popen is None:
                    await asyncio.to_thread(broker.start)
                stop_later.set()
                await side[0]
                drained = await drain(agent, db, within=600)
                agent.sample()
                stop_monitor.set()
                await side[1]
                assert agent.popen is not None
                await core.terminate(agent.popen)
                states, printed = outbox_rows(db)
                sim_orders = await sim.orders()
                return judge(ledger, agent, sim_orders, states, printed, tickets_cut(printer), drained)
            finally:
                await sim.client.aclose()
                broker.stop()


def render(args: argparse.Namespace, verdict: Verdict, seconds: float) -> str:
    command = " ".join(
        shlex.quote(a) for a in [os.path.relpath(sys.executable, core.ROOT), "-m", "benchmarks.soak", *sys.argv[1:]]
    )
    lines = [
        "# venue-agent soak",
        "",
        f"- date: {datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- command: `{command}` (from the repository root)",
        f"- {args.minutes:g} min of orders at {args.rate:g}/s from {args.clients} keep-alive clients, "
        f"seed {args.seed}; "
        f"wall time {seconds:.0f} s; nproc {len(os.sched_getaffinity(0))}; load at the end "
        + " / ".join(f"{x:.2f}" for x in os.getloadavg()),
        "",
        "| measure | target | result | pass/miss |",
        "|---|---|---|---|",
        *("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in verdict.rows),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--minutes", type=float, default=30, help="how long orders and faults go on (default 30)")
    parser.add_argument("--rate", type=float, default=3, help="orders per second over all clients (default 3)")
    parser.add_argument("--clients", type=int, default=4, help="keep-alive HTTP clients (default 4)")
    parser.add_argument("--seed", type=int, default=11, help="seed of every random choice (default 11)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="venue-agent-soak-"))
    started = time.monotonic()
    try:
        verdict = asyncio.run(soak(args, workdir))
    except BaseException:
        print(f"soak failed; logs and outbox kept in {workdir}", file=sys.stderr)
        raise
    text = render(args, verdict, time.monotonic() - started)
    RESULTS.write_text(text, encoding="utf-8")
    print(text)
    if verdict.ok:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"checks missed; logs and outbox kept in {workdir}", file=sys.stderr)
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
