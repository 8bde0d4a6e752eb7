"""The POS simulator: the ``http`` contract and the POS dialects over real HTTP, with fault switches.

The app is the ``http`` contract of ``sim_contract`` plus the routes of every dialect in ``DIALECTS``, all over one
``SimulatorState`` (``sim_state``). Every switch can be set at runtime with ``POST /_sim/faults`` or, in-process,
with ``SimulatorState.apply_faults``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator, Sequence

import uvicorn
from starlette.applications import Starlette

from drivers.pos import sim_lightspeed, sim_square
from drivers.pos.sim_contract import ContractHandlers
from drivers.pos.sim_state import Dialect, SimulatorState

DIALECTS: tuple[Dialect, ...] = (sim_lightspeed.DIALECT, sim_square.DIALECT)
"""The dialects every simulator speaks besides the ``http`` contract; their paths never overlap."""


def create_app(state: SimulatorState, dialects: Sequence[Dialect] = DIALECTS) -> Starlette:
    """Return the simulator's ASGI app over ``state``: the ``http`` contract and every dialect's routes."""
    contract = ContractHandlers(state)
    routes = [
        *contract.routes(),
        *(route for dialect in dialects for route in dialect.routes(state)),
        *contract.status_routes(),
    ]
    return Starlette(routes=routes)


async def serve_simulator(
    host: str,
    port: int,
    *,
    state: SimulatorState | None = None,
    ready: asyncio.Event | None = None,
    shutdown: asyncio.Event | None = None,
) -> None:
    """Serve the simulator in this event loop until ``shutdown`` is set (port 0 picks a free port: see state.port)."""
    state = state if state is not None else SimulatorState()
    sock = _bind(host, port)
    state.port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(state),
        host=host,
        port=state.port,
        lifespan="off",
        ws="none",
        log_config=None,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    server = _SimServer(config, host, state.port)
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="pos-sim.serve")
    waiter = asyncio.create_task((shutdown or asyncio.Event()).wait(), name="pos-sim.shutdown")
    try:
        started = asyncio.create_task(server.started_event.wait(), name="pos-sim.started")
        await asyncio.wait({serving, started}, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if server.started:
            state.attach_listener(server.set_listening)
            if state.faults.hard_down:
                await server.set_listening(False)
            if ready is not None:
                ready.set()
        await asyncio.wait({serving, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        state.detach_listener()
        waiter.cancel()
        server.should_exit = True
        await serving


class _SimServer(uvicorn.Server):
    """A uvicorn server that leaves signals to its host and can stop and resume listening."""

    def __init__(self, config: uvicorn.Config, host: str, port: int) -> None:
        super().__init__(config)
        self.started_event = asyncio.Event()
        self._host = host
        self._port = port

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install no signal handlers: the program running the simulator owns SIGINT/SIGTERM."""
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start as uvicorn does, then say so."""
        await super().startup(sockets=sockets)
        self.started_event.set()

    async def set_listening(self, listening: bool) -> None:
        """Close the listening socket and drop idle connections, or listen again on the same port."""
        if not listening:
            for server in self.servers:
                server.close()
            connections = list(self.server_state.connections)
            idle = [c for c in connections if _idle(c)]
            for connection in connections:
                connection.shutdown()
            # Closing completes on a later loop turn; wait for it so a pooled client connection sees EOF.
            for _ in range(200):
                if not any(c in self.server_state.connections for c in idle):
                    break
                await asyncio.sleep(0.005)
            return
        if any(server.is_serving() for server in self.servers):
            return
        sock = _bind(self._host, self._port)
        loop = asyncio.get_running_loop()
        self.servers.append(await loop.create_server(self._protocol, sock=sock, backlog=self.config.backlog))

    def _protocol(self) -> asyncio.Protocol:
        return self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state
        )


def _idle(connection: object) -> bool:
    """Return whether a uvicorn HTTP connection is between requests."""
    cycle = getattr(connection, "cycle", None)
    return cycle is None or bool(getattr(cycle, "response_complete", True))


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be TCP for asyncio to set TCP_NODELAY on accepted connections (else ~40 ms per keep-alive call).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock
