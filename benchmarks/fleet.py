"""The console at fleet scale: ``.venv/bin/python benchmarks/fleet.py [--venues 1000]`` (about 3 minutes).

Starts a real ``mosquitto`` (the limits of config/mosquitto/mosquitto-venue-agent.conf: max_queued_messages
1000), ``venue-agent fleet-sim --venues N`` at its default rates (health every 30 s, 12 orders an hour per venue,
faults), and ``venue-agent console --metrics-listen`` with its screen going to a pipe (a full frame each redraw,
as on the largest terminal). Then:

1. A quiet window (``--window`` s, default 60): the messages per second the fleet publishes (a separate
   subscriber on ``venues/#``, retained messages left out), the console's CPU (utime + stime from /proc over
   the window, as a share of one core) and RSS, and the same for fleet-sim and mosquitto.
2. A probe window: every 0.5 s an ``order_failed`` alert with a unique reason is published for a random venue;
   its latency is the time from just before the publish to the moment the benchmark reads a frame line that
   shows it (the console draws within 0.25 s of an alert). p50 / p99 / max over all probes.
3. One scrape of ``/metrics``: its size, time, and the venue count it reports.

Prints a table, then the first 30 lines of the frame at the end of the quiet window (a terminal 30 lines high).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import aiomqtt
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
FRAME_START = re.compile(r"^\d+ venues, ")
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """Return a free port below the ephemeral range: fleet-sim's 1,000 outgoing connections take ports from it."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for port in random.sample(range(10_000, low), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def start(cmd: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, **kwargs)  # type: ignore[call-overload, no-any-return]


def scrape(url: str) -> tuple[str, float]:
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return text, (time.monotonic() - started) * 1000


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


class Screen:
    """Reads the console's frames from its stdout in a thread; notes when each probe first shows."""

    def __init__(self, stream: object) -> None:
        self.stream = stream
        self.frame: list[str] = []
        self.last_frame: list[str] = []
        self.frames = 0
        self.seen: dict[str, float] = {}
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for raw in self.stream:  # type: ignore[attr-defined]
            line = raw.decode(errors="replace").rstrip("\n")
            if FRAME_START.match(line):
                if self.frame:
                    self.last_frame = self.frame
                    self.frames += 1
                self.frame = []
            self.frame.append(line)
            if "bench-probe-" in line:
                now = time.time()
                for probe in re.findall(r"bench-probe-\d+", line):
                    self.seen.setdefault(probe, now)


class Counter:
    """Counts the fleet's messages at the broker (not retained) from its own subscription."""

    def __init__(self) -> None:
        self.count = 0
        self.status: dict[str, str] = {}

    async def run(self, port: int) -> None:
        async with aiomqtt.Client("127.0.0.1", port, identifier="bench-counter") as client:
            await client.subscribe("venues/#", qos=0)
            async for message in client.messages:
                if not message.retain:
                    self.count += 1
                topic = message.topic.value
                if topic.endswith("/status") and isinstance(message.payload, bytes):
                    self.status[topic.split("/")[1]] = json.loads(message.payload).get("state", "?")


async def measure(args: argparse.Namespace, work: Path) -> None:
    port, metrics_port = free_port(), free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 1000\n"
        f"max_connections -1\nuser {os.environ.get('USER') or 'root'}\n",
        encoding="utf-8",
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        broker = start([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(broker)
        await asyncio.sleep(0.5)
        cli = [sys.executable, "-m", "agent.cli.main"]
        sim = start(
            [*cli, "fleet-sim", "--venues", str(args.venues), "--broker", f"127.0.0.1:{port}", "--seed", "7"],
            stdout=subprocess.DEVNULL,
            stderr=(work / "sim.log").open("wb"),
        )
        procs.append(sim)
        await asyncio.sleep(args.venues / 200 + 5)  # fleet-sim paces its first connections at 200 a second
        env = {**os.environ, "VENUE_AGENT_CONFIG": str(work / "absent.toml")}
        console = start(
            [*cli, "console", "--broker", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{metrics_port}"],
            stdout=subprocess.PIPE,
            stderr=(work / "console.log").open("wb"),
            env=env,
        )
        procs.append(console)
        screen = Screen(console.stdout)
        counter = Counter()
        counting = asyncio.create_task(counter.run(port))
        await asyncio.sleep(args.settle)

        # 1. quiet window
        pids = {"console": console.pid, "fleet-sim": sim.pid, "mosquitto": broker.pid}
        cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
        count0, t0 = counter.count, time.monotonic()
        rss_samples: list[float] = []
        while time.monotonic() - t0 < args.window:
            await asyncio.sleep(1)
            rss_samples.append(rss_mb(console.pid))
        wall = time.monotonic() - t0
        cpu = {k: (cpu_seconds(p) - cpu0[k]) / wall * 100 for k, p in pids.items()}
        rate = (counter.count - count0) / wall
        rss = {k: rss_mb(p) for k, p in pids.items()}
        quiet_frame = screen.last_frame

        # 2. probe window
        latencies: list[float] = []
        sent: dict[str, float] = {}
        venues = [f"sim-{i:04d}" for i in range(1, args.venues + 1)]
        async with aiomqtt.Client("127.0.0.1", port, identifier="bench-prober") as prober:
            for n in range(args.probes):
                probe = f"bench-probe-{n}"
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
                alert = {"ts": stamp, "alert": "order_failed", "severity": "critical", "order": None}
                body = json.dumps(alert | {"reason": probe, "action": "benchmark probe"})
                sent[probe] = time.time()
                await prober.publish(f"venues/{random.choice(venues)}/alerts", body, qos=1)
                await asyncio.sleep(0.5)
        await asyncio.sleep(3)
        for probe, at in sent.items():
            if probe in screen.seen:
                latencies.append((screen.seen[probe] - at) * 1000)

        # 3. one scrape
        text, scrape_ms = await asyncio.to_thread(scrape, f"http://127.0.0.1:{metrics_port}/metrics")
        fleet = {
            s.labels["need"]: s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "venue_agent_fleet_venues"
        }
        known = fleet["all"]
        broker_online = sum(1 for state in counter.status.values() if state == "online")
        counting.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await counting
    except BaseException:
        for log in ("console.log", "sim.log"):
            text = (work / log).read_text(errors="replace") if (work / log).exists() else ""
            print(f"--- {log} (last 3000 characters) ---\n{text[-3000:]}", file=sys.stderr)
        raise
    finally:
        for proc in reversed(procs):
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=15)
            if proc.poll() is None:
                proc.kill()

    lat = sorted(latencies)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")

    rows = [
        ("venues (fleet-sim, one MQTT connection each)", f"{args.venues}"),
        ("venues the console knows (from /metrics)", f"{known:.0f}"),
        ("online: per the console / per a plain subscriber", f"{fleet['online']:.0f} / {broker_online}"),
        ("broker messages/s from the fleet (default intervals)", f"{rate:.1f}"),
        ("console CPU, % of one core", f"{cpu['console']:.1f}"),
        ("console RSS MB (end of window / peak in it)", f"{rss['console']:.1f} / {max(rss_samples):.1f}"),
        ("alert -> screen ms p50 / p99 / max", f"{pct(0.5):.0f} / {pct(0.99):.0f} / {(lat[-1] if lat else 0):.0f}"),
        ("probes shown / sent", f"{len(lat)} / {len(sent)}"),
        ("frames drawn (whole run)", f"{screen.frames}"),
        ("/metrics scrape: bytes, ms", f"{len(text)}, {scrape_ms:.0f}"),
        ("fleet-sim CPU %, RSS MB", f"{cpu['fleet-sim']:.1f}, {rss['fleet-sim']:.0f}"),
        ("mosquitto CPU %, RSS MB", f"{cpu['mosquitto']:.1f}, {rss['mosquitto']:.0f}"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'figure':<{width}} | value")
    print(f"{'-' * width}-|------")
    for name, value in rows:
        print(f"{name:<{width}} | {value}")
    print(f"\n(window {args.window:.0f} s; {args.probes} probes every 0.5 s; machine: {os.cpu_count()} CPUs)")
    print("\nThe console's screen at the end of the quiet window (before the probes), first 30 lines:\n")
    print("\n".join(line[:160] for line in quiet_frame[:30]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venues", type=int, default=1000)
    parser.add_argument("--window", type=float, default=60.0, help="seconds of the quiet window")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds between the console's start and the window")
    parser.add_argument("--probes", type=int, default=120)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="venue-agent-fleet-") as work:
        asyncio.run(measure(args, Path(work)))


if __name__ == "__main__":
    main()
