#!/usr/bin/env python3
"""Availability change -> retained ``P/availability`` at a subscriber: ``.venv/bin/python benchmarks/availability.py``.

One agent in this process (real clock, real loopback sockets, the POS simulator beside it, fallback printing off so
a POS that says "not ready" leaves no path to the kitchen), a real ``mosquitto`` on loopback and a subscriber
to ``venues/<venue>/availability``. Each round pushes a POS readiness change the way a Lightspeed notification
does (``Dispatcher.readiness_pushed``): NOT_READY, then READY. Measured, per direction: from the call that
changes the POS state to the subscriber receiving the new value. That is the watcher's reading interval
(``CHECK_SECONDS``), the reporter's publish and the broker's delivery, plus ``debounce_seconds`` for a pause
(run with 0 here, then once with 1 s to show it adds exactly that); a resume never waits for the debounce.
The subscriber shares the agent's event loop (as the agent's own loops do), on a 2-core shared machine.
About 40 s. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import structlog

from agent.domain.config import settings_from_dict
from agent.service.availability import CHECK_SECONDS
from agent.service.service import Agent
from drivers.pos.simulator import SimulatorState, serve_simulator

VENUE = "bench-kitchen"
TOPIC = f"venues/{VENUE}/availability"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
SETTLE_SECONDS = 0.3  # at least this between a change arriving and the next one, so rounds never overlap


def free_port() -> int:
    """Return a loopback TCP port free right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def mosquitto(workdir: Path) -> Any:
    """Run a throwaway broker on a free loopback port; yield the port."""
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n", encoding="utf-8")
    with (workdir / "mosquitto.log").open("wb") as log:
        popen = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=log)
    try:
        yield port
    finally:
        popen.terminate()
        popen.wait(timeout=5)


@contextlib.asynccontextmanager
async def pos_simulator() -> AsyncIterator[int]:
    """Serve the POS simulator in this loop; yield its port."""
    state = SimulatorState()
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve_simulator("127.0.0.1", 0, state=state, ready=ready, shutdown=stop))
    await asyncio.wait_for(ready.wait(), 5)
    assert state.port is not None
    try:
        yield state.port
    finally:
        stop.set()
        await task


class Listener:
    """Records when each availability value arrives (perf_counter), by ``seq``."""

    def __init__(self, port: int) -> None:
        """Listen on the broker at ``port`` once ``run`` runs."""
        self.port = port
        self.arrivals: dict[int, tuple[float, dict[str, Any]]] = {}
        self.subscribed = asyncio.Event()
        self.received = asyncio.Event()

    async def run(self) -> None:
        """Subscribe and record arrivals until cancelled."""
        async with aiomqtt.Client("127.0.0.1", self.port, identifier="bench-platform") as client:
            await client.subscribe(TOPIC, qos=1)
            self.subscribed.set()
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                value = json.loads(message.payload)
                self.arrivals.setdefault(value["seq"], (time.perf_counter(), value))
                self.received.set()

    async def arrival(self, seq: int) -> tuple[float, dict[str, Any]]:
        """Return when value ``seq`` arrived and the value, waiting for it ."""
        while seq not in self.arrivals:
            self.received.clear()
            await self.received.wait()
        return self.arrivals[seq]


async def measure(workdir: Path, broker: int, *, debounce: float, rounds: int) -> dict[str, list[float]]:
    """Run ``rounds`` NOT_READY/READY rounds on a fresh agent; return the latencies (ms) per direction."""
    async with pos_simulator() as sim_port:
        settings = settings_from_dict(
            {
                "venue": {"id": VENUE, "timezone": "Europe/London"},
                "storage": {"path": str(workdir / f"outbox-{debounce:g}.db"), "min_free_mb": 0},
                "intake": {"listen": "127.0.0.1:0"},
                "pos": {"driver": "http", "http": {"url": f"http://127.0.0.1:{sim_port}/orders"}},
                "fallback": {"enabled": False},
                "mqtt": {"enabled": True, "host": "127.0.0.1", "port": broker},
                "availability": {"debounce_seconds": debounce},
                "discovery": {"advertise": False},
                "logging": {"level": "warning"},
            }
        )
        agent = Agent(settings)
        await agent.start()
        listener = Listener(broker)
        task = asyncio.create_task(listener.run())
        latencies: dict[str, list[float]] = {"pause": [], "resume": []}
        phase = random.Random(16)
        try:
            await asyncio.wait_for(listener.subscribed.wait(), 5)
            current = agent.availability.current
            assert current is not None and current.accepting
            seq = current.seq
            await asyncio.wait_for(listener.arrival(seq), 10)
            for _ in range(rounds):
                for direction, ready in (("pause", False), ("resume", True)):
                    started = time.perf_counter()
                    await agent.dispatcher.readiness_pushed(ready=ready, detail="benchmark", conditions={})
                    seq += 1
                    arrived, value = await asyncio.wait_for(listener.arrival(seq), 10 + debounce)
                    assert value["accepting"] is ready, value
                    latencies[direction].append((arrived - started) * 1000)
                    # A random phase against the watcher's whole-second reading, as a real change would have.
                    await asyncio.sleep(SETTLE_SECONDS + phase.uniform(0, CHECK_SECONDS))
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task
            await agent.stop()
        return latencies


def percentile(values: list[float], q: float) -> float:
    """Return the ``q`` quantile (0-1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def main(rounds: int) -> None:
    """Run both measures and print the table."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory(prefix="venue-agent-availability-") as tmp:
        workdir = Path(tmp)
        with mosquitto(workdir) as broker:
            await asyncio.sleep(0.3)
            runs = [(0.0, rounds), (1.0, max(3, rounds // 10))]
            results = [(debounce, await measure(workdir, broker, debounce=debounce, rounds=n)) for debounce, n in runs]
    print(f"Availability change -> retained P/availability received (watcher reads every {CHECK_SECONDS:g} s)\n")
    print("| debounce_seconds | direction | n | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    for debounce, latencies in results:
        for direction, values in latencies.items():
            p50, p99 = statistics.median(values), percentile(values, 0.99)
            print(f"| {debounce:g} | {direction} | {len(values)} | {p50:.0f} | {p99:.0f} | {max(values):.0f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=50, help="NOT_READY/READY rounds with debounce 0 (default 50)")
    asyncio.run(main(parser.parse_args().rounds))
