"""The console's MQTT edge: one subscription to every venue's reports, folded into a ``Fleet``; reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiomqtt

from agent.fleet.model import KINDS, Fleet

REDRAW_SECONDS = 2.0
# An alert, an offline venue or a storefront pause is drawn at once, but never more often than this.
URGENT_REDRAW_SECONDS = 0.25
CONNECT_TIMEOUT_SECONDS = 10.0
RECONNECT_INITIAL_SECONDS = 1.0
RECONNECT_MAX_SECONDS = 30.0
URGENT_KINDS = frozenset({"alerts", "availability", "status"})


@dataclass(frozen=True)
class Connection:
    """Where and how the console connects."""

    host: str
    port: int
    prefix: str = "venues"
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


def split_broker(value: str, default_port: int) -> tuple[str, int]:
    """Split ``HOST[:PORT]`` (IPv6 as ``[addr]:port``); raise ValueError on a bad port."""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
    else:
        host, port_text = value, ""
    port = int(port_text) if port_text else default_port
    if not host or not 1 <= port <= 65535:
        msg = f"not a broker address: {value!r}"
        raise ValueError(msg)
    return host, port


def tls_context(conn: Connection) -> ssl.SSLContext | None:
    """Return the TLS context for ``conn`` (None without TLS); raise OSError or ssl.SSLError on unusable files."""
    if not conn.tls:
        return None
    try:
        context = ssl.create_default_context(cafile=str(conn.ca_file) if conn.ca_file else None)
    except OSError as exc:  # ssl.SSLError included
        raise OSError(f"cannot use CA file {conn.ca_file}: {reason(exc)}") from None
    if conn.cert_file is not None:
        try:
            context.load_cert_chain(conn.cert_file, conn.key_file)
        except OSError as exc:
            key = f" with key {conn.key_file}" if conn.key_file else ""
            raise OSError(f"cannot use client certificate {conn.cert_file}{key}: {reason(exc)}") from None
    return context


def reason(exc: BaseException) -> str:
    """One line saying why a connection failed; aiomqtt keeps the underlying error as the cause."""
    cause = exc.__cause__ or exc
    if isinstance(cause, TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT_SECONDS:g} s"
    return " ".join(str(cause).split()) or type(cause).__name__


async def watch_live(
    conn: Connection,
    fleet: Fleet,
    *,
    on_tick: Callable[[Fleet], None] | None = None,
    notice: Callable[[str], None],
    initial_delay: float = RECONNECT_INITIAL_SECONDS,
    max_delay: float = RECONNECT_MAX_SECONDS,
) -> None:
    """Watch until cancelled; the first connect must succeed (else raise), later losses are retried with backoff.

    Each loss, failed retry and reconnect is one ``notice`` line; ``fleet`` is kept (retained messages refill it).
    """
    delay = initial_delay
    connected = False
    while True:
        session = asyncio.Event()
        back = f"reconnected to {conn.host}:{conn.port}" if connected else None

        def subscribed(session: asyncio.Event = session, back: str | None = back) -> None:
            session.set()
            if back is not None:
                notice(back)

        try:
            await watch(conn, fleet, seconds=None, on_tick=on_tick, on_connected=subscribed)
            why = "the broker ended the session"
        except (aiomqtt.MqttError, TimeoutError, OSError) as exc:
            if not connected and not session.is_set():
                raise
            why = reason(exc)
        if session.is_set():
            connected, delay = True, initial_delay
            notice(f"broker lost: {why}; reconnecting in {delay:g} s")
        else:
            notice(f"reconnect failed: {why}; retrying in {delay:g} s")
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay)


async def watch(
    conn: Connection,
    fleet: Fleet,
    *,
    seconds: float | None,
    on_tick: Callable[[Fleet], None] | None = None,
    on_connected: Callable[[], None] | None = None,
) -> None:
    """Fold messages into ``fleet`` for ``seconds`` (or until the connection ends), calling ``on_tick`` as it changes.

    ``on_tick`` runs every REDRAW_SECONDS, and within URGENT_REDRAW_SECONDS of an alert, a status or an
    availability message. Raise MqttError (or TimeoutError, OSError) when the connection fails or drops;
    ``on_connected`` runs on SUBACK.
    """
    client = aiomqtt.Client(
        conn.host,
        conn.port,
        username=conn.username,
        password=conn.password,
        identifier=f"venue-agent-console-{uuid.uuid4().hex[:8]}",
        tls_context=tls_context(conn),
        timeout=CONNECT_TIMEOUT_SECONDS,
    )
    urgent = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        # aiomqtt 2.x waits for CONNACK without a limit: a broker that accepts TCP but stays silent must not hang us.
        await asyncio.wait_for(stack.enter_async_context(client), CONNECT_TIMEOUT_SECONDS)
        # QoS 0: a console's session is not persistent, so QoS 1 would save nothing on a drop, and it would put the
        # burst of retained messages on subscribe (3 per venue) under the broker's in-flight and queue limits
        # (Mosquitto: 20 and max_queued_messages 1000), which silently drop what is over them past ~330 venues.
        await client.subscribe([(f"{conn.prefix}/+/{kind}", 0) for kind in KINDS])
        fleet.connected = True
        if on_connected is not None:
            on_connected()

        async def fold() -> None:
            async for message in client.messages:
                payload = message.payload
                if isinstance(payload, bytes | bytearray | str):
                    kind = fleet.apply(message.topic.value, payload, now=time.time())
                    if kind in URGENT_KINDS and not message.retain:
                        urgent.set()

        reader = asyncio.create_task(fold(), name="venue-agent console fold")
        try:
            if seconds is not None:
                done, _ = await asyncio.wait({reader}, timeout=seconds)
                if done:
                    reader.result()  # the connection dropped: surface its error
                return
            await _ticks(reader, urgent, fleet, on_tick)
        finally:
            fleet.connected = False
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


async def _ticks(
    reader: asyncio.Task[None], urgent: asyncio.Event, fleet: Fleet, on_tick: Callable[[Fleet], None] | None
) -> None:
    """Call ``on_tick`` every REDRAW_SECONDS and soon after ``urgent`` is set, until ``reader`` ends."""
    loop = asyncio.get_running_loop()
    while True:
        drawn = loop.time()
        if on_tick is not None:
            on_tick(fleet)
        urgent.clear()
        waiter = asyncio.create_task(urgent.wait(), name="venue-agent console urgent")
        try:
            done, _ = await asyncio.wait({reader, waiter}, timeout=REDRAW_SECONDS, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if reader in done:
            reader.result()
            return
        rest = URGENT_REDRAW_SECONDS - (loop.time() - drawn)
        if rest > 0:
            await asyncio.sleep(rest)
