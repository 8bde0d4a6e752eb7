#!/usr/bin/env python3
"""A connection flood against the intake (issue 11, point 3); prints a Markdown table.

Run from the repository root with the project's virtualenv::

    .venv/bin/python benchmarks/flood.py [--connections 1100] [--seconds 20]

The agent runs as ``venue-agent run`` with the file-descriptor limit a systemd service gets by default
(soft 1024, the hard limit unchanged; ``--hard-1024`` makes the hard limit 1024 too, so the agent cannot
raise it), logging JSON at ``info`` like under systemd, and a POS simulator process on loopback. The benchmark
opens ``--connections`` idle TCP connections to the intake and keeps them open for ``--seconds``; meanwhile
one real client posts two orders a second (a fresh connection per order, 5 s timeout). Measured over the
flood window: the agent's CPU (% of one core), the bytes it logged, the client's 202 latency (p50/p99,
failures), the orders the POS received; then the flood closes and one more order must get its 202.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: make ``agent``, ``benchmarks`` and ``tests`` importable

import httpx  # noqa: E402

from benchmarks import run as core  # noqa: E402
from tests.conftest import make_order  # noqa: E402

ORDER_INTERVAL = 0.5


def config_text(workdir: Path, *, port: int, sim_port: int) -> str:
    """Return an agent config: JSON logs at info (the shipped default level), file printer."""
    return f"""
[venue]
id = "{core.VENUE}"
timezone = "Europe/London"

[storage]
path = {json.dumps(str(workdir / "flood.db"))}
min_free_mb = 0

[intake]
listen = "127.0.0.1:{port}"

[fallback]
print_after_seconds = 3600

[pos]
driver = "http"
timeout_seconds = 5
rate_limit_per_second = 50

[pos.http]
url = "http://127.0.0.1:{sim_port}/orders"

[[printers]]
name = "pass"
connection = "file"
path = {json.dumps(str(workdir / "tickets.txt"))}

[discovery]
advertise = false

[logging]
level = "info"
format = "json"
"""


def spawn_agent(config: Path, log_path: Path, *, hard_1024: bool) -> subprocess.Popen[bytes]:
    """Start ``venue-agent run`` with RLIMIT_NOFILE soft 1024 (and hard 1024 with ``hard_1024``)."""

    def limit() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024 if hard_1024 else hard))

    with log_path.open("wb") as out:
        return subprocess.Popen(
            [str(core.BIN), "run", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=core.child_env(),
            preexec_fn=limit,
        )


def open_flood(port: int, count: int) -> list[socket.socket]:
    """Open ``count`` idle TCP connections to 127.0.0.1:port (they send nothing)."""
    socks = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(2)
        try:
            sock.connect(("127.0.0.1", port))
        except OSError:
            sock.close()
            continue
        socks.append(sock)
    return socks


async def post_one(base: str, order_id: str) -> tuple[int | None, float]:
    """POST one order on a fresh connection; return (status or None on failure, seconds)."""
    started = time.perf_counter()
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
            response = await client.post(f"{base}/v1/orders", json=make_order(order_id))
            return response.status_code, time.perf_counter() - started
    except httpx.HTTPError:
        return None, time.perf_counter() - started


def pct(values: list[float], q: float) -> float:
    """Return the q-quantile (nearest rank) of ``values`` (nan if empty)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main(args: argparse.Namespace) -> int:
    """Run the flood once and print the table row."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, args.connections + 512)), hard))
    workdir = Path(tempfile.mkdtemp(prefix="venue-agent-flood-"))
    with core.children(workdir) as procs:
        sim = core.Sim(procs)
        await sim.ready()
        port = core.free_port()
        config = workdir / "agent.toml"
        config.write_text(config_text(workdir, port=port, sim_port=sim.port), encoding="utf-8")
        log_path = workdir / "agent.log"
        agent = spawn_agent(config, log_path, hard_1024=args.hard_1024)
        procs.started.append(agent)
        base = f"http://127.0.0.1:{port}"
        await core.wait_http(f"{base}/v1/health", within=15)
        warm, _ = await post_one(base, "ord_flood_warm")
        assert warm == 202, warm
        flood = await asyncio.to_thread(open_flood, port, args.connections)
        log_before = log_path.stat().st_size
        cpu_before, wall_before = core.cpu_seconds(agent.pid), time.perf_counter()
        results: list[tuple[int | None, float]] = []
        tasks: list[asyncio.Task[tuple[int | None, float]]] = []
        i = 0
        while time.perf_counter() - wall_before < args.seconds:
            tasks.append(asyncio.create_task(post_one(base, f"ord_flood_{i:04d}"), name=f"flood order {i}"))
            i += 1
            await asyncio.sleep(ORDER_INTERVAL)
        results = list(await asyncio.gather(*tasks))
        cpu = (core.cpu_seconds(agent.pid) - cpu_before) / (time.perf_counter() - wall_before)
        log_bytes = log_path.stat().st_size - log_before
        for sock in flood:
            with contextlib.suppress(OSError):
                sock.close()
        ok = [seconds for status, seconds in results if status == 202]
        deadline = time.perf_counter() + 10
        while len(await sim.orders()) < len(ok) + 1 and time.perf_counter() < deadline:  # noqa: ASYNC110 - polls a process
            await asyncio.sleep(0.1)
        in_pos = len(await sim.orders()) - 1  # the warm-up order
        after, after_s = await post_one(base, "ord_flood_after")
        alive = agent.poll() is None
        row = (
            f"| {args.label}{args.connections} idle connections, {args.seconds:g} s, agent RLIMIT_NOFILE soft 1024"
            f"{' hard 1024' if args.hard_1024 else ''} "
            f"| {cpu * 100:.0f}% | {log_bytes:,} B | {len(ok)}/{len(results)} "
            f"| {pct(ok, 0.5) * 1000:.0f} / {pct(ok, 0.99) * 1000:.0f} ms "
            f"| {in_pos} | {after} in {after_s * 1000:.0f} ms{'' if alive else ' (agent died)'} |"
        )
        print(f"flood connections opened: {len(flood)}; agent log: {log_path}")
        print("| case | agent CPU | log bytes | 202s | 202 latency p50 / p99 | orders in POS | after the flood |")
        print("|---|---|---|---|---|---|---|")
        print(row)
        await core.terminate(agent)
        await sim.client.aclose()
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--connections", type=int, default=1100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--label", default="", help="text put before the case, e.g. 'before: '")
    parser.add_argument("--hard-1024", action="store_true", help="hard limit 1024 too: the agent cannot raise it")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
