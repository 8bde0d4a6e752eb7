"""One queue and one task per printer: a hung or paper-out station never delays another station's tickets."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from agent.domain.config import Settings
from tests.fake_printer import FakeNetworkPrinter
from tests.test_print_worker import BEER, PIZZA, net, rig_for, settings_for, texts


@pytest.fixture(name="stations")
async def _stations() -> AsyncIterator[tuple[FakeNetworkPrinter, FakeNetworkPrinter]]:
    async with AsyncExitStack() as stack:
        grill = await stack.enter_async_context(FakeNetworkPrinter.running())
        bar = await stack.enter_async_context(FakeNetworkPrinter.running())
        yield grill, bar


def routed(tmp_path: Path, grill: FakeNetworkPrinter, bar: FakeNetworkPrinter) -> Settings:
    """Pizza to the grill, drinks to the bar, each the other's backup."""
    return settings_for(tmp_path, [net("grill", grill, categories=["Pizza"]), net("bar", bar, categories=["Drinks"])])


async def until(check: Callable[[], bool], timeout: float) -> float:
    """Poll ``check()`` every 5 ms; return the seconds it took to become true (TimeoutError after ``timeout``)."""
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.005)
    return time.monotonic() - started


async def test_a_hung_station_does_not_delay_another_stations_ticket(
    tmp_path: Path, stations: tuple[FakeNetworkPrinter, FakeNetworkPrinter]
) -> None:
    """The grill takes the bytes and never answers (1 s status timeouts): the bar's ticket is out within 0.5 s."""
    grill, bar = stations
    grill.mode = "black_hole"
    rig = await rig_for(tmp_path, routed(tmp_path, grill, bar))
    await rig.fallback("ord_pizza", items=[PIZZA])
    await rig.fallback("ord_beer", items=[BEER])
    runner = asyncio.create_task(rig.worker.run())
    try:
        latency = await until(lambda: any(b"Order ord_beer" in job for job in bar.jobs), timeout=5)
        assert latency < 0.5, f"the bar's ticket waited {latency:.2f} s behind the hung grill"
        assert grill.connections == 1  # the grill's own ticket was still hanging on it meanwhile
        await until(lambda: any(b"Order ord_pizza" in job for job in bar.jobs), timeout=10)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    pizza = next(texts(job) for job in bar.jobs if b"Order ord_pizza" in job)
    assert "BACKUP FOR GRILL" in pizza and "MAY BE A DUPLICATE" in pizza
    await rig.outbox.close()


async def test_tickets_queued_behind_a_printer_that_fails_skip_it(
    tmp_path: Path, stations: tuple[FakeNetworkPrinter, FakeNetworkPrinter]
) -> None:
    """Three grill tickets: the first finds the paper out, the other two go straight to the bar, no connection."""
    grill, bar = stations
    grill.mode = "paper_out"
    rig = await rig_for(tmp_path, routed(tmp_path, grill, bar))
    for n in range(3):
        await rig.fallback(f"ord_{n}", items=[PIZZA])
    jobs = await rig.outbox.due_print_jobs(rig.clock.now())
    assert await asyncio.gather(*(rig.worker.print_job(job) for job in jobs)) == [True, True, True]
    assert grill.connections == 1
    assert len(bar.jobs) == 3 and all("BACKUP FOR GRILL" in texts(job) for job in bar.jobs)
    printed = await rig.outbox.print_jobs("ord_2")
    assert [(j.state, j.printer) for j in printed] == [("printed", "bar")]
    await rig.outbox.close()


async def test_stopping_the_worker_cancels_every_printer_task(
    tmp_path: Path, stations: tuple[FakeNetworkPrinter, FakeNetworkPrinter]
) -> None:
    """A printer task stuck on a hung job ends with the worker; the job is left for the next start."""
    grill, bar = stations
    grill.mode = "black_hole"
    rig = await rig_for(tmp_path, routed(tmp_path, grill, bar))
    await rig.fallback("ord_pizza", items=[PIZZA])
    runner = asyncio.create_task(rig.worker.run())
    await until(lambda: grill.connections == 1, timeout=5)
    runner.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await runner
    assert all(slot.task is None or slot.task.done() for slot in rig.worker.slots.values())
    assert [j.state for j in await rig.outbox.print_jobs("ord_pizza")] == ["printing"]
    await rig.outbox.close()
