"""(k) An idle kitchen: the agent's CPU and wake-ups over a minute with no orders (issue 16, target 4)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.agents import Children, Sim, agent_config, cpu_seconds, stop_agent, wait_http
from benchmarks.harness import Report

IDLE_SECONDS = 60.0
SETTLE_SECONDS = 5.0
WATCHDOG_SECONDS = 30  # the shipped unit's WatchdogSec: the agent pings every 15 s


@contextlib.contextmanager
def notify_socket(path: Path) -> Iterator[socket.socket]:
    """Bind a datagram socket where the agent sends what it would send to systemd (READY, STATUS, WATCHDOG)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()
        path.unlink(missing_ok=True)


def received(sock: socket.socket) -> list[str]:
    """Return the datagrams waiting on ``sock``."""
    found = []
    with contextlib.suppress(BlockingIOError):
        while True:
            found.append(sock.recv(65536).decode("utf-8", "replace"))
    return found


def switches(pid: int) -> dict[str, int]:
    """Return voluntary context switches per thread (by thread name and id) of a process."""
    found: dict[str, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    found[f"{name}/{task.name}"] = int(line.split()[1])
        except OSError:  # the thread ended meanwhile
            continue
    return found


@dataclass
class Idle:
    """What an idle agent cost over a window."""

    seconds: float
    cpu: float
    wakeups: int
    threads: dict[str, int]

    @property
    def core_percent(self) -> float:
        return self.cpu / self.seconds * 100

    @property
    def per_second(self) -> float:
        return self.wakeups / self.seconds


async def idle_window(pid: int, seconds: float) -> Idle:
    """Measure a process's CPU seconds and voluntary context switches (all threads) over ``seconds``."""
    cpu0, sw0, t0 = cpu_seconds(pid), switches(pid), time.perf_counter()
    await asyncio.sleep(seconds)
    cpu1, sw1, t1 = cpu_seconds(pid), switches(pid), time.perf_counter()
    per_thread = {k: v - sw0.get(k, 0) for k, v in sw1.items()}
    return Idle(t1 - t0, cpu1 - cpu0, sum(per_thread.values()), per_thread)


async def run_idle(
    report: Report,
    procs: Children,
    sim: Sim,
    workdir: Path,
    *,
    seconds: float = IDLE_SECONDS,
    wrapper: tuple[str, ...] = (),
    column: str = "",
) -> Idle:
    """Start an agent with an empty outbox as systemd would (notify socket, watchdog), leave it alone; add the rows."""
    print(f"(k) idle agent, {seconds:.0f} s{column}", flush=True)
    config, _, port = agent_config(workdir, f"idle{len(procs.started)}", sim_port=sim.port, rate=20)
    # mDNS advertising off: its socket wakes on every mDNS packet on the network (here: other agents on this
    # machine), which measures the network, not the agent.
    config.write_text(config.read_text(encoding="utf-8") + "\n[discovery]\nadvertise = false\n", encoding="utf-8")
    with notify_socket(workdir / f"notify{len(procs.started)}.sock") as notify:
        # As under systemd: $NOTIFY_SOCKET (READY, STATUS every 10 s) and the shipped WatchdogSec=30.
        env = {"NOTIFY_SOCKET": notify.getsockname(), "WATCHDOG_USEC": str(WATCHDOG_SECONDS * 1_000_000)}
        popen = procs.spawn("agent-idle", "run", "--config", str(config), wrapper=wrapper, env=env)
        await wait_http(f"http://127.0.0.1:{port}/v1/health", within=30)
        await asyncio.sleep(SETTLE_SECONDS)  # start-up work (first probe, first status) is not idling
        received(notify)
        idle = await idle_window(popen.pid, seconds)
        pings = sum(1 for d in received(notify) if "WATCHDOG=1" in d.splitlines())
        await stop_agent(popen, report, f"idle agent{column}")
    busiest = sorted(idle.threads.items(), key=lambda kv: -kv[1])[:4]
    report.add(
        f"(k) idle agent (no orders, POS up, file printer, mDNS off, systemd notify + watchdog), {idle.seconds:.0f} s: "
        f"CPU{column}",
        "<= 0.1% of a core",
        f"{idle.core_percent:.3f}% ({idle.cpu:.2f} CPU s)",
        idle.core_percent <= 0.1,
    )
    report.add(
        f"(k) same: wake-ups (voluntary context switches, all threads){column}",
        "<= 2/s",
        f"{idle.per_second:.2f}/s ({idle.wakeups} in {idle.seconds:.0f} s; per thread: "
        + ", ".join(str(v) for _, v in busiest)
        + f"; {pings} watchdog pings)",
        idle.per_second <= 2,
    )
    return idle
