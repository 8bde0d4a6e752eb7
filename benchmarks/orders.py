"""(b)-(f) The running agent: intake, 202 -> POS overhead, drains, start-up and peak RSS."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import statistics
import time
from datetime import datetime
from pathlib import Path

import httpx

from benchmarks import sdcard
from benchmarks.agents import (
    PENDING,
    UNPAID,
    Children,
    Sim,
    agent_config,
    bench_orders,
    children,
    cpu_seconds,
    fill_outbox,
    order_bodies,
    outbox_counts,
    percentile,
    post_request,
    read_response,
    stop_agent,
    wait_http,
)
from benchmarks.harness import Report

# ---- (b) intake throughput -------------------------------------------------------------------


async def intake_throughput(
    port: int,
    *,
    clients: int,
    seconds: float,
    warmup: float,
    prefix: str,
    count: int = 30_000,
    latencies: list[float] | None = None,
) -> tuple[float, int, float]:
    """Drive ``clients`` keep-alive connections for ``seconds``; return (202/s after warm-up, errors, p50 ms).

    ``latencies`` (if given) receives every counted answer time, in ms.
    """
    requests = iter([post_request(port, b) for b in order_bodies(count, prefix, payment=UNPAID)])
    started = time.perf_counter()
    window_start, window_end = started + warmup, started + seconds
    counted = 0
    errors = 0
    if latencies is None:
        latencies = []

    async def worker() -> None:
        nonlocal counted, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for request in requests:
                sent = time.perf_counter()
                if sent >= window_end:
                    break
                writer.write(request)
                status, _, _ = await read_response(reader)
                done = time.perf_counter()
                if status != 202:
                    errors += 1
                elif window_start <= done < window_end:
                    counted += 1
                    latencies.append((done - sent) * 1000)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    await asyncio.gather(*(worker() for _ in range(clients)))
    return counted / (seconds - warmup), errors, statistics.median(latencies) if latencies else float("nan")


# ---- (c) overhead from 202 to the POS --------------------------------------------------------


async def overhead_at(
    port: int, sim: Sim, *, rate: float, seconds: float, prefix: str = "latency"
) -> tuple[list[float], list[float], list[float]]:
    """Send paid orders at a steady ``rate``; return ms of (202 -> POS received, POST -> 202, POST -> body)."""
    bodies = order_bodies(int(rate * seconds), prefix)
    acked_at: dict[str, tuple[float, float]] = {}
    whole: list[float] = []
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2
    try:
        for i, body in enumerate(bodies):
            await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
            sent = time.time()
            writer.write(post_request(port, body))
            status, at, answer = await read_response(reader)
            complete = time.time()
            if status != 202:
                msg = f"intake answered {status}: {answer!r}"
                raise RuntimeError(msg)
            acked_at[json.loads(body)["id"]] = (sent, at)
            whole.append((complete - sent) * 1000)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    deadline = time.perf_counter() + 10
    received: dict[str, float] = {}
    while len(received) < len(acked_at) and time.perf_counter() < deadline:
        await asyncio.sleep(0.2)
        received = {
            o["order"]["id"]: datetime.fromisoformat(o["received_at"]).timestamp()
            for o in await sim.orders()
            if o["order"]["id"] in acked_at
        }
    overhead = [(received[i] - acked_at[i][1]) * 1000 for i in acked_at if i in received]
    answer_ms = [(at - sent) * 1000 for sent, at in acked_at.values()]
    if len(overhead) != len(acked_at):
        msg = f"only {len(overhead)} of {len(acked_at)} orders reached the simulator"
        raise RuntimeError(msg)
    return overhead, answer_ms, whole


async def run_intake_and_latency(report: Report, procs: Children, sim: Sim, workdir: Path) -> None:
    config, _, port = agent_config(workdir, "intake", sim_port=sim.port, rate=200)
    popen = procs.spawn("agent-intake", "run", "--config", str(config))
    await wait_http(f"http://127.0.0.1:{port}/v1/health", within=15)

    print("(b) intake throughput", flush=True)
    cpu_before, wall_before = cpu_seconds(popen.pid), time.perf_counter()
    latencies: list[float] = []
    rate, errors, p50 = await intake_throughput(
        port, clients=64, seconds=9, warmup=2, prefix="intake64", latencies=latencies
    )
    cores = (cpu_seconds(popen.pid) - cpu_before) / (time.perf_counter() - wall_before)
    p99 = percentile(latencies, 99)
    report.add(
        "(b) HTTP intake, 64 keep-alive clients, 202 after commit (unpaid orders -> `held`: nothing dispatched)",
        ">= 3,000 orders/s; p99 <= 50 ms",
        f"{rate:,.0f} orders/s (p50 answer {p50:.0f} ms, p99 {p99:.0f} ms, {errors} non-202, agent busy "
        f"{cores:.2f} cores)",
        rate >= 3000 and p99 <= 50 and errors == 0,
    )
    one_rate, _, one_p50 = await intake_throughput(port, clients=1, seconds=3, warmup=1, prefix="intake1", count=5_000)
    report.add(
        "(b) same, one keep-alive client posting back-to-back",
        "-",
        f"{one_rate:,.0f} orders/s (p50 answer {one_p50:.1f} ms)",
        None,
    )
    if one_p50 >= 30:
        report.notes.append(
            f"- (b): one keep-alive client waits {one_p50:.0f} ms per answer while the agent is nearly idle: the "
            "answer's body waits for the client's delayed ACK (Nagle). The intake's listening socket is created "
            "without `IPPROTO_TCP`, so asyncio does not set TCP_NODELAY on accepted connections "
            "(`drivers/pos/simulator.py:_bind` shows the fix)."
        )

    print("(c) overhead 202 -> POS at 20 orders/s", flush=True)
    await sim.reset()
    overhead, answer_ms, whole_ms = await overhead_at(port, sim, rate=20, seconds=15)
    p50, p99 = percentile(overhead, 50), percentile(overhead, 99)
    report.add(
        "(c) agent overhead, 202 at the client -> simulator received, 20 orders/s for 15 s, p50",
        "<= 10 ms",
        f"{p50:.1f} ms",
        p50 <= 10,
    )
    report.add("(c) same, p99", "<= 50 ms", f"{p99:.1f} ms (max {max(overhead):.1f} ms)", p99 <= 50)
    report.add(
        "(c) intake answer time at 20 orders/s, p50 / p99: POST written -> 202 status line; -> whole response",
        "-",
        f"{percentile(answer_ms, 50):.1f} / {percentile(answer_ms, 99):.1f} ms; "
        f"{percentile(whole_ms, 50):.1f} / {percentile(whole_ms, 99):.1f} ms",
        None,
    )
    await stop_agent(popen, report, "intake + latency agent (b, c)")


# ---- (d), (e) drain and start-up -------------------------------------------------------------


async def run_drain(
    report: Report,
    procs: Children,
    sim: Sim,
    workdir: Path,
    *,
    total: int = 10_000,
    wrapper: tuple[str, ...] = (),
    column: str = "",
) -> None:
    """(d), (e): start-up with ``total`` queued orders, then their drain into an unthrottled simulator."""
    print(f"(d, e) drain of {total:,} queued orders, start-up with them pending{column}", flush=True)
    config, db, port = agent_config(workdir, f"drain{len(procs.started)}", sim_port=sim.port, rate=10_000)
    await fill_outbox(db, bench_orders(total, "drain"))
    await sim.reset()
    base = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    popen = procs.spawn("agent-drain", "run", "--config", str(config), wrapper=wrapper)
    ready = await wait_http(f"{base}/v1/health", within=60)
    startup = ready - started
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        while True:
            counts = await outbox_counts(client, base)
            if not any(counts.get(s, 0) for s in PENDING):
                break
            if time.perf_counter() - ready > 300:
                msg = f"the drain did not finish: {counts}"
                raise RuntimeError(msg)
            await asyncio.sleep(0.2)  # each health snapshot costs the agent a few ms: poll gently
    drained = time.perf_counter()
    cpu_ms = cpu_seconds(popen.pid) * 1000 / total
    await stop_agent(popen, report, f"drain agent (d, e){column}")
    in_pos = len(await sim.orders())
    rate = total / (drained - ready)
    report.add(
        f"(e) start-up to ready (process start -> GET /v1/health 200) with {total:,} queued orders{column}",
        "<= 2 s",
        f"{startup:.2f} s",
        startup <= 2,
    )
    report.add(
        f"(d) drain of {total:,} queued orders into an unthrottled simulator (rate_limit_per_second 10000){column}",
        ">= 1,000 orders/s",
        f"{rate:,.0f} orders/s ({drained - ready:.1f} s from ready; {in_pos:,} in the POS, failed={counts['failed']})",
        rate >= 1000 and in_pos == total and counts["failed"] == 0,
    )
    report.add(
        f"(d) agent CPU time per drained order (whole process life / {total:,}){column}",
        "<= 1 ms",
        f"{cpu_ms:.2f} ms",
        cpu_ms <= 1,
    )


async def end_to_end(port: int, sim: Sim, *, count: int, clients: int, prefix: str) -> tuple[float, float]:
    """Post ``count`` paid orders from ``clients`` keep-alive connections; return (202s/s, orders in the POS/s).

    Both rates run from the first POST: to the last 202, and to the simulator's receipt of the last order.
    """
    bodies = [post_request(port, b) for b in order_bodies(count, prefix)]
    requests = iter(bodies)

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for request in requests:
                writer.write(request)
                status, _, answer = await read_response(reader)
                if status != 202:
                    msg = f"intake answered {status}: {answer!r}"
                    raise RuntimeError(msg)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    started = time.time()
    await asyncio.gather(*(client() for _ in range(clients)))
    acked = time.time()
    deadline = time.perf_counter() + 120
    while True:
        received = [o for o in await sim.orders() if o["order"]["id"].startswith(prefix)]
        if len(received) >= count or time.perf_counter() > deadline:
            break
        await asyncio.sleep(0.1)
    if len(received) < count:
        msg = f"only {len(received)} of {count} orders reached the simulator"
        raise RuntimeError(msg)
    last = max(datetime.fromisoformat(o["received_at"]).timestamp() for o in received)
    return count / (acked - started), count / (last - started)


async def run_sdcard_end_to_end(
    report: Report, procs: Children, sim: Sim, workdir: Path, *, shim: Path, persist_queue_rate: float | None
) -> None:
    """(l) 1,000 orders from 32 keep-alive clients, POST -> in the simulator, +10 ms per fsync on the agent."""
    print("(l) end to end on an SD card (+10 ms per fsync)", flush=True)
    count, clients, delay = 1_000, 32, 10.0
    config, _, port = agent_config(workdir, "sdcard", sim_port=sim.port, rate=10_000)
    counted = workdir / "sdcard-fsyncs.txt"
    popen = procs.spawn("agent-sdcard", "run", "--config", str(config), env=sdcard.env_for(shim, delay, counted))
    await wait_http(f"http://127.0.0.1:{port}/v1/health", within=30)
    await sim.reset()
    acks, rate = await end_to_end(port, sim, count=count, clients=clients, prefix="sdcard")
    await stop_agent(popen, report, "SD-card agent (l)")
    fsyncs = sdcard.count_in(counted)
    versus = ""
    ok = rate >= 600
    if persist_queue_rate:
        ratio = rate / persist_queue_rate
        versus = f"; {ratio:.0f}x persist-queue's full cycle at +10 ms ({persist_queue_rate:,.0f} items/s)"
        ok = ok and ratio >= 20
    report.add(
        f"(l) end to end on an SD card: {count:,} paid orders from {clients} keep-alive clients, POST -> in the "
        f"simulator, +{delay:g} ms per fsync on the agent",
        ">= 600 orders/s; >= 20x persist-queue",
        f"{rate:,.0f} orders/s ({acks:,.0f} 202s/s{versus}; "
        f"{'-' if fsyncs is None else f'{fsyncs:,}'} fsyncs over the agent's life)",
        ok,
    )


async def run_rate_limited(report: Report, procs: Children, sim: Sim, workdir: Path) -> None:
    print("(d) drain at rate_limit_per_second = 20", flush=True)
    total, limit = 400, 20
    config, db, port = agent_config(workdir, "limited", sim_port=sim.port, rate=limit)
    await fill_outbox(db, bench_orders(total, "limited"))
    await sim.reset()
    base = f"http://127.0.0.1:{port}"
    popen = procs.spawn("agent-limited", "run", "--config", str(config))
    await wait_http(f"{base}/v1/health", within=30)
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        deadline = time.perf_counter() + total / limit * 2 + 10
        while True:
            counts = await outbox_counts(client, base)
            if not any(counts.get(s, 0) for s in PENDING):
                break
            if time.perf_counter() > deadline:
                msg = "the rate-limited drain did not finish"
                raise RuntimeError(msg)
            await asyncio.sleep(0.25)
    await stop_agent(popen, report, "rate-limited agent (d)")
    requests = await sim.requests()
    posts = sorted(r["monotonic"] for r in requests if r["method"] == "POST")
    every = sorted(r["monotonic"] for r in requests)
    achieved = (len(posts) - 1) / (posts[-1] - posts[0])
    too_many = sum(1 for r in requests if r["status"] == 429)
    worst_posts = max(_in_window(posts, i) for i in range(len(posts)))
    over_posts = sum(1 for i in range(len(posts)) if _in_window(posts, i) > limit)
    worst_all = max(_in_window(every, i) for i in range(len(every)))
    over_all = sum(1 for i in range(len(every)) if _in_window(every, i) > limit)
    report.add(
        f"(d) achieved POS request rate over {total} orders with rate_limit_per_second = {limit}",
        f"{limit}/s +- 5%",
        f"{achieved:.2f}/s ({len(posts)} POSTs in {posts[-1] - posts[0]:.1f} s)",
        abs(achieved - limit) <= limit * 0.05,
    )
    report.add(
        "(d) 429 answers during that drain (and order POSTs a strict 20-per-rolling-second POS would refuse)",
        "0",
        f"{too_many} (worst rolling second: {worst_posts} order POSTs; {over_posts} over the limit)",
        too_many == 0 and over_posts == 0,
    )
    report.add(
        "(d) same, counting every request to the POS (order POSTs and `GET /ready` probes)",
        "-",
        f"worst rolling second: {worst_all} requests; {over_all} over the limit "
        f"({len(every) - len(posts)} readiness probes in {every[-1] - every[0]:.1f} s)",
        None,
    )
    if over_all > over_posts:
        report.notes.append(
            "- (d): probes share the rate limiter's spacing (1/rate), so a closed one-second window measured at the"
            f" POS can hold {worst_all} requests at rate_limit_per_second = {limit}."
        )


def _in_window(times: list[float], i: int) -> int:
    """Return how many of the sorted ``times`` fall in the second ending at ``times[i]``."""
    start = times[i] - 1.0
    j = i
    while j > 0 and times[j - 1] > start:
        j -= 1
    return i - j + 1


async def run_drain_only(report: Report, workdir: Path, *, total: int) -> None:
    """(d), (e) alone, for ``run.py --only drain``: ``total`` queued orders into an unthrottled simulator."""
    with children(workdir) as procs:
        sim = Sim(procs)
        try:
            await sim.ready()
            await run_drain(report, procs, sim, workdir, total=total)
        finally:
            await sim.client.aclose()


async def run_processes(report: Report, workdir: Path) -> None:
    with children(workdir) as procs:
        sim = Sim(procs)
        try:
            await sim.ready()
            await run_intake_and_latency(report, procs, sim, workdir)
            await run_drain(report, procs, sim, workdir)
            await run_rate_limited(report, procs, sim, workdir)
        finally:
            await sim.client.aclose()
    peak_label = max(report.rss_kb, key=lambda k: report.rss_kb[k])
    peak_mb = report.rss_kb[peak_label] / 1024
    report.add(
        "(f) peak RSS of the agent process (VmHWM at the end of its run)",
        "<= 80 MB",
        f"{peak_mb:.1f} MB ({peak_label}; "
        + ", ".join(f"{k.split(' (')[0]}: {v / 1024:.1f} MB" for k, v in report.rss_kb.items())
        + ")",
        peak_mb <= 80,
    )
