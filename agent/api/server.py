"""The intake's HTTP server: uvicorn's protocol behind the agent's own accept loop, with a connection cap.

asyncio's own accept loop (``BaseSelectorEventLoop._accept_connection``, CPython 3.11) does not stop after
EMFILE: it logs a traceback and schedules a retry for every one of its ``backlog`` (2048) accept attempts
per wake-up, so a descriptor shortage became 10,000 log lines a second at 90% CPU. Here accepting is one
``sock_accept`` at a time: at the cap the longest-idle connection is closed for the new one (or, all busy,
accepting waits; new connections wait in the kernel's backlog and take no descriptor), and EMFILE/ENFILE
pause accepting with a doubling delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import math
import socket
import time
from collections.abc import Callable, Generator, Iterable
from typing import Any

import structlog
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = structlog.get_logger("venue_agent.intake")

PEER_GONE = frozenset({errno.ECONNABORTED, errno.EPROTO})
ACCEPT_PAUSE_MIN_SECONDS = 0.05
ACCEPT_PAUSE_MAX_SECONDS = 1.0
LISTEN_BACKLOG = 1024


def accept_pause(previous: float | None) -> float:
    """Return the next pause after an out-of-descriptors accept: doubling from the minimum, capped."""
    if previous is None:
        return ACCEPT_PAUSE_MIN_SECONDS
    return min(previous * 2, ACCEPT_PAUSE_MAX_SECONDS)


def longest_idle(connections: Iterable[tuple[bool, float, Any]]) -> Any | None:
    """Return the connection (of ``(busy, idle_since, connection)``) idle the longest, or None if all are busy."""
    idle = [(since, i, conn) for i, (busy, since, conn) in enumerate(connections) if not busy]
    return min(idle, key=lambda item: (item[0], item[1]))[2] if idle else None


class CappedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a request timeout: line, headers and body must arrive in time."""

    request_timeout: float = 10.0
    on_closed: Callable[[], None] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Register the connection and start its request timer."""
        self.idle_since = time.monotonic()
        self._received = False
        self._request_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm_request_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the request timer and let uvicorn forget the connection."""
        self._cancel_request_timer()
        super().connection_lost(exc)
        if self.on_closed is not None:
            self.on_closed()

    def on_message_complete(self) -> None:
        """The whole request arrived in time: stop its timer."""
        self._received = True
        self._cancel_request_timer()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        """Answered: the next request is due within the timeout (slow trickles included)."""
        super().on_response_complete()
        self.idle_since = time.monotonic()
        self._received = False
        if not self.transport.is_closing():
            self._arm_request_timer()

    @property
    def busy(self) -> bool:
        """Return whether a request is being handled (its head arrived, its answer is not complete)."""
        return self.cycle is not None and not self.cycle.response_complete

    def _arm_request_timer(self) -> None:
        self._cancel_request_timer()
        self._request_timer = self.loop.call_later(self.request_timeout, self._request_timed_out)

    def _cancel_request_timer(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _request_timed_out(self) -> None:
        if not self._received and not self.transport.is_closing():
            log.info("intake_request_timeout", seconds=self.request_timeout, in_request=self.busy)
            self.transport.close()


class _Listener:
    """What uvicorn's shutdown closes and awaits in place of an asyncio.Server: the accept loop."""

    def __init__(self, task: asyncio.Task[None]) -> None:
        self.task = task

    def close(self) -> None:
        """Stop accepting."""
        self.task.cancel()

    async def wait_closed(self) -> None:
        """Wait until the accept loop has ended."""
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


class IntakeServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the agent and accepts at most ``max_connections``."""

    def __init__(self, config: uvicorn.Config, *, max_connections: int, request_timeout: float) -> None:
        self._exit = False
        self._stir = asyncio.Event()  # set on the stop and on each accepted connection: main_loop looks again
        super().__init__(config)
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self._freed = asyncio.Event()
        self._dated_at = -math.inf

    @property
    def should_exit(self) -> bool:
        """Return whether the server was told to stop."""
        return self._exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._exit = value
        self._stir.set()

    async def main_loop(self) -> None:
        """Wait for the stop; uvicorn's loop wakes every 100 ms to refresh the Date header, this one never idles awake.

        The Date header is refreshed as each connection is accepted and once a second while any is open.
        """
        while not await self._tick():
            self._stir.clear()
            wait = 1.0 if self.server_state.connections else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stir.wait(), timeout=wait)

    async def _tick(self) -> bool:
        self._dated_at = time.monotonic()
        return await self.on_tick(0)  # a multiple of 10: uvicorn refreshes the default headers

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Do nothing: the agent owns SIGTERM/SIGINT and stops the server itself."""
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start one accept loop per listening socket (uvicorn would start asyncio's)."""
        assert sockets, "the agent always passes its bound socket"
        self.servers = [
            _Listener(asyncio.create_task(self._accept_loop(sock), name="venue-agent intake accept"))  # type: ignore[misc]
            for sock in sockets
        ]
        self.started = True

    def _protocol(self) -> CappedProtocol:
        protocol = CappedProtocol(config=self.config, server_state=self.server_state, app_state=self.lifespan.state)
        protocol.request_timeout = self.request_timeout
        protocol.on_closed = self._freed.set
        return protocol

    def _make_room(self) -> bool:
        """Close the longest-idle connection if at the cap; return False if at the cap and all are busy."""
        open_ = [c for c in self.server_state.connections if not c.transport.is_closing()]
        if len(open_) < self.max_connections:
            return True
        victim = longest_idle((getattr(c, "busy", False), getattr(c, "idle_since", 0.0), c) for c in open_)
        if victim is None:
            return False
        victim.transport.close()
        return True

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        listener.setblocking(False)
        listener.listen(LISTEN_BACKLOG)
        pause: float | None = None
        while True:
            while not self._make_room():
                log.warning("intake_connections_busy", limit=self.max_connections)
                self._freed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._freed.wait(), timeout=1.0)
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError as exc:
                if exc.errno in PEER_GONE:
                    continue
                # Out of descriptors (EMFILE, ENFILE, ENOBUFS, ENOMEM) or anything else: pause, never spin or stop.
                pause = accept_pause(pause)
                log.warning("intake_accept_failed", error=exc.strerror, errno=exc.errno, pause_seconds=pause)
                await asyncio.sleep(pause)
                continue
            pause = None
            if time.monotonic() - self._dated_at >= 1.0:
                await self._tick()
                self._stir.set()
            protocol = self._protocol()
            try:
                await loop.connect_accepted_socket(lambda p=protocol: p, conn)  # type: ignore[misc]
            except OSError as exc:
                conn.close()
                log.warning("intake_connection_setup_failed", error=str(exc))
                continue


def build_server(app: Any, *, max_connections: int, idle_timeout: int, request_timeout: float) -> IntakeServer:
    """Return the intake server for ``app`` (not started; ``serve(sockets=[...])`` starts it)."""
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        http="httptools",
        timeout_graceful_shutdown=5,
        timeout_keep_alive=idle_timeout,
    )
    return IntakeServer(config, max_connections=max_connections, request_timeout=request_timeout)
