"""Processes of a benchmark: the POS simulator, agents and their configs, a lean HTTP/1.1 client, seeded outboxes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from agent.domain.clock import SystemClock
from agent.domain.models import Order, parse_order
from agent.domain.states import place
from agent.outbox.store import Outbox
from benchmarks.harness import BIN, VENUE, Report
from tests.conftest import make_order

PENDING = ("queued", "sending", "retrying", "awaiting_pos", "scheduled")
UNPAID = {"status": "pending", "method": "card", "amount": 1910, "currency": "GBP"}

# ---- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("VENUE_AGENT_") and k != "NOTIFY_SOCKET"}


class Children:
    """Every process the benchmark starts; all are stopped at the end, whatever happens."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []

    def spawn(
        self, name: str, *args: str, env: dict[str, str] | None = None, wrapper: tuple[str, ...] = ()
    ) -> subprocess.Popen[bytes]:
        """Start ``venue-agent ARGS`` (under ``wrapper``, e.g. a profiler) with ``env`` added to the environment."""
        with (self.logs / f"{name}-{len(self.started):02d}.log").open("wb") as log:
            popen = subprocess.Popen(
                [*wrapper, str(BIN), *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**child_env(), **(env or {})},
            )
        self.started.append(popen)
        return popen

    def close(self) -> None:
        for popen in self.started:
            if popen.poll() is None:
                popen.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=5)


@contextlib.contextmanager
def children(logs: Path) -> Iterator[Children]:
    registry = Children(logs)
    try:
        yield registry
    finally:
        registry.close()


async def wait_http(url: str, *, within: float, interval: float = 0.01) -> float:
    """Poll ``url`` until it answers 200; return when (perf_counter)."""
    deadline = time.perf_counter() + within
    async with httpx.AsyncClient(trust_env=False, timeout=2) as client:
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(url)).status_code == 200:
                    return time.perf_counter()
            if time.perf_counter() > deadline:
                msg = f"{url} not ready within {within} s"
                raise RuntimeError(msg)
            await asyncio.sleep(interval)


class Sim:
    """The POS simulator process."""

    def __init__(self, procs: Children) -> None:
        self.port = free_port()
        self.popen = procs.spawn("pos-sim", "pos-sim", "--port", str(self.port))
        self.base = f"http://127.0.0.1:{self.port}"
        self.client = httpx.AsyncClient(trust_env=False, timeout=60)

    async def ready(self) -> None:
        await wait_http(f"{self.base}/_sim/faults", within=10)

    async def reset(self) -> None:
        (await self.client.post(f"{self.base}/_sim/reset")).raise_for_status()

    async def orders(self) -> list[dict[str, Any]]:
        response = await self.client.get(f"{self.base}/_sim/orders")
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    async def requests(self) -> list[dict[str, Any]]:
        response = await self.client.get(f"{self.base}/_sim/requests")
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result


def agent_config(
    workdir: Path,
    name: str,
    *,
    sim_port: int,
    rate: float,
    printer_port: int | None = None,
    print_after_seconds: float = 3600,
    print_when_pos_not_ready: bool = True,
    mqtt: dict[str, Any] | None = None,
) -> tuple[Path, Path, int]:
    """Write an agent config; return (config path, outbox path, intake port).

    By default the printer is a text file; with ``printer_port`` it is a network (ESC/POS) printer on
    127.0.0.1 and mDNS advertising is off. ``mqtt`` is the ``[mqtt]`` section (strings, numbers, booleans);
    without it MQTT is off.
    """
    port = free_port()
    db = workdir / f"{name}.db"
    path = workdir / f"{name}.toml"
    if printer_port is None:
        printers = f"""[[printers]]
name = "pass"
connection = "file"
path = {json.dumps(str(workdir / f"{name}-tickets.txt"))}
"""
    else:
        printers = f"""[[printers]]
name = "pass"
connection = "network"
host = "127.0.0.1"
port = {printer_port}
profile = "TM-T20II"

[discovery]
advertise = false
"""
    not_ready = "" if print_when_pos_not_ready else "print_when_pos_not_ready = false\n"
    mqtt_section = ""
    if mqtt is not None:
        values = (f"{k} = {json.dumps(v)}" for k, v in mqtt.items())  # JSON scalars are TOML scalars
        mqtt_section = "[mqtt]\n" + "\n".join(values) + "\n\n"
    path.write_text(
        f"""
[venue]
id = "{VENUE}"
timezone = "Europe/London"

[storage]
path = {json.dumps(str(db))}
min_free_mb = 0

[intake]
listen = "127.0.0.1:{port}"

[injection]
hold_unpaid = true
backoff_base_seconds = 0.5
backoff_max_seconds = 5

[fallback]
print_after_seconds = {print_after_seconds:g}
{not_ready}
[pos]
driver = "http"
timeout_seconds = 10
rate_limit_per_second = {rate}

[pos.http]
url = "http://127.0.0.1:{sim_port}/orders"

{printers}
{mqtt_section}[logging]
level = "warning"
format = "json"
""",
        encoding="utf-8",
    )
    return path, db, port


def cpu_seconds(pid: int) -> float:
    """Return the CPU time (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vm_hwm_kb(pid: int) -> int:
    """Return the peak resident set size of a process (VmHWM), in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


async def stop_agent(popen: subprocess.Popen[bytes], report: Report, label: str) -> None:
    """Record the agent's peak RSS, then SIGTERM it and wait for it to exit."""
    report.rss_kb[label] = vm_hwm_kb(popen.pid)
    await terminate(popen)


async def terminate(popen: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process and wait for it to exit (SIGKILL after 15 s)."""
    popen.send_signal(signal.SIGTERM)
    for _ in range(300):  # up to 15 s
        if popen.poll() is not None:
            break
        await asyncio.sleep(0.05)
    if popen.poll() is None:
        popen.kill()


async def outbox_counts(client: httpx.AsyncClient, base: str) -> dict[str, int]:
    counts: dict[str, int] = (await client.get(f"{base}/v1/health")).json()["outbox"]
    return counts


# ---- a lean HTTP/1.1 client ------------------------------------------------------------------


def post_request(port: int, body: bytes) -> bytes:
    """Return a complete ``POST /v1/orders`` request, ready to write."""
    head = (
        f"POST /v1/orders HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, float, bytes]:
    """Read one response; return (status, wall time the status line arrived, body).

    The status line is when the client knows the order is acknowledged; the body can trail it (see the
    notes on TCP_NODELAY in the report).
    """
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the agent closed the connection")
    at = time.time()
    status = int(status_line.split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, at, await reader.readexactly(length)


def order_bodies(count: int, prefix: str, **changes: Any) -> list[bytes]:
    """Return JSON bodies of ``count`` valid orders with distinct ids."""
    template = make_order("template", **changes)
    bodies = []
    for i in range(count):
        template["id"] = f"{prefix}-{i:06d}"
        bodies.append(json.dumps(template, separators=(",", ":")).encode())
    return bodies


# ---- orders ---------


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


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]
