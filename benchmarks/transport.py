"""(d') The HTTP driver's cost per order on the client side: its lean transport against httpx's own client.

``HttpDriver.inject`` (the request's mapping, the signature, the exchange, the answer's classification) sends
orders to the POS simulator process from 32 concurrent senders, once through the driver as it ships (httpx's
``Request``/``Response`` over ``drivers/pos/lean_http.py``) and once through httpx's ``AsyncClient`` with its
default transport (httpcore's pool and h11 on anyio): what the driver used before, and what a developer would
reach for. CPU time is this process's (``time.process_time``) over the sends; the simulator's is measured apart.
``.venv/bin/python benchmarks/run.py --only transport`` (about 20 s).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import structlog

from benchmarks.agents import Sim, bench_orders, children, cpu_seconds
from benchmarks.harness import Report
from drivers.pos.base import Injected, InjectRequest, InjectResult
from drivers.pos.http import HttpDriver
from drivers.pos.http_mapping import build_request, classify_response

ORDERS = 3_000
SENDERS = 32
ROUNDS = 2

Send = Callable[[InjectRequest], Awaitable[InjectResult]]


def httpx_client_send(client: httpx.AsyncClient, url: str) -> Send:
    """The same exchange through httpx's ``AsyncClient`` and its default transport."""

    async def send(request: InjectRequest) -> InjectResult:
        headers, body = build_request(request, hmac_secret=None, now_unix=int(time.time()))
        response = await client.post(url, content=body, headers=headers)
        return classify_response(response.status_code, response.headers, response.content, datetime.now(UTC))

    return send


async def measure(send: Send, requests: list[InjectRequest], sim_pid: int) -> tuple[float, float, float]:
    """Return (orders/s, client CPU ms per order, simulator CPU ms per order)."""
    pending = iter(requests)

    async def sender() -> None:
        for request in pending:
            result = await send(request)
            if not isinstance(result, Injected):
                msg = f"the simulator did not take {request.idempotency_key}: {result}"
                raise RuntimeError(msg)

    sim_before, cpu_before, started = cpu_seconds(sim_pid), time.process_time(), time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(SENDERS)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_before
    sim_cpu = cpu_seconds(sim_pid) - sim_before
    return len(requests) / elapsed, cpu * 1000 / len(requests), sim_cpu * 1000 / len(requests)


async def run_transport(report: Report, workdir: Path) -> None:
    """(d') client CPU per order: the driver's transport against httpx's client, alternating, ``ROUNDS`` each."""
    print("(d') the HTTP driver's client cost per order: lean transport vs httpx's AsyncClient", flush=True)
    # Log lines would cost more than the exchange: only warnings, as on a quiet box.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    orders = bench_orders(ORDERS, "transport")
    results: dict[str, list[tuple[float, float, float]]] = {"lean": [], "httpx": []}
    with children(workdir) as procs:
        sim = Sim(procs)
        try:
            await sim.ready()
            url = f"{sim.base}/orders"
            for round_no in range(ROUNDS):
                for name in ("lean", "httpx"):
                    requests = [
                        InjectRequest(order=o, idempotency_key=f"{name}{round_no}:{o.id}", attempt=1) for o in orders
                    ]
                    if name == "lean":
                        driver = HttpDriver(url=url, timeout_seconds=10)
                        try:
                            results[name].append(await measure(driver.inject, requests, sim.popen.pid))
                        finally:
                            await driver.aclose()
                    else:
                        limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)
                        async with httpx.AsyncClient(trust_env=False, timeout=10, limits=limits) as client:
                            send = httpx_client_send(client, url)
                            results[name].append(await measure(send, requests, sim.popen.pid))
        finally:
            await sim.client.aclose()
            structlog.reset_defaults()

    def shown(name: str) -> str:
        runs = results[name]
        return ", ".join(f"{rate:,.0f}/s at {cpu:.2f} ms (simulator {sim_ms:.2f} ms)" for rate, cpu, sim_ms in runs)

    lean = min(cpu for _, cpu, _ in results["lean"])
    theirs = min(cpu for _, cpu, _ in results["httpx"])
    report.add(
        f"(d') HTTP driver, client CPU per order: {ORDERS:,} orders from {SENDERS} senders to the simulator, "
        "the driver's transport (httpx Request/Response over lean_http, httptools) vs httpx's AsyncClient "
        "(default transport, 8 connections), best of 2 each",
        "-",
        f"{lean:.2f} ms vs {theirs:.2f} ms ({theirs / lean:.1f}x less; lean: {shown('lean')}; httpx: {shown('httpx')})",
        None,
    )
