"""``venue-agent console --metrics-listen``: scraped over HTTP and parsed with Prometheus' own parser, the values
match what 50 simulated venues published on a real Mosquitto."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from agent.fleet.sim import Rates
from agent.fleet.sim_mqtt import FleetSim, SimOptions
from tests.conftest import eventually

# _broker is a fixture: importing it registers "broker" here.
from tests.mosquitto import Mosquitto, _broker, free_port  # noqa: F401
from tests.test_fleet_sim import running, value

BUSY = Rates(
    health_interval=2.0,
    orders_per_hour=1800,
    fail_ratio=0.2,
    offline_per_hour=0,
    paper_out_per_hour=60,
    pos_down_per_hour=20,
    debounce_seconds=1.0,
)


def parse(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Sample name -> (sorted labels) -> value."""
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[s.name][tuple(sorted(s.labels.items()))] = s.value
    return samples


def per_venue(samples: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str) -> dict[str, float]:
    return {dict(labels)["venue"]: v for labels, v in samples.get(name, {}).items()}


async def test_scraped_metrics_match_what_the_simulator_published(broker: Mosquitto, tmp_path: Path) -> None:
    """Online, accepting, outbox, oldest age, injected/failed totals, printer and POS states, last seen."""
    port = free_port()
    env = {**os.environ, "VENUE_AGENT_CONFIG": str(tmp_path / "absent.toml")}
    console = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "agent.cli.main", "console", "--broker", f"127.0.0.1:{broker.port}"),
        *("--metrics-listen", f"127.0.0.1:{port}", "--no-screen"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    venues = tuple(f"v{i:02d}" for i in range(50))
    sim = FleetSim(SimOptions("127.0.0.1", broker.port, venues, rates=BUSY, seed=11, connects_per_second=500))
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=5) as http:

            async def connected() -> float:
                try:
                    text = (await http.get(url)).text
                except httpx.TransportError:
                    return 0.0
                return parse(text)["venue_agent_console_connected"].get((), 0.0)

            await eventually(connected, lambda v: v == 1.0, timeout=15)
            async with running(sim):
                # A venue that can take no order: POS down and both printers out of paper, for longer than the test.
                venue, out, now = sim.venues["v07"], [], time.time()
                venue.set_pos("down", now, out, until=now + 3600)
                for printer in venue.printers:
                    venue.set_printer(printer, "paper_out", now, out, until=now + 3600)
                sim.enqueue("v07", out)
                await asyncio.sleep(6)  # orders, failures, faults, three health rounds
                sim.drop("v03", 3600)  # the broker publishes its Will
                await eventually(
                    lambda: value(sim.retained[("v07", "availability")]["accepting"]), lambda a: a is False
                )
                sim.frozen = True
                await eventually(lambda: value(sum(q.qsize() for q in sim.queues.values())), lambda n: n == 0)
                await asyncio.sleep(1.0)  # the last acknowledged messages reach the console
                samples = parse((await http.get(url)).text)
                scraped_at = time.time()
                _check(samples, sim, scraped_at)
    finally:
        console.terminate()
        _, err = await asyncio.wait_for(console.communicate(), 10)
    assert console.returncode in (0, -15), err.decode()


def _check(samples: dict[str, dict[tuple[tuple[str, str], ...], float]], sim: FleetSim, scraped_at: float) -> None:
    venues = sorted(sim.venues)
    online = per_venue(samples, "venue_agent_venue_online")
    assert online == {v: 0.0 if v == "v03" else 1.0 for v in venues}
    accepting = per_venue(samples, "venue_agent_venue_accepting")
    assert accepting == {v: float(sim.retained[(v, "availability")]["accepting"] is True) for v in venues}
    assert accepting["v07"] == 0.0
    outbox: dict[tuple[str, str], float] = {
        (dict(k)["venue"], dict(k)["state"]): v for k, v in samples["venue_agent_venue_outbox_orders"].items()
    }
    oldest = per_venue(samples, "venue_agent_venue_oldest_undelivered_order_age_seconds")
    printers = {tuple(sorted(dict(k).items())) for k in samples["venue_agent_venue_printer_state"]}
    pos = {(dict(k)["venue"], dict(k)["state"]) for k in samples["venue_agent_venue_pos_state"]}
    expected_printers = set()
    for v in venues:
        health: dict[str, Any] = sim.retained[(v, "health")]
        for state, count in health["outbox"].items():
            if state != "sending":
                assert outbox[(v, state)] == count, (v, state)
        assert oldest[v] == (health["oldest_pending_age_s"] or 0.0)
        expected_printers |= {(("printer", p["name"]), ("state", p["state"]), ("venue", v)) for p in health["printers"]}
        assert (v, health["pos"]["state"]) in pos
    assert printers == expected_printers
    assert (("printer", "kitchen"), ("state", "paper_out"), ("venue", "v07")) in printers
    injected = per_venue(samples, "venue_agent_venue_orders_injected_total")
    failed = per_venue(samples, "venue_agent_venue_orders_failed_total")
    assert injected == {v: sim.events[(v, "injected")] for v in venues}
    assert failed == {v: sim.events[(v, "failed")] for v in venues}
    assert sum(injected.values()) > 20 and sum(failed.values()) > 2  # the run did exercise both (counts vary with load)
    seen = per_venue(samples, "venue_agent_venue_last_seen_timestamp_seconds")
    assert set(seen) == set(venues) and all(scraped_at - 30 < t <= scraped_at for t in seen.values())
    fleet = {dict(k)["need"]: v for k, v in samples["venue_agent_fleet_venues"].items()}
    assert (fleet["all"], fleet["online"], fleet["offline"]) == (50, 49, 1)
    assert fleet["not-accepting"] == sum(1 for v in venues if not sim.retained[(v, "availability")]["accepting"])
