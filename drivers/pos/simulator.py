"""The POS simulator (SPEC §7.4): the ``http`` contract over real HTTP, with fault switches for tests and demos.

Endpoints: ``POST /orders`` (also ``/`` and ``/v1/orders``), ``GET /orders/{key}`` (two-phase status),
``GET /ready``, and the control API under ``/_sim/`` (orders, requests, faults, reset).
Every switch can be set at runtime with ``POST /_sim/faults`` or, in-process, with ``SimulatorState.apply_faults``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from drivers.pos import sim_lightspeed, sim_square
from drivers.pos.http_mapping import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, verify_signature


class FaultError(ValueError):
    """A fault switch is unknown or its value has the wrong type."""


@dataclass
class Faults:
    """The simulator's fault switches; all off by default (a healthy POS)."""

    down: bool = False  # 503 {"error":"down"} on every contract endpoint
    hard_down: bool = False  # listener closed: connections are refused
    hard_down_ms: int = 0  # with hard_down: come back by itself after this long (0: stay down)
    not_ready: bool = False  # /ready says ready=false (app closed); orders still accepted
    slow_ms: int = 0  # wait this long before answering any contract request
    error_rate: float = 0.0  # fraction of order requests answered 500 (seeded random)
    rate_limit: bool = False  # 429 on every order request while on
    rate_limit_count: int = 0  # 429 on the next N order requests
    retry_after_seconds: int = 1  # Retry-After sent with 429 and 503
    auth_expired: bool = False  # 401 on every contract endpoint
    sold_out_skus: list[str] = field(default_factory=list)  # 423 {"error":"sold_out","skus":[...]}
    unknown_skus: list[str] = field(default_factory=list)  # 422 {"error":"unknown_sku","skus":[...]}
    two_phase: bool = False  # 202 pending, confirmed on GET /orders/{key} after confirm_after_ms
    confirm_after_ms: int = 1000
    never_confirm: bool = False  # orders accepted while on stay pending forever
    html_errors: bool = False  # 5xx answers come as text/html, like a broken proxy
    ready_status: int = 0  # /ready always answers this status (404, 405, 501: a POS without one); 0: off

    def update(self, changes: Mapping[str, object]) -> None:
        """Set the given switches, after checking every name and value (nothing changes on error)."""
        kinds = {f.name: str(f.type) for f in fields(self)}
        checked: dict[str, object] = {}
        for name, value in changes.items():
            kind = kinds.get(name)
            if kind is None:
                msg = f"unknown fault switch {name!r}; known: {', '.join(sorted(kinds))}"
                raise FaultError(msg)
            checked[name] = _check_switch(name, kind, value)
        status = checked.get("ready_status", 0)
        if status and not (isinstance(status, int) and 400 <= status <= 599):
            msg = f"fault switch 'ready_status' takes 0 or an HTTP error status 400-599, not {status!r}"
            raise FaultError(msg)
        for name, value in checked.items():
            setattr(self, name, value)


@dataclass
class OrderRecord:
    """An order the simulated POS accepted."""

    key: str
    pos_reference: str
    order: dict[str, Any]
    received_at: datetime
    received_monotonic: float
    two_phase: bool = False
    confirm_at: float | None = None  # monotonic; None with two_phase: never confirmed
    failure: dict[str, Any] | None = None  # two-phase: what the POS will report instead of injecting


@dataclass
class RequestRecord:
    """One request to a contract endpoint, refused or not."""

    seq: int
    method: str
    path: str
    idempotency_key: str | None
    received_at: datetime
    monotonic: float
    status: int = 0


ListenerHook = Callable[[bool], Awaitable[None]]


class SimulatorState:
    """The switches and the records of one simulator; tests may read and poke it directly."""

    def __init__(
        self,
        *,
        hmac_secret: bytes | None = None,
        faults: Faults | None = None,
        seed: int = 0,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.hmac_secret = hmac_secret
        self.faults = faults if faults is not None else Faults()
        self.seed = seed
        self.monotonic = monotonic
        self.wall = wall
        self.orders: dict[str, OrderRecord] = {}
        self.requests: list[RequestRecord] = []
        self.attempts: Counter[str] = Counter()
        self.port: int | None = None
        self.random = random.Random(seed)
        self._next_reference = 1
        self._listener_hook: ListenerHook | None = None
        self._revive: asyncio.Task[None] | None = None

    async def apply_faults(self, changes: Mapping[str, object]) -> None:
        """Set switches (partial update); opens or closes the listener when ``hard_down`` changes."""
        was_hard_down = self.faults.hard_down
        self.faults.update(changes)
        if self.faults.hard_down != was_hard_down:
            await self._hard_down_changed()

    async def reset(self) -> None:
        """Forget every order and request, switch every fault off and re-seed the random source."""
        was_hard_down = self.faults.hard_down
        self.faults = Faults()
        self.orders.clear()
        self.requests.clear()
        self.attempts.clear()
        self.random = random.Random(self.seed)
        self._next_reference = 1
        if was_hard_down:
            await self._hard_down_changed()

    def next_reference(self) -> str:
        """Return a new POS reference ``SIM-000001``, ``SIM-000002``, ..."""
        reference = f"SIM-{self._next_reference:06d}"
        self._next_reference += 1
        return reference

    def log_request(self, request: Request) -> RequestRecord:
        """Record a contract request as it arrives (and count order POSTs per key); the caller sets the status."""
        record = RequestRecord(
            seq=len(self.requests) + 1,
            method=request.method,
            path=request.url.path,
            idempotency_key=request.headers.get(IDEMPOTENCY_HEADER),
            received_at=self.wall(),
            monotonic=self.monotonic(),
        )
        self.requests.append(record)
        if record.method == "POST" and record.idempotency_key:
            self.attempts[record.idempotency_key] += 1
        return record

    def order_status(self, record: OrderRecord) -> dict[str, Any]:
        """Return what ``GET /orders/{key}`` says about an accepted order now."""
        settled = not record.two_phase or (record.confirm_at is not None and self.monotonic() >= record.confirm_at)
        if not settled:
            return {"status": "pending", "pos_reference": record.pos_reference}
        if record.failure is not None:
            return {"status": "failed", **record.failure}
        return {"status": "injected", "pos_reference": record.pos_reference}

    async def _hard_down_changed(self) -> None:
        if self._revive is not None and self._revive is not asyncio.current_task():
            self._revive.cancel()
        self._revive = None
        if self._listener_hook is not None:
            await self._listener_hook(not self.faults.hard_down)
        if self.faults.hard_down and self.faults.hard_down_ms > 0:
            self._revive = asyncio.create_task(self._revive_later(self.faults.hard_down_ms / 1000))

    async def _revive_later(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.apply_faults({"hard_down": False})


def create_app(state: SimulatorState) -> Starlette:
    """Return the simulator's ASGI app over ``state``."""
    handlers = _Handlers(state)
    contract = handlers.contract
    routes = [
        Route("/orders", contract(handlers.post_order), methods=["POST"]),
        Route("/v1/orders", contract(handlers.post_order), methods=["POST"]),
        Route("/", contract(handlers.post_order), methods=["POST"]),
        Route("/ready", contract(handlers.ready), methods=["GET"]),
        Route("/_sim/orders", handlers.sim_orders, methods=["GET"]),
        Route("/_sim/requests", handlers.sim_requests, methods=["GET"]),
        Route("/_sim/faults", handlers.sim_faults, methods=["GET", "POST"]),
        Route("/_sim/reset", handlers.sim_reset, methods=["POST"]),
        *sim_lightspeed.routes(state),
        *sim_square.routes(state),
        Route("/orders/{key}", contract(handlers.order_status), methods=["GET"]),
        Route("/v1/orders/{key}", contract(handlers.order_status), methods=["GET"]),
        Route("/{key}", contract(handlers.order_status), methods=["GET"]),
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
            state._listener_hook = server.set_listening
            if state.faults.hard_down:
                await server.set_listening(False)
            if ready is not None:
                ready.set()
        await asyncio.wait({serving, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        state._listener_hook = None
        waiter.cancel()
        if state._revive is not None:
            state._revive.cancel()
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


Handler = Callable[[Request], Awaitable[Response]]


class _Handlers:
    """The endpoints, over one ``SimulatorState``."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state

    def contract(self, handler: Handler) -> Handler:
        """Wrap a contract endpoint: log it, then apply slow/down/auth faults before the handler."""

        async def endpoint(request: Request) -> Response:
            record = self.state.log_request(request)
            try:
                # The body arrives before any delay: a slow POS has the order even if the client gives up.
                await request.body()
            except ClientDisconnect:
                record.status = 499
                return Response(status_code=499)
            response = await self._faulted(request) or await handler(request)
            record.status = response.status_code
            return response

        return endpoint

    async def post_order(self, request: Request) -> Response:
        """Take an order once per idempotency key, unless a fault switch says otherwise."""
        state, faults = self.state, self.state.faults
        key = request.headers.get(IDEMPOTENCY_HEADER)
        body = await request.body()
        if state.hmac_secret is not None and not verify_signature(
            request.headers.get(SIGNATURE_HEADER), body, state.hmac_secret, int(state.wall().timestamp())
        ):
            return self._error(401, "bad_signature", f"missing or invalid {SIGNATURE_HEADER} header")
        if not key:
            return self._error(400, "missing_idempotency_key", f"the {IDEMPOTENCY_HEADER} header is required")
        if faults.rate_limit or faults.rate_limit_count > 0:
            faults.rate_limit_count = max(0, faults.rate_limit_count - 1)
            return self._error(429, "rate_limited", "too many requests", retry_after=True)
        if faults.error_rate > 0 and state.random.random() < faults.error_rate:
            return self._error(500, "internal_error", "simulated POS failure")
        try:
            order = await request.json()
        except ValueError:
            return self._error(400, "invalid_json", "the body is not JSON")
        if not isinstance(order, dict):
            return self._error(400, "invalid_json", "the body is not a JSON object")
        existing = state.orders.get(key)
        if existing is not None:
            body_json = {"error": "duplicate", "pos_reference": existing.pos_reference}
            return JSONResponse(body_json, status_code=409)
        skus = _skus(order.get("items"))
        failure: dict[str, Any] | None = None
        sold_out = [s for s in skus if s in faults.sold_out_skus]
        unknown = [s for s in skus if s in faults.unknown_skus]
        if sold_out:
            failure = {"error": "sold_out", "skus": sold_out, "detail": f"sold out: {', '.join(sold_out)}"}
        elif unknown:
            failure = {"error": "unknown_sku", "skus": unknown, "detail": f"unknown SKU: {', '.join(unknown)}"}
        if failure is not None and not faults.two_phase:
            return JSONResponse(failure, status_code=423 if sold_out else 422)
        now = state.monotonic()
        confirm_at = None if faults.never_confirm else now + faults.confirm_after_ms / 1000
        record = OrderRecord(
            key=key,
            pos_reference=state.next_reference(),
            order=order,
            received_at=state.wall(),
            received_monotonic=now,
            two_phase=faults.two_phase,
            confirm_at=confirm_at if faults.two_phase else now,
            failure=failure,
        )
        state.orders[key] = record
        if faults.two_phase:
            return JSONResponse({"status": "pending", "pos_reference": record.pos_reference}, status_code=202)
        return JSONResponse({"pos_reference": record.pos_reference}, status_code=201)

    async def order_status(self, request: Request) -> Response:
        """Say whether an order is pending, injected or failed; 404 for a key never accepted."""
        record = self.state.orders.get(request.path_params["key"])
        if record is None:
            return self._error(404, "not_found", "no order with that idempotency key")
        return JSONResponse(self.state.order_status(record))

    async def ready(self, request: Request) -> Response:
        """Report readiness and its conditions."""
        app_open = not self.state.faults.not_ready
        conditions = {"pos_online": True, "app_open": app_open, "logged_in": True, "menu_loaded": True}
        return JSONResponse({"ready": app_open, "conditions": conditions})

    async def sim_orders(self, request: Request) -> Response:
        """List the accepted orders with how many requests each key took."""
        state = self.state
        return JSONResponse(
            [
                {
                    "key": r.key,
                    "pos_reference": r.pos_reference,
                    "order": r.order,
                    "received_at": r.received_at.isoformat(),
                    "received_monotonic": r.received_monotonic,
                    "requests": state.attempts[r.key],
                    **state.order_status(r),
                }
                for r in state.orders.values()
            ]
        )

    async def sim_requests(self, request: Request) -> Response:
        """List every contract request with its time and the status it got."""
        return JSONResponse([{**asdict(r), "received_at": r.received_at.isoformat()} for r in self.state.requests])

    async def sim_faults(self, request: Request) -> Response:
        """Show the switches, or set some of them (POST a JSON object)."""
        if request.method == "POST":
            try:
                changes = await request.json()
            except ValueError:
                return self._error(400, "invalid_json", "POST a JSON object of switches")
            if not isinstance(changes, dict):
                return self._error(400, "invalid_json", "POST a JSON object of switches")
            try:
                await self.state.apply_faults(changes)
            except FaultError as exc:
                return self._error(400, "invalid_switch", str(exc))
        return JSONResponse(asdict(self.state.faults))

    async def sim_reset(self, request: Request) -> Response:
        """Forget everything and switch every fault off."""
        await self.state.reset()
        return JSONResponse({"reset": True})

    async def _faulted(self, request: Request) -> Response | None:
        faults = self.state.faults
        if faults.slow_ms > 0:
            await asyncio.sleep(faults.slow_ms / 1000)
        if faults.ready_status and request.url.path == "/ready" and not faults.hard_down:
            return self._error(faults.ready_status, "no_readiness", "this POS has no readiness endpoint")
        if faults.down or faults.hard_down:
            if request.url.path == "/ready" and not faults.html_errors:
                conditions = {"pos_online": False, "app_open": False, "logged_in": False, "menu_loaded": False}
                headers = {"Retry-After": str(faults.retry_after_seconds)}
                return JSONResponse({"ready": False, "conditions": conditions}, 503, headers=headers)
            return self._error(503, "down", "the POS is down", retry_after=True)
        if faults.auth_expired:
            return self._error(401, "auth_expired", "the access token has expired")
        return None

    def _error(self, status: int, error: str, detail: str, *, retry_after: bool = False) -> Response:
        headers = {"Retry-After": str(self.state.faults.retry_after_seconds)} if retry_after else None
        if status >= 500 and self.state.faults.html_errors:
            title = f"{status} {HTTPStatus(status).phrase}"
            page = (
                f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
                f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
            )
            return HTMLResponse(page, status_code=status, headers=headers)
        return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def _skus(items: object) -> list[str]:
    """Return every SKU of the order's items and their modifiers, in order."""
    found: list[str] = []
    if not isinstance(items, list):
        return found
    for item in items:
        if not isinstance(item, dict):
            continue
        sku = item.get("sku")
        if isinstance(sku, str):
            found.append(sku)
        found.extend(_skus(item.get("modifiers")))
    return found


def _check_switch(name: str, kind: str, value: object) -> object:
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if kind == "float" and isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)
    if kind == "list[str]" and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    expected = {"bool": "true or false", "int": "a whole number >= 0", "float": "a number from 0 to 1"}
    msg = f"fault switch {name!r} takes {expected.get(kind, 'a list of strings')}, not {value!r}"
    raise FaultError(msg)


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
