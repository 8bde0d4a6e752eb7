"""(a) The outbox's full cycle against persist-queue's SQLiteAckQueue on the same disk."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import persistqueue

from agent.domain.clock import SystemClock
from agent.domain.models import Order
from agent.domain.states import State, place
from agent.outbox import transitions
from agent.outbox.store import Outbox
from benchmarks import sdcard
from benchmarks.agents import bench_orders
from benchmarks.harness import ROOT, VENUE, Report


async def outbox_cycle(db: Path, count: int, *, submitters: int = 64, claim_size: int = 32) -> tuple[float, int | None]:
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
        # The "POS" answers at once; as in the dispatcher, a slot is free again as soon as the POS has answered,
        # so the next claim goes into the same commit as the answers of the previous one.
        recording: set[asyncio.Task[None]] = set()
        while not finished.is_set():
            now = outbox.clock.now()
            claimed = await outbox.write(
                lambda c, n=now: transitions.claim(c, now=n, limit=claim_size, count_strike=True)
            )
            for record in claimed:
                task = asyncio.create_task(inject(record.id))
                recording.add(task)
                task.add_done_callback(recording.discard)
            if not claimed:
                arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), timeout=0.05)
        await asyncio.gather(*recording)

    fsyncs, started = sdcard.calls(), time.perf_counter()
    await asyncio.gather(claimer(), *(submit(orders[i::submitters]) for i in range(submitters)))
    elapsed, fsyncs = time.perf_counter() - started, _since(fsyncs)
    counts = await outbox.counts()
    await outbox.close()
    assert counts["injected"] == count, counts
    return count / elapsed, fsyncs


def persist_queue_cycle(directory: Path, count: int, *, threads: int) -> tuple[float, int | None]:
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
    fsyncs, started = sdcard.calls(), time.perf_counter()
    for worker in workers:
        worker.start()
    done.wait()
    elapsed, fsyncs = time.perf_counter() - started, _since(fsyncs)
    for worker in workers:
        worker.join()
    acked = queue.acked_count()
    queue.close()
    assert acked == per_thread * threads, acked
    return per_thread * threads / elapsed, fsyncs


def persist_queue_sequential(directory: Path, count: int) -> tuple[float, int | None]:
    """Return put -> get -> ack cycles per second of SQLiteAckQueue driven from one thread (synchronous=FULL)."""
    queue = persistqueue.SQLiteAckQueue(str(directory), multithreading=False, auto_commit=True)
    queue._conn.execute("PRAGMA synchronous=FULL")
    assert queue._conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    payload = bench_orders(1, "pq")[0].model_dump_json()
    fsyncs, started = sdcard.calls(), time.perf_counter()
    for _ in range(count):
        queue.put(payload)
        queue.ack(queue.get(block=False))
    elapsed, fsyncs = time.perf_counter() - started, _since(fsyncs)
    acked = queue.acked_count()
    queue.close()
    assert acked == count, acked
    return count / elapsed, fsyncs


def _since(before: int | None) -> int | None:
    after = sdcard.calls()
    return None if before is None or after is None else after - before


# ---- each set-up in a process of its own, with the fsync shim preloaded -----------------------------------

# (outbox orders, persist-queue items per set-up) at each added fsync latency: about 3-5 s per set-up.
SIZES = {0.0: (6000, 1500), 2.0: (4000, 400), 10.0: (3000, 160)}
TARGETS = {0.0: 3.0, 2.0: 20.0, 10.0: 30.0}
PQ_SETUPS = ("1 thread, sequential", "1+1 threads", "8+8 threads")


@dataclass
class Measured:
    """One set-up's rate and how many fsyncs it made."""

    rate: float
    fsyncs: int | None
    count: int

    @property
    def per_fsync(self) -> float | None:
        return self.count / self.fsyncs if self.fsyncs else None


def measure(kind: str, count: int, path: Path) -> Measured:
    """Run one set-up in this process; ``kind`` is ``outbox`` or one of ``PQ_SETUPS``."""
    if kind == "outbox":
        rate, fsyncs = asyncio.run(outbox_cycle(path, count))
    elif kind == "1 thread, sequential":
        rate, fsyncs = persist_queue_sequential(path, count)
    else:
        threads = int(kind.split("+", 1)[0])
        count = count // threads * threads
        rate, fsyncs = persist_queue_cycle(path, count, threads=threads)
    return Measured(rate, fsyncs, count)


def measure_in_child(kind: str, count: int, path: Path, shim: Path, delay_ms: float) -> Measured:
    """Run one set-up in a child process that pays ``delay_ms`` more per fsync."""
    env = {**os.environ, **sdcard.env_for(shim, delay_ms)}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.cycle", kind, str(count), str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        msg = f"the {kind} cycle at +{delay_ms:g} ms failed: {done.stderr[-2000:]}"
        raise RuntimeError(msg)
    return Measured(**json.loads(done.stdout.strip().splitlines()[-1]))


def _per_fsync(m: Measured) -> str:
    value = m.per_fsync
    return "-" if value is None else f"{value:.1f}"


def run_outbox_vs_persist_queue(report: Report, workdir: Path) -> None:
    """(a) at +0, +2 and +10 ms per fsync: the outbox's full cycle against persist-queue's best set-up."""
    shim = sdcard.build(workdir)
    for delay, (ours_count, theirs_count) in SIZES.items():
        print(f"(a) outbox full cycle vs persist-queue, +{delay:g} ms per fsync", flush=True)
        tag = f"{delay:g}ms"
        ours = measure_in_child("outbox", ours_count, workdir / f"cycle-{tag}.db", shim, delay)
        theirs = {
            setup: measure_in_child(setup, theirs_count, workdir / f"pq-{tag}-{i}", shim, delay)
            for i, setup in enumerate(PQ_SETUPS)
        }
        best_setup = max(theirs, key=lambda s: theirs[s].rate)
        best = theirs[best_setup]
        ratio = ours.rate / best.rate
        report.add(
            f"(a) +{delay:g} ms per fsync: outbox full cycle (submit -> claim -> injected), 64 submitters, "
            "claims of 32, synchronous=FULL",
            "-",
            f"{ours.rate:,.0f} orders/s ({ours.count:,} orders; {_per_fsync(ours)} orders per fsync)",
            None,
        )
        report.add(
            f"(a) +{delay:g} ms per fsync: persist-queue SQLiteAckQueue put -> get -> ack, WAL, synchronous=FULL "
            "(best of three set-ups)",
            "-",
            f"{best.rate:,.0f} items/s (best: {best_setup}, {_per_fsync(best)} items per fsync; "
            + ", ".join(f"{s}: {m.rate:,.0f}/s" for s, m in theirs.items())
            + ")",
            None,
        )
        report.facts[f"persist-queue +{delay:g} ms"] = best.rate
        target = TARGETS[delay]
        report.add(
            f"(a) +{delay:g} ms per fsync: outbox / persist-queue", f">= {target:g}x", f"{ratio:.1f}x", ratio >= target
        )


def main(argv: list[str]) -> None:
    """Child process: run one set-up, print its figures as JSON."""
    kind, count, path = argv[0], int(argv[1]), Path(argv[2])
    print(json.dumps(asdict(measure(kind, count, path))))


if __name__ == "__main__":
    main(sys.argv[1:])
