"""(a) The outbox's full cycle against persist-queue's SQLiteAckQueue on the same disk."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import persistqueue

from agent.domain.clock import SystemClock
from agent.domain.models import Order, parse_order
from agent.domain.states import State, place
from agent.outbox import ops
from agent.outbox.store import Outbox
from benchmarks.harness import VENUE, Report

# ---- (a) outbox cycle vs persist-queue -------------------------------------------------------
from tests.conftest import make_order


def bench_orders(count: int, prefix: str, **changes: Any) -> list[Order]:
    """Return ``count`` validated orders with distinct ids."""
    template = parse_order(make_order("template", **changes), venue_id=VENUE, currency="GBP")
    return [template.model_copy(update={"id": f"{prefix}-{i:06d}"}) for i in range(count)]


async def fill_outbox(db: Path, orders: list[Order], *, submitters: int = 64) -> None:
    """Store ``orders`` in a fresh outbox through the real API (64 concurrent submitters, group commit)."""
    outbox = Outbox(db, clock=SystemClock(), min_free_mb=0)
    await outbox.open()
    try:
        await asyncio.gather(*(_submit_all(outbox, orders[i::submitters]) for i in range(submitters)))
    finally:
        await outbox.close()


async def _submit_all(outbox: Outbox, orders: list[Order]) -> None:
    for order in orders:
        placement = place(order, now=outbox.clock.now(), hold_unpaid=True, buffered=True, buffer_minutes=20)
        await outbox.submit(order, placement, key=f"{VENUE}:{order.id}")


async def outbox_cycle(db: Path, count: int, *, submitters: int = 64, claim_size: int = 32) -> float:
    """Return full cycles per second: submit -> claim (32 at a time) -> injected, all through ``Outbox``."""
    orders = bench_orders(count, "cycle")
    outbox = Outbox(db, clock=SystemClock(), min_free_mb=0)
    await outbox.open()
    writer_sync = await outbox.write(lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
    assert writer_sync == 2, f"the outbox writer is not synchronous=FULL ({writer_sync})"
    arrived = asyncio.Event()
    injected = 0
    finished = asyncio.Event()

    async def submit(chunk: list[Order]) -> None:
        for order in chunk:
            placement = place(order, now=outbox.clock.now(), hold_unpaid=True, buffered=True, buffer_minutes=20)
            await outbox.submit(order, placement, key=f"{VENUE}:{order.id}")
            arrived.set()

    async def inject(order_id: str) -> None:
        nonlocal injected
        await outbox.transition(
            order_id,
            State.INJECTED,
            event="injected",
            expect=(State.SENDING,),
            pos_reference="BENCH",
            injected_at=outbox.clock.now(),
        )
        injected += 1
        if injected == count:
            finished.set()

    async def claimer() -> None:
        in_flight: set[asyncio.Task[None]] = set()
        while not finished.is_set():
            free = claim_size - len(in_flight)
            if free <= 0:
                await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                continue
            now = outbox.clock.now()
            claimed = await outbox.write(lambda c, n=now, k=free: ops.claim(c, now=n, limit=k, count_strike=True))
            for record in claimed:
                task = asyncio.create_task(inject(record.id))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            if not claimed:
                arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), timeout=0.05)
        await asyncio.gather(*in_flight)

    started = time.perf_counter()
    await asyncio.gather(claimer(), *(submit(orders[i::submitters]) for i in range(submitters)))
    elapsed = time.perf_counter() - started
    counts = await outbox.counts()
    await outbox.close()
    assert counts["injected"] == count, counts
    return count / elapsed


def persist_queue_cycle(directory: Path, count: int, *, threads: int) -> float:
    """Return put -> get -> ack cycles per second of persist-queue's SQLiteAckQueue (synchronous=FULL)."""
    queue = persistqueue.SQLiteAckQueue(str(directory), multithreading=True, auto_commit=True)
    for conn in {id(queue._getter): queue._getter, id(queue._putter): queue._putter}.values():
        conn.execute("PRAGMA synchronous=FULL")
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    payload = bench_orders(1, "pq")[0].model_dump_json()
    per_thread = count // threads
    done = threading.Barrier(threads * 2 + 1)

    def producer() -> None:
        for _ in range(per_thread):
            queue.put(payload)
        done.wait()

    def consumer() -> None:
        for _ in range(per_thread):
            item = queue.get(block=True, timeout=30)
            queue.ack(item)
        done.wait()

    workers = [threading.Thread(target=producer) for _ in range(threads)]
    workers += [threading.Thread(target=consumer) for _ in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    done.wait()
    elapsed = time.perf_counter() - started
    for worker in workers:
        worker.join()
    acked = queue.acked_count()
    queue.close()
    assert acked == per_thread * threads, acked
    return per_thread * threads / elapsed


def persist_queue_sequential(directory: Path, count: int) -> float:
    """Return put -> get -> ack cycles per second of SQLiteAckQueue driven from one thread (synchronous=FULL)."""
    queue = persistqueue.SQLiteAckQueue(str(directory), multithreading=False, auto_commit=True)
    queue._conn.execute("PRAGMA synchronous=FULL")
    assert queue._conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    payload = bench_orders(1, "pq")[0].model_dump_json()
    started = time.perf_counter()
    for _ in range(count):
        queue.put(payload)
        queue.ack(queue.get(block=False))
    elapsed = time.perf_counter() - started
    acked = queue.acked_count()
    queue.close()
    assert acked == count, acked
    return count / elapsed


def run_outbox_vs_persist_queue(report: Report, workdir: Path) -> None:
    print("(a) outbox full cycle vs persist-queue", flush=True)
    ours = asyncio.run(outbox_cycle(workdir / "cycle.db", 6000))
    theirs = {"1 thread, sequential": persist_queue_sequential(workdir / "persist-queue-seq", 1500)}
    for threads in (1, 8):
        target = workdir / f"persist-queue-{threads}"
        theirs[f"{threads}+{threads} threads"] = persist_queue_cycle(target, 1600, threads=threads)
    best_setup = max(theirs, key=lambda t: theirs[t])
    best = theirs[best_setup]
    ratio = ours / best
    report.add(
        "(a) outbox full cycle (submit -> claim -> injected), 64 submitters, claims of 32, synchronous=FULL",
        "-",
        f"{ours:,.0f} orders/s",
        None,
    )
    report.add(
        "(a) persist-queue SQLiteAckQueue put -> get -> ack, WAL, synchronous=FULL (best of three set-ups)",
        "-",
        f"{best:,.0f} items/s (best: {best_setup}; " + ", ".join(f"{t}: {r:,.0f}/s" for t, r in theirs.items()) + ")",
        None,
    )
    report.add("(a) outbox / persist-queue", ">= 3x", f"{ratio:.1f}x", ratio >= 3)
