"""(i) MQTT publishing against order flow: ``.venv/bin/python benchmarks/run.py --only mqtt`` (3-4 min).

The issue's target: publishing must not slow order flow. With the broker down for 10 minutes of simulated
traffic, the order figures of the core issue hold within 10 %; 1,000 queued events publish within 5 s of the
reconnect.

**Order flow with the broker down.** The core figures are measured on agents with MQTT off (the baseline) and
on agents with MQTT on, pointed at a loopback port where nothing listens (the broker is down: every connection
attempt is refused, and the reporter backs off 1 s doubling to 15 s, each wait jittered to 50-100 %). Both
kinds of agent get the same work:

- "10 minutes of traffic": a busy venue's peak is about one order a second (3,600 an hour), so 10 minutes of
  it is 600 orders. They are posted at once (8 keep-alive clients) and injected into the simulator before the
  measures start, so each agent measures with the unpublished events of 600 injected orders in its outbox
  (MQTT off writes the same event rows; nobody publishes them). The backlog is the one a 10-minute outage
  leaves, and the reporter never reads it while disconnected. Compressing the 10 minutes changes only what the
  reporter does meanwhile: after a real 10-minute outage it tries every 7.5-15 s; these agents are younger and
  try after 1, 2, 4, 8, 16 s... -- more attempts during the measures, the harsher case.
- (b) HTTP intake with 64 keep-alive clients (unpaid orders: ``held``), windows of 5 s of which the last
  3.5 s count (the core: 9 s), and (c) 202 -> simulator overhead at 20 orders/s, windows of 6 s (120 orders;
  the core: one of 15 s), on two agents started side by side (one per mode, idle while the other is
  measured); then their peak RSS (f).
- (e) start-up and (d) the drain of 3,000 queued orders into an unthrottled simulator (the core: 10,000), each
  run on a fresh agent whose outbox is a copy of one template: the 600 orders' history (submitted, claimed
  and injected through the ``Outbox`` API) and the 3,000 queued orders.

The one-client intake figure of (b) and the rate-limited drain of (d) are left out to keep the section short.

Noise: the machine has 2 cores and is shared, and interference only ever makes a figure worse. So runs are
never concurrent; each measure has three windows (or runs) per mode in the order off, down, down, off, off,
down (ABBAAB: neither mode gets the warmer or the colder slots), and each figure is the **best of its
three** (highest throughput; lowest time, CPU per order). Latency is the exception: a 120-order window's
p50 moves by about +-10 % from one window to the next and its p99 by +-20 % (measured: 8 windows per mode,
no difference between the modes), so (c) has five windows per mode (ABBAABBAAB) and its p50 and p99 are
those of all 600 orders of a mode together. The CPU that other processes use during each window is measured
(``/proc/stat`` minus the benchmark's own processes) and shown; a window in which they used more than 0.5
cores (the benchmark itself keeps about 1.2 of the 2 busy) is run once more, up to 6 times in the section,
keeping the quieter attempt. Other processes' CPU does not explain all the spread: the outbox commits with
``synchronous=FULL``, so the disk's fsync time (shared with the machine's other users) weighs on (b) and (d)
too. A figure passes when the broker-down figure is at most 10 % worse than the baseline's (throughput
>= 90 %; times, latency, memory and CPU <= 110 %) and the core's own target, where it has one, holds.

**Reconnect.** A third agent with MQTT on and the broker down takes the same 600 orders first (its backlog:
their unpublished events, well over 1,000), then waits, idle, while the measures above run (about 3 min, so
its reporter's backoff is at its cap, as after a real 10-minute outage; an idle agent costs nothing
measurable, and it is there for both modes alike). Then a real ``mosquitto`` starts on its broker port
(``persistence false``). A subscriber connects as soon as the broker accepts connections and subscribes
(QoS 1) to ``venues/<venue>/events`` and ``.../status``. Measured: mosquitto start -> accepting; accepting
-> the agent's ``online`` status (the wait for the reporter's next attempt: anywhere from 0 to 15 s, hence
the section's 3 to 4 minutes); ``online`` -> the 1,000th and -> the last queued event received; and that the
queued events arrive in ``seq`` order, none missing, none twice (``seq`` from ``EventRecord.as_dict``; the
queue is every unpublished row when the broker started, read from the outbox). An ``online`` status that
arrives retained means the agent connected before the subscriber subscribed (events may have been missed):
the run is reported as a miss.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
import httpx

from agent.domain.clock import SystemClock
from agent.domain.states import State
from agent.mqtt.reporter import BACKOFF_MAX_SECONDS
from agent.outbox import transitions
from agent.outbox.store import Outbox
from benchmarks import agents as core
from benchmarks import orders
from benchmarks.harness import VENUE, Report

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
TOPIC_PREFIX = "venues"
PREFIX = f"{TOPIC_PREFIX}/{VENUE}"
TRAFFIC_ORDERS = 600  # 10 minutes at one order a second
TRAFFIC_CLIENTS = 8
MODES = ("off", "down")
LABEL = {"off": "off", "down": "on, broker down"}
ORDER = ("off", "down", "down", "off", "off", "down")  # ABBAAB: a linear drift weighs on both modes alike
LATENCY_ORDER = (*ORDER, "down", "off", "off", "down")  # ABBAABBAAB
INTAKE_SECONDS, INTAKE_WARMUP = 5.0, 1.5
LATENCY_RATE, LATENCY_SECONDS = 20.0, 6.0
DRAIN_ORDERS = 3_000
QUEUED_TARGET = 1_000
QUEUED_WITHIN = 5.0
TOLERANCE = 0.10
QUIET_CORES = 0.5  # a window in which other processes used more is run again (once) ...
ATTEMPTS = 2
REPEATS = 6  # ... up to this many times in the section
T = TypeVar("T")


# ---- other processes' CPU ------------------------------------------------------------------------------


def machine_cpu_seconds() -> float:
    """CPU time the whole machine has used since boot (user, nice, system, irq, softirq, steal): /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields)
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds(procs: core.Children) -> dict[int, float]:
    """CPU time of this process and of every running process the benchmark started, by pid (0: this one)."""
    seen = {0: time.process_time()}
    for popen in procs.started:
        if popen.poll() is None:
            with contextlib.suppress(OSError, IndexError):
                seen[popen.pid] = core.cpu_seconds(popen.pid)
    return seen


class Others:
    """The CPU, in cores, that processes other than the benchmark's used between ``start()`` and ``stop()``."""

    def __init__(self, procs: core.Children) -> None:
        self.procs = procs
        self.cores = 0.0
        self.start()

    def start(self) -> None:
        self._wall, self._machine, self._own = time.perf_counter(), machine_cpu_seconds(), own_cpu_seconds(self.procs)

    def stop(self) -> float:
        wall = time.perf_counter() - self._wall
        machine = machine_cpu_seconds() - self._machine
        own = sum(cpu - self._own.get(pid, 0.0) for pid, cpu in own_cpu_seconds(self.procs).items())
        self.cores = max(0.0, machine - own) / wall
        return self.cores


@dataclass
class Budget:
    """Repeats left for the section, and how many were used."""

    left: int = REPEATS
    used: int = 0


async def quietly(label: str, attempt: Callable[[int], Awaitable[tuple[T, float]]], budget: Budget) -> tuple[T, float]:
    """Run ``attempt(n)`` (returning its result and the other processes' cores) until a quiet one; keep the
    quietest."""
    kept: tuple[T, float] | None = None
    for n in range(ATTEMPTS):
        result, others = await attempt(n)
        if kept is None or others < kept[1]:
            kept = (result, others)
        if others <= QUIET_CORES or n == ATTEMPTS - 1 or budget.left <= 0:
            break
        budget.left -= 1
        budget.used += 1
        print(f"    other processes used {others:.2f} cores during {label}: once more", flush=True)
    assert kept is not None
    return kept


# ---- helpers -----------------------------------------------------------------------------------------


def mqtt_section(port: int) -> dict[str, Any]:
    """The ``[mqtt]`` section of an agent whose broker is 127.0.0.1:``port``."""
    return {"enabled": True, "host": "127.0.0.1", "port": port, "topic_prefix": TOPIC_PREFIX}


def unpublished(db: Path) -> list[int]:
    """Return the seqs of the outbox's unpublished events, in order (a read-only connection: WAL readers wait
    for nobody)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return [r[0] for r in conn.execute("SELECT seq FROM events WHERE published = 0 ORDER BY seq")]


def log_events(path: Path) -> dict[str, int]:
    """Count the JSON log lines of an agent by their ``event``."""
    seen: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError, AttributeError):
                event = json.loads(line).get("event")
                if isinstance(event, str):
                    seen[event] = seen.get(event, 0) + 1
    return seen


def last_log(procs: core.Children) -> Path:
    """The log file of the process ``procs`` started last (named as ``Children.spawn`` names it)."""
    index = len(procs.started) - 1
    matches = sorted(procs.logs.glob(f"*-{index:02d}.log"))
    assert matches, f"no log for process {index}"
    return matches[0]


async def post_traffic(port: int, count: int, prefix: str) -> None:
    """Post ``count`` paid ASAP orders over ``TRAFFIC_CLIENTS`` keep-alive connections; each must get a 202."""
    requests = iter([core.post_request(port, body) for body in core.order_bodies(count, prefix)])

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for request in requests:
                writer.write(request)
                status, _, answer = await core.read_response(reader)
                if status != 202:
                    msg = f"intake answered {status}: {answer!r}"
                    raise RuntimeError(msg)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    await asyncio.gather(*(client() for _ in range(TRAFFIC_CLIENTS)))


async def settle(base: str, sim: core.Sim, count: int, *, within: float = 60) -> None:
    """Wait until nothing is pending in the agent and the simulator holds ``count`` orders."""
    deadline = time.perf_counter() + within
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        while True:
            counts = await core.outbox_counts(client, base)
            if not any(counts.get(s, 0) for s in core.PENDING) and len(await sim.orders()) >= count:
                return
            if time.perf_counter() > deadline:
                msg = f"the traffic did not settle within {within} s: {counts}"
                raise RuntimeError(msg)
            await asyncio.sleep(0.2)


async def seed_history(db: Path, count: int) -> None:
    """Give a fresh outbox the history of ``count`` injected orders (submitted, claimed, injected)."""
    await core.fill_outbox(db, core.bench_orders(count, "history"), submitters=16)
    outbox = Outbox(db, clock=SystemClock(), min_free_mb=0)
    await outbox.open()
    try:
        while True:
            now = outbox.clock.now()
            claimed = await outbox.write(lambda c, n=now: transitions.claim(c, now=n, limit=100, count_strike=True))
            if not claimed:
                break
            for record in claimed:
                await outbox.transition(
                    record.id,
                    State.INJECTED,
                    event="injected",
                    expect=(State.SENDING,),
                    pos_reference="HISTORY",
                    injected_at=outbox.clock.now(),
                )
        counts = await outbox.counts()
    finally:
        await outbox.close()
    assert counts.get("injected") == count, counts


# ---- order flow: MQTT off vs broker down -------------------------------------------------------------


@dataclass
class Agent:
    """A running agent that took the 10 minutes of traffic."""

    popen: subprocess.Popen[bytes]
    port: int
    log: Path
    backlog: int


def per_mode() -> dict[str, list[Any]]:
    return {mode: [] for mode in MODES}


@dataclass
class Samples:
    """Every kept window's or run's figures and other processes' cores, per mode ("off", "down")."""

    intake: dict[str, list[float]] = field(default_factory=per_mode)
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODES, 0))
    overhead: dict[str, list[list[float]]] = field(default_factory=per_mode)
    startup: dict[str, list[float]] = field(default_factory=per_mode)
    drain: dict[str, list[float]] = field(default_factory=per_mode)
    cpu_ms: dict[str, list[float]] = field(default_factory=per_mode)
    others: dict[str, list[float]] = field(default_factory=dict)  # by measure: cores in each kept window
    rss_mb: dict[str, float] = field(default_factory=dict)
    backlog: dict[str, int] = field(default_factory=dict)
    drain_backlog: int = 0
    budget: Budget = field(default_factory=Budget)


async def loaded_agent(
    procs: core.Children, sim: core.Sim, workdir: Path, mode: str, mqtt: dict[str, Any] | None
) -> Agent:
    """Start an intake + latency agent and give it the 10 minutes of traffic (all injected)."""
    config, db, port = core.agent_config(workdir, f"{mode}-intake", sim_port=sim.port, rate=200, mqtt=mqtt)
    popen = procs.spawn(f"agent-{mode}-intake", "run", "--config", str(config))
    log = last_log(procs)
    base = f"http://127.0.0.1:{port}"
    await core.wait_http(f"{base}/v1/health", within=15)
    await sim.reset()
    await post_traffic(port, TRAFFIC_ORDERS, "traffic")
    await settle(base, sim, TRAFFIC_ORDERS)
    return Agent(popen, port, log, len(unpublished(db)))


async def intake_and_latency(
    procs: core.Children, sim: core.Sim, workdir: Path, mqtt: dict[str, Any], s: Samples
) -> None:
    """(b), (c), (f) on two agents side by side, one with MQTT off, one with the broker down, in ABBAAB windows."""
    agents = {mode: await loaded_agent(procs, sim, workdir, mode, None if mode == "off" else mqtt) for mode in MODES}
    s.others["intake"], s.others["latency"] = [], []
    try:
        for i, mode in enumerate(ORDER):
            print(f"(i) (b) intake window {i + 1} of {len(ORDER)}: MQTT {LABEL[mode]}", flush=True)

            async def intake(n: int, port: int = agents[mode].port, i: int = i) -> tuple[tuple[float, int], float]:
                others = Others(procs)
                rate, errors, _ = await orders.intake_throughput(
                    port, clients=64, seconds=INTAKE_SECONDS, warmup=INTAKE_WARMUP, prefix=f"intake{i}-{n}"
                )
                return (rate, errors), others.stop()

            (rate, errors), others = await quietly(f"intake window {i + 1}", intake, s.budget)
            s.intake[mode].append(rate)
            s.errors[mode] += errors
            s.others["intake"].append(others)
        for i, mode in enumerate(LATENCY_ORDER):
            print(f"(i) (c) latency window {i + 1} of {len(LATENCY_ORDER)}: MQTT {LABEL[mode]}", flush=True)

            async def latency(n: int, port: int = agents[mode].port, i: int = i) -> tuple[list[float], float]:
                await sim.reset()
                others = Others(procs)
                overhead, _, _ = await orders.overhead_at(
                    port, sim, rate=LATENCY_RATE, seconds=LATENCY_SECONDS, prefix=f"latency{i}-{n}"
                )
                return overhead, others.stop()

            overhead, others = await quietly(f"latency window {i + 1}", latency, s.budget)
            s.overhead[mode].append(overhead)
            s.others["latency"].append(others)
        for mode, agent in agents.items():
            s.rss_mb[mode] = core.vm_hwm_kb(agent.popen.pid) / 1024
            s.backlog[mode] = agent.backlog
    finally:
        for agent in agents.values():
            await core.terminate(agent.popen)
    if not log_events(agents["down"].log).get("mqtt_unavailable"):
        msg = f"the broker-down agent did not log mqtt_unavailable (see {agents['down'].log})"
        raise RuntimeError(msg)


async def drain_once(
    procs: core.Children, sim: core.Sim, workdir: Path, name: str, mqtt: dict[str, Any] | None, template: Path
) -> tuple[tuple[float, float, float], float]:
    """One (e), (d) run on a copy of ``template``; return ((start-up s, orders/s, CPU ms per order), others)."""
    config, db, port = core.agent_config(workdir, name, sim_port=sim.port, rate=10_000, mqtt=mqtt)
    with contextlib.closing(sqlite3.connect(template)) as src, contextlib.closing(sqlite3.connect(db)) as dst:
        src.backup(dst)
    await sim.reset()
    base = f"http://127.0.0.1:{port}"
    others = Others(procs)
    started = time.perf_counter()
    popen = procs.spawn(f"agent-{name}", "run", "--config", str(config))
    try:
        ready = await core.wait_http(f"{base}/v1/health", within=30)
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            while True:
                counts = await core.outbox_counts(client, base)
                if not any(counts.get(state, 0) for state in core.PENDING):
                    break
                if time.perf_counter() - ready > 120:
                    msg = f"the drain did not finish: {counts}"
                    raise RuntimeError(msg)
                await asyncio.sleep(0.2)  # as in (d): each health snapshot costs the agent a few ms
        drained = time.perf_counter()
        cpu_ms = core.cpu_seconds(popen.pid) * 1000 / DRAIN_ORDERS
        others.stop()
    finally:
        await core.terminate(popen)
    in_pos = len(await sim.orders())
    if in_pos != DRAIN_ORDERS or counts.get("failed"):
        msg = f"drain: {in_pos} of {DRAIN_ORDERS} orders in the POS, failed={counts.get('failed')}"
        raise RuntimeError(msg)
    return (ready - started, DRAIN_ORDERS / (drained - ready), cpu_ms), others.cores


async def drains(procs: core.Children, sim: core.Sim, workdir: Path, mqtt: dict[str, Any], s: Samples) -> None:
    """(e), (d): fresh agents on copies of one outbox (history + queued orders), in ABBAAB order."""
    template = workdir / "drain-template.db"
    await seed_history(template, TRAFFIC_ORDERS)
    await core.fill_outbox(template, core.bench_orders(DRAIN_ORDERS, "drain"))
    s.drain_backlog = len(unpublished(template))
    s.others["drain"] = []
    for i, mode in enumerate(ORDER):
        print(f"(i) (e), (d) drain {i + 1} of {len(ORDER)}: MQTT {LABEL[mode]}", flush=True)

        async def run(n: int, mode: str = mode, i: int = i) -> tuple[tuple[float, float, float], float]:
            config = None if mode == "off" else mqtt
            return await drain_once(procs, sim, workdir, f"{mode}-drain{i}-{n}", config, template)

        (startup, rate, cpu_ms), others = await quietly(f"drain {i + 1}", run, s.budget)
        s.startup[mode].append(startup)
        s.drain[mode].append(rate)
        s.cpu_ms[mode].append(cpu_ms)
        s.others["drain"].append(others)


def compare(
    report: Report,
    measure: str,
    runs: dict[str, list[float]],
    *,
    unit: str,
    fmt: str,
    higher_is_better: bool,
    others: list[float] | None,
    limit: tuple[str, Callable[[float], bool]] | None = None,
    pooled: tuple[str, dict[str, float]] | None = None,
) -> None:
    """Add one side-by-side row: MQTT off and broker down (the best of each, or ``pooled``), the change, and
    every window's or run's figure."""
    best = max if higher_is_better else min
    base, down = best(runs["off"]), best(runs["down"])
    how = f"best of {len(runs['off'])}" if len(runs["off"]) > 1 else "one each"
    if pooled is not None:
        how, values = pooled
        base, down = values["off"], values["down"]
    change = (down - base) / base * 100
    ok = down >= base * (1 - TOLERANCE) if higher_is_better else down <= base * (1 + TOLERANCE)
    bound = f">= {100 - TOLERANCE * 100:.0f}%" if higher_is_better else f"<= {100 + TOLERANCE * 100:.0f}%"
    target = f"down {bound} of off"
    if limit is not None:
        target += f"; {limit[0]}"
        ok = ok and limit[1](down)
    each = "; ".join(f"{mode} " + " / ".join(format(v, fmt) for v in runs[mode]) for mode in MODES)
    noise = f"; other processes: up to {max(others):.2f} cores" if others else ""
    report.add(
        f"(i) broker down vs MQTT off: {measure} ({how})",
        target,
        f"off {format(base, fmt)} {unit}, down {format(down, fmt)} {unit} ({change:+.1f}%; {each}{noise})",
        ok,
    )


def compare_rows(report: Report, s: Samples, dead_port: int) -> None:
    report.add(
        "(i) set-up: MQTT off (baseline) vs broker down (MQTT on, a 127.0.0.1 port where nothing listens); each "
        f"agent first took 10 minutes of peak traffic ({TRAFFIC_ORDERS} orders at 1/s, posted at once and "
        "injected); windows and runs in the order off, down, down, off, off, down",
        "-",
        f"unpublished events when the measures began: {s.backlog['down']:,} ((b), (c) agents; then growing with "
        f"their orders), {s.drain_backlog:,} ((e), (d) agents); broker port {dead_port}; the broker-down agent "
        f"logged `mqtt_unavailable`; windows run again for other processes' load: {s.budget.used}",
        None,
    )
    compare(
        report,
        f"(b) HTTP intake, 64 keep-alive clients, unpaid orders (`held`), {INTAKE_SECONDS - INTAKE_WARMUP:g} s "
        f"counted after {INTAKE_WARMUP:g} s",
        s.intake,
        unit="orders/s",
        fmt=",.0f",
        higher_is_better=True,
        others=s.others["intake"],
        limit=(">= 1,000 orders/s", lambda v: v >= 1000 and s.errors["down"] == 0),
    )
    every = {mode: [x for window in s.overhead[mode] for x in window] for mode in MODES}
    windows = len(s.overhead["off"])
    for q, most in ((50, 10), (99, 50)):
        compare(
            report,
            f"(c) overhead 202 -> simulator at {LATENCY_RATE:g} orders/s, p{q}",
            {mode: [core.percentile(w, q) for w in s.overhead[mode]] for mode in MODES},
            unit="ms",
            fmt=".1f",
            higher_is_better=False,
            others=s.others["latency"],
            limit=(f"<= {most} ms", lambda v, most=most: v <= most),
            pooled=(
                f"p{q} of all {len(every['off'])} orders of {windows} windows of {LATENCY_SECONDS:g} s; each "
                f"window's p{q} shown",
                {mode: core.percentile(every[mode], q) for mode in MODES},
            ),
        )
    compare(
        report,
        "(f) peak RSS of the (b), (c) agent (VmHWM at the end)",
        {mode: [s.rss_mb[mode]] for mode in MODES},
        unit="MB",
        fmt=".1f",
        higher_is_better=False,
        others=None,
        limit=("<= 80 MB", lambda v: v <= 80),
    )
    compare(
        report,
        f"(e) start-up to ready with {DRAIN_ORDERS:,} queued orders",
        s.startup,
        unit="s",
        fmt=".2f",
        higher_is_better=False,
        others=s.others["drain"],
        limit=("<= 2 s", lambda v: v <= 2),
    )
    compare(
        report,
        f"(d) drain of {DRAIN_ORDERS:,} queued orders into an unthrottled simulator",
        s.drain,
        unit="orders/s",
        fmt=",.0f",
        higher_is_better=True,
        others=s.others["drain"],
    )
    compare(
        report,
        "(d) agent CPU time per drained order (whole process life)",
        s.cpu_ms,
        unit="ms",
        fmt=".2f",
        higher_is_better=False,
        others=s.others["drain"],
    )
    if any(s.errors.values()):
        report.notes.append(f"- (i): non-202 answers during (b): {s.errors}")


# ---- reconnect: the backlog published --------------------------------------------------------------


@dataclass
class Reconnect:
    """What the subscriber saw after the broker came up."""

    queued: list[int]  # the seqs waiting when the broker started
    spawned: float
    accepting: float
    subscribed: float
    online: float | None
    online_retained: bool
    received: list[tuple[int, float]]  # (seq, perf_counter) of every event received, queued or not
    marked: float | None  # when the outbox had no queued event left unpublished
    agent_ready: float
    others: float  # other processes' cores from the broker's start to the last queued event


def start_mosquitto(conf: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``mosquitto -c conf``, its output to ``log_path``; return at once."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [MOSQUITTO, "-c", str(conf)], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )


async def subscribe_when_up(port: int, popen: subprocess.Popen[bytes], *, within: float) -> aiomqtt.Client:
    """Connect a subscriber as soon as mosquitto accepts, retrying every 2 ms; return it entered."""
    deadline = time.perf_counter() + within
    while True:
        client = aiomqtt.Client("127.0.0.1", port, identifier="venue-agent-bench-subscriber")
        try:
            await client.__aenter__()
            return client
        except aiomqtt.MqttError:
            if popen.poll() is not None:
                msg = f"mosquitto exited with {popen.returncode}"
                raise RuntimeError(msg) from None
            if time.perf_counter() > deadline:
                raise
            await asyncio.sleep(0.002)


@dataclass
class Outage:
    """The reconnect agent: MQTT on, its broker down since it started."""

    popen: subprocess.Popen[bytes]
    db: Path
    broker_port: int
    ready: float


async def start_outage(procs: core.Children, sim: core.Sim, workdir: Path) -> Outage:
    """Start the reconnect agent (broker down) and give it the 10 minutes of traffic; it then waits, idle, while
    the other measures run, so that its backoff reaches its cap as after a real 10-minute outage."""
    broker_port = core.free_port()
    config, db, port = core.agent_config(
        workdir, "reconnect", sim_port=sim.port, rate=200, mqtt=mqtt_section(broker_port)
    )
    base = f"http://127.0.0.1:{port}"
    await sim.reset()
    popen = procs.spawn("agent-reconnect", "run", "--config", str(config))
    log_path = last_log(procs)
    ready = await core.wait_http(f"{base}/v1/health", within=15)
    await post_traffic(port, TRAFFIC_ORDERS, "reconnect")
    await settle(base, sim, TRAFFIC_ORDERS)
    if not log_events(log_path).get("mqtt_unavailable"):
        msg = f"the reconnect agent did not log mqtt_unavailable (see {log_path})"
        raise RuntimeError(msg)
    return Outage(popen, db, broker_port, ready)


async def reconnect_drain(procs: core.Children, outage: Outage, workdir: Path) -> Reconnect:
    """Start mosquitto on the reconnect agent's broker port; see its queued events arrive."""
    db, broker_port, popen = outage.db, outage.broker_port, outage.popen
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {broker_port} 127.0.0.1\nallow_anonymous true\npersistence false\n", encoding="utf-8")
    subscriber: aiomqtt.Client | None = None
    try:
        queued = unpublished(db)
        others = Others(procs)
        spawned = time.perf_counter()
        broker = start_mosquitto(conf, workdir / "mosquitto.log")
        procs.started.append(broker)  # stopped with the others, whatever happens
        subscriber = await subscribe_when_up(broker_port, broker, within=10)
        accepting = time.perf_counter()
        await subscriber.subscribe(f"{PREFIX}/status", qos=1)
        await subscriber.subscribe(f"{PREFIX}/events", qos=1)
        subscribed = time.perf_counter()
        online: float | None = None
        retained = False
        received: list[tuple[int, float]] = []
        last = queued[-1] if queued else 0

        async def listen() -> None:
            nonlocal online, retained
            assert subscriber is not None
            async for message in subscriber.messages:
                at = time.perf_counter()
                if not isinstance(message.payload, bytes | str):
                    continue
                body = json.loads(message.payload)
                if message.topic.matches(f"{PREFIX}/status"):
                    if online is None and body.get("state") == "online":
                        online, retained = at, bool(message.retain)
                elif message.topic.matches(f"{PREFIX}/events"):
                    received.append((int(body["seq"]), at))
                    if body["seq"] >= last:
                        return

        # The backoff is capped (BACKOFF_MAX_SECONDS): the next attempt comes within it, the backlog soon after.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(listen(), timeout=90)
        others.stop()
        marked = None
        deadline = time.perf_counter() + 10
        while time.perf_counter() < deadline:
            if not [s for s in unpublished(db) if s <= last]:
                marked = time.perf_counter()
                break
            await asyncio.sleep(0.02)
    finally:
        if subscriber is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await subscriber.__aexit__(None, None, None)
        await core.terminate(popen)
    return Reconnect(
        queued=queued,
        spawned=spawned,
        accepting=accepting,
        subscribed=subscribed,
        online=online,
        online_retained=retained,
        received=received,
        marked=marked,
        agent_ready=outage.ready,
        others=others.cores,
    )


def reconnect_rows(report: Report, r: Reconnect) -> None:
    queued = set(r.queued)
    arrivals = [(seq, at) for seq, at in r.received if seq in queued]
    seqs = [seq for seq, _ in arrivals]
    missing = len(queued - set(seqs))
    duplicates = len(seqs) - len(set(seqs))
    out_of_order = sum(1 for a, b in itertools.pairwise(seqs) if b <= a)
    first_at: dict[int, float] = {}
    for seq, at in arrivals:
        first_at.setdefault(seq, at)
    ordered = [first_at[s] for s in r.queued if s in first_at]
    report.add(
        "(i) reconnect: mosquitto started -> accepting connections (subscriber connected) -> subscribed",
        "-",
        f"{(r.accepting - r.spawned) * 1000:.0f} ms -> +{(r.subscribed - r.accepting) * 1000:.1f} ms",
        None,
    )
    if r.online is None:
        report.add("(i) reconnect: the agent's `online` status", "received", "never (90 s)", False)
        return
    report.add(
        "(i) reconnect: broker accepting -> the agent's `online` status received: the wait for its next attempt "
        f"(backoff 1 s doubling to {BACKOFF_MAX_SECONDS:g} s, each wait jittered to 50-100 %: so up to "
        f"{BACKOFF_MAX_SECONDS:g} s after a 10-minute outage)",
        "-",
        f"{r.online - r.accepting:.2f} s (the broker had been down for the agent's {r.spawned - r.agent_ready:.0f} s "
        "since it was ready)"
        + (" (**retained: the agent connected before the subscriber**)" if r.online_retained else ""),
        None if not r.online_retained else False,
    )
    count = len(r.queued)
    nth = min(QUEUED_TARGET, count)
    at_nth = ordered[nth - 1] - r.online if len(ordered) >= nth else None
    report.add(
        f"(i) {QUEUED_TARGET:,} queued events published after the reconnect: `online` received -> the "
        f"{QUEUED_TARGET:,}th queued event received (QoS 1 subscriber)",
        f"<= {QUEUED_WITHIN:g} s",
        f"{at_nth:.2f} s ({nth / at_nth:,.0f} events/s; {at_nth + r.online - r.accepting:.1f} s after the broker "
        "accepted connections)"
        if at_nth
        else f"not received ({len(ordered)} of {nth})",
        at_nth is not None and count >= QUEUED_TARGET and at_nth <= QUEUED_WITHIN,
    )
    if len(ordered) == count and count:
        at_last = max(ordered) - r.online
        marked = f"; none left unpublished in the outbox {r.marked - r.online:.2f} s after `online`" if r.marked else ""
        report.add(
            f"(i) all {count:,} queued events (10 minutes of traffic: {TRAFFIC_ORDERS} orders): `online` -> last "
            "received",
            "-",
            f"{at_last:.2f} s ({count / at_last:,.0f} events/s){marked}; other processes: {r.others:.2f} cores",
            None,
        )
    report.add(
        "(i) queued events received in `seq` order, none missing, none twice",
        "in order, complete",
        f"{len(set(seqs)):,} of {count:,} received; {missing} missing, {duplicates} duplicates, "
        f"{out_of_order} out of order; {len(r.received) - len(arrivals)} newer events",
        missing == 0 and duplicates == 0 and out_of_order == 0 and not r.online_retained,
    )


# ---- the section -------------------------------------------------------------------------------------


async def run_publishing(report: Report, workdir: Path) -> None:
    """(i): the core order figures with the broker down against MQTT off, then the reconnect drain."""
    dead_port = core.free_port()  # nothing listens on it: the broker is down
    mqtt = mqtt_section(dead_port)
    samples = Samples()
    with core.children(workdir) as procs:
        sim = core.Sim(procs)
        try:
            await sim.ready()
            print("(i) reconnect agent: MQTT on, broker down, 10 minutes of traffic; it waits for the end", flush=True)
            outage = await start_outage(procs, sim, workdir)
            await intake_and_latency(procs, sim, workdir, mqtt, samples)
            await drains(procs, sim, workdir, mqtt, samples)
            print(
                f"(i) reconnect: mosquitto comes up; up to {BACKOFF_MAX_SECONDS:g} s until the agent's next attempt",
                flush=True,
            )
            reconnect = await reconnect_drain(procs, outage, workdir)
        finally:
            await sim.client.aclose()
    compare_rows(report, samples, dead_port)
    reconnect_rows(report, reconnect)
