"""Intake connections (agent/api/server.py, agent/service/descriptors.py): the cap, the timeouts, EMFILE backoff.

The decisions are pure functions tested alone; the rest drives an in-process agent over real loopback sockets.
The flood of a real ``venue-agent run`` process is in tests/test_flood.py.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from agent.api.server import ACCEPT_PAUSE_MAX_SECONDS, ACCEPT_PAUSE_MIN_SECONDS, accept_pause, longest_idle
from agent.domain.config import Settings, settings_from_dict
from agent.domain.errors import ConfigError
from agent.service.descriptors import RESERVED, connection_cap
from tests.conftest import Sim, agent_settings, make_order, run_agent

# ---- pure decisions ------------------------------------------------------------------------------


def test_longest_idle_skips_busy_connections() -> None:
    assert longest_idle([(False, 5.0, "b"), (True, 1.0, "busy"), (False, 2.0, "a")]) == "a"
    assert longest_idle([(True, 1.0, "x"), (True, 2.0, "y")]) is None
    assert longest_idle([]) is None


def test_accept_pause_doubles_up_to_the_cap() -> None:
    pauses = [accept_pause(None)]
    for _ in range(10):
        pauses.append(accept_pause(pauses[-1]))
    assert pauses[0] == ACCEPT_PAUSE_MIN_SECONDS
    assert pauses[1] == 2 * ACCEPT_PAUSE_MIN_SECONDS
    assert pauses[-1] == ACCEPT_PAUSE_MAX_SECONDS


def test_connection_cap_keeps_descriptors_in_reserve() -> None:
    assert connection_cap(256, 8192) == 256
    assert connection_cap(4096, 1024) == 1024 - RESERVED
    assert connection_cap(256, 100) == 8, "never below a handful"


@pytest.mark.parametrize(
    ("key", "value"), [("max_connections", 0), ("idle_timeout_seconds", 0), ("request_timeout_seconds", 1000)]
)
def test_config_check_refuses_bad_limits(key: str, value: int) -> None:
    raw: dict[str, Any] = {"venue": {"id": "harbour-kitchen"}, "intake": {key: value}}
    with pytest.raises(ConfigError) as caught:
        settings_from_dict(raw)
    assert f"intake.{key}" in {p.key for p in caught.value.problems}


# ---- the running intake --------------------------------------------------------------------------


async def wait_closed(reader: asyncio.StreamReader, within: float) -> float:
    """Return the seconds until the agent closed the connection (EOF); fail if it stays open ``within``."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(within):
            while await reader.read(4096):
                pass
    except TimeoutError:
        pytest.fail(f"the agent kept the connection open for {within} s")
    except ConnectionResetError:
        pass
    return time.monotonic() - started


async def test_slow_headers_and_silent_connections_are_closed(tmp_path: Path, sim: Sim) -> None:
    """Slowloris: a head or a body trickling in, or nothing at all, is closed after request_timeout_seconds."""
    settings = agent_settings(tmp_path, sim.url, intake={"request_timeout_seconds": 1, "idle_timeout_seconds": 1})
    with capture_logs() as logged:
        await _slow_clients(settings)
    events = [e["event"] for e in logged]
    assert events.count("intake_request_timeout") == 3
    assert "intake_internal_error" not in events, "a body cut by the timeout is no internal error"


async def _slow_clients(settings: Settings) -> None:
    async with run_agent(settings) as running:
        port = running.agent.port
        silent_r, silent_w = await asyncio.open_connection("127.0.0.1", port)
        slow_r, slow_w = await asyncio.open_connection("127.0.0.1", port)
        slow_w.write(b"POST /v1/orders HTTP/1.1\r\nHost: x\r\n")
        body_r, body_w = await asyncio.open_connection("127.0.0.1", port)
        body_w.write(b"POST /v1/orders HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        for _ in range(3):  # a byte every 0.4 s: never idle long, never complete
            await asyncio.sleep(0.4)
            for writer in (slow_w, body_w):
                if not writer.is_closing():
                    writer.write(b"X")
        assert await wait_closed(silent_r, within=3) < 3
        assert await wait_closed(slow_r, within=3) < 3
        assert await wait_closed(body_r, within=3) < 3
        for writer in (silent_w, slow_w, body_w):
            writer.close()
        # A keep-alive client that goes quiet after its answer is closed too (idle timeout).
        ka_r, ka_w = await asyncio.open_connection("127.0.0.1", port)
        ka_w.write(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
        await ka_w.drain()
        assert (await ka_r.readline()).startswith(b"HTTP/1.1 200")
        assert await wait_closed(ka_r, within=3) < 3
        ka_w.close()
        assert (await running.client.post("/v1/orders", json=make_order("ord_after_slow"))).status_code == 202


async def test_at_the_cap_idle_connections_make_room_for_a_real_client(tmp_path: Path, sim: Sim) -> None:
    """Three times the cap of idle connections: a real client still gets its 202 at once; the count stays capped."""
    settings = agent_settings(tmp_path, sim.url, intake={"max_connections": 8, "request_timeout_seconds": 60})
    async with run_agent(settings) as running:
        port = running.agent.port
        idle = []
        for _ in range(24):
            sock = socket.create_connection(("127.0.0.1", port))
            idle.append(sock)
        server = running.agent._server
        assert server is not None

        async def settled() -> int:
            await asyncio.sleep(0.05)
            return len([c for c in server.server_state.connections if not c.transport.is_closing()])

        deadline = time.monotonic() + 5
        while await settled() < 8 and time.monotonic() < deadline:
            pass
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=3) as client:
            started = time.monotonic()
            response = await client.post("/v1/orders", json=make_order("ord_at_cap"))
            assert response.status_code == 202, response.text
            assert time.monotonic() - started < 2
        assert await settled() <= 8
        for sock in idle:
            sock.close()
        await running.wait_state("ord_at_cap", "injected")


async def test_out_of_descriptors_pauses_accepting(tmp_path: Path, sim: Sim, monkeypatch: pytest.MonkeyPatch) -> None:
    """EMFILE from accept(): a few attempts with a growing pause and a few log lines, not a spin."""
    settings = agent_settings(tmp_path, sim.url)
    async with run_agent(settings) as running:
        loop = asyncio.get_running_loop()
        real_accept = loop.sock_accept
        calls = 0

        async def emfile(sock: socket.socket) -> tuple[socket.socket, Any]:
            nonlocal calls
            calls += 1
            if calls <= 6:
                raise OSError(errno.EMFILE, "Too many open files")
            return await real_accept(sock)

        with capture_logs() as logged:
            monkeypatch.setattr(loop, "sock_accept", emfile)
            base = f"http://127.0.0.1:{running.agent.port}"
            # The accept loop is already waiting in the real sock_accept: this connection wakes it.
            async with httpx.AsyncClient(base_url=base, trust_env=False, timeout=10) as client:
                assert (await client.post("/v1/orders", json=make_order("ord_emfile1"))).status_code == 202
            # The next accept() calls fail with EMFILE six times; a new client waits in the backlog meanwhile.
            started = time.monotonic()
            async with httpx.AsyncClient(base_url=base, trust_env=False, timeout=10) as client:
                assert (await client.post("/v1/orders", json=make_order("ord_emfile2"))).status_code == 202
            waited = time.monotonic() - started
        failures = [e for e in logged if e["event"] == "intake_accept_failed"]
        assert len(failures) == 6
        assert calls <= 8, f"{calls} accept() calls: the loop spins"
        pauses = [e["pause_seconds"] for e in failures]
        assert pauses == sorted(pauses) and pauses[0] == ACCEPT_PAUSE_MIN_SECONDS
        assert waited < sum(pauses) + 2
