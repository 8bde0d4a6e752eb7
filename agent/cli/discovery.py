"""``venue-agent discover``: find kitchen printers and POS terminals on the LAN (mDNS and Epson ENPC).

Here is the search (``discover``, merged one entry per host:port); ``discover_command`` runs it, lists the USB
printers plugged into this box and prints what was found as tables and ready-to-paste TOML (or JSON).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog
from zeroconf import Error as ZeroconfError
from zeroconf import InterfaceChoice, IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from agent.domain.errors import AgentError
from drivers.pos.mdns import SERVICE_TYPE as POS_SERVICE_TYPE

log = structlog.get_logger("venue_agent.discovery")

Kind = Literal["printer", "pos_terminal"]

DEFAULT_SECONDS = 5.0
RAW_PORT = 9100
ENPC_PORT = 3289
ENPC_SERVICE = "epson-enpc"
# Epson ENPC "basic information" query: 'EPSON', 'Q' (query), device type 3, function 0x0010.
ENPC_QUERY = b"EPSONQ\x03\x00\x00\x00\x10\x00\x00\x00\x00\x00"
BROADCAST_TARGETS: tuple[tuple[str, int], ...] = (("255.255.255.255", ENPC_PORT),)
PRINTER_SERVICE_TYPES = ("_pdl-datastream._tcp.local.", "_printer._tcp.local.", "_ipp._tcp.local.")
# Preferred first when the same host:port was found by several means.
SOURCE_ORDER = ("_venue-pos._tcp", "_pdl-datastream._tcp", ENPC_SERVICE, "_printer._tcp", "_ipp._tcp")
RAW_SOURCES = frozenset({"_pdl-datastream._tcp", ENPC_SERVICE})
MODEL_TXT_KEYS = ("ty", "usb_MDL", "product", "model")

ZeroconfFactory = Callable[[], AsyncZeroconf]


class DiscoveryError(AgentError):
    """Discovery could not run at all (no usable network interface, sockets refused)."""


@dataclass(frozen=True)
class Found:
    """One printer or POS terminal that answered; ``service`` names how (several joined by ``", "``)."""

    kind: Kind
    name: str
    host: str
    port: int
    service: str
    model: str | None = None
    txt: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def sources(self) -> tuple[str, ...]:
        """Return every way this entry was found, preferred first."""
        return tuple(s.strip() for s in self.service.split(","))


async def discover(
    seconds: float,
    *,
    epson_targets: Sequence[tuple[str, int]] = BROADCAST_TARGETS,
    zeroconf_factory: ZeroconfFactory | None = None,
) -> list[Found]:
    """Listen ``seconds`` for mDNS printers/terminals and Epson ENPC replies; sorted, one entry per host:port.

    Raises ``DiscoveryError`` when zeroconf or the ENPC socket cannot be opened; every socket is closed on
    return, on error and on cancellation.
    """
    if seconds <= 0:
        msg = f"seconds must be positive, not {seconds}"
        raise ValueError(msg)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    found: list[Found] = []
    resolving: dict[str, asyncio.Task[None]] = {}
    aiozc: AsyncZeroconf | None = None
    browser: AsyncServiceBrowser | None = None
    transport: asyncio.DatagramTransport | None = None
    resender: asyncio.Task[None] | None = None

    def on_change(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change not in (ServiceStateChange.Added, ServiceStateChange.Updated) or name in resolving:
            return
        if loop.time() >= deadline:
            return
        resolving[name] = loop.create_task(
            _resolve(zeroconf, service_type, name, deadline, found), name=f"venue-agent discover resolve {name}"
        )

    try:
        try:
            aiozc = zeroconf_factory() if zeroconf_factory is not None else AsyncZeroconf(InterfaceChoice.All)
            browser = AsyncServiceBrowser(
                aiozc.zeroconf, [*PRINTER_SERVICE_TYPES, POS_SERVICE_TYPE], handlers=[on_change]
            )
            if epson_targets:
                # Any address, ephemeral port: replies to a broadcast may arrive on any interface.
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _EnpcProtocol(found),
                    local_addr=("0.0.0.0", 0),  # noqa: S104
                    allow_broadcast=True,
                )
        except (OSError, ZeroconfError) as exc:
            raise DiscoveryError(f"cannot listen on the network: {exc}") from exc
        if transport is not None:
            resender = loop.create_task(
                _query_epson(transport, epson_targets, seconds), name="venue-agent discover epson-query"
            )
        await asyncio.sleep(max(0.0, deadline - loop.time()))
    finally:
        await _close(browser, aiozc, transport, resolving, resender)
    return merge(found)


async def _query_epson(
    transport: asyncio.DatagramTransport, targets: Sequence[tuple[str, int]], seconds: float
) -> None:
    """Send the ENPC query to every target, and once more halfway through (UDP may drop either)."""
    for attempt in range(2):
        if attempt:
            await asyncio.sleep(seconds / 2)
        for target in targets:
            try:
                transport.sendto(ENPC_QUERY, target)
            except OSError as exc:
                log.warning("discovery_enpc_send_failed", target=f"{target[0]}:{target[1]}", error=str(exc))


async def _resolve(zeroconf: Zeroconf, service_type: str, name: str, deadline: float, found: list[Found]) -> None:
    """Ask for the service's address, port and TXT until ``deadline``; append it to ``found`` if complete."""
    timeout_ms = (deadline - asyncio.get_running_loop().time()) * 1000
    if timeout_ms <= 0:
        return
    info = AsyncServiceInfo(service_type, name)
    try:
        complete = await info.async_request(zeroconf, timeout_ms)
    except (OSError, ValueError, ZeroconfError) as exc:
        log.warning("discovery_resolve_failed", service=name, error=str(exc))
        return
    addresses = info.parsed_addresses(IPVersion.V4Only) or info.parsed_scoped_addresses(IPVersion.V6Only)
    if not complete or not addresses or not info.port:
        log.info("discovery_unresolved", service=name)
        return
    service = service_type.removesuffix(".local.")
    txt = {k: v or "" for k, v in info.decoded_properties.items()}
    found.append(
        Found(
            kind="pos_terminal" if service_type == POS_SERVICE_TYPE else "printer",
            name=name.removesuffix(f".{service_type}"),
            host=addresses[0],
            port=info.port,
            service=service,
            model=_model_from_txt(txt),
            txt=txt,
        )
    )


async def _close(
    browser: AsyncServiceBrowser | None,
    aiozc: AsyncZeroconf | None,
    transport: asyncio.DatagramTransport | None,
    resolving: dict[str, asyncio.Task[None]],
    resender: asyncio.Task[None] | None,
) -> None:
    """Stop the browser (no new resolve tasks after that), every task, the ENPC socket and zeroconf."""
    try:
        if browser is not None:
            await browser.async_cancel()
    finally:
        pending = [*resolving.values(), *([resender] if resender is not None else [])]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if transport is not None:
            transport.close()
        if aiozc is not None:
            try:
                await aiozc.async_close()
            except (OSError, ZeroconfError, RuntimeError) as exc:
                log.warning("discovery_close_failed", error=str(exc))


class _EnpcProtocol(asyncio.DatagramProtocol):
    """Collect replies to the ENPC query: anything starting with ``EPSON`` that is not the query itself."""

    def __init__(self, found: list[Found]) -> None:
        self._found = found

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if not data.startswith(b"EPSON") or data == ENPC_QUERY:
            return
        model = parse_enpc_model(data)
        self._found.append(
            Found(
                kind="printer",
                name=model or "Epson printer",
                host=str(addr[0]),
                port=RAW_PORT,
                service=ENPC_SERVICE,
                model=model,
            )
        )

    def error_received(self, exc: Exception) -> None:
        # An ICMP "port unreachable" from a host without ENPC lands here; other targets still answer.
        log.info("discovery_enpc_error", error=str(exc))


def parse_enpc_model(reply: bytes) -> str | None:
    """Return the first printable-ASCII run of an ENPC reply that contains ``TM-``, else None."""
    for run in re.findall(rb"[\x20-\x7e]{3,}", reply):
        if b"TM-" in run:
            return str(run.decode("ascii").strip())
    return None


def _model_from_txt(txt: dict[str, str]) -> str | None:
    for key in MODEL_TXT_KEYS:
        value = txt.get(key, "").strip().strip("()").strip()
        if value:
            return value
    return None


def merge(found: Iterable[Found]) -> list[Found]:
    """Return one entry per host:port (preferred source's name, longest model, all sources), sorted."""
    groups: dict[tuple[str, int], list[Found]] = {}
    for entry in found:
        groups.setdefault((entry.host, entry.port), []).append(entry)
    merged = []
    for entries in groups.values():
        entries.sort(key=lambda e: source_rank(e.sources[0]))
        best = entries[0]
        sources = sorted({s for e in entries for s in e.sources}, key=source_rank)
        models = [e.model for e in entries if e.model]
        txt: dict[str, str] = {}
        for entry in reversed(entries):
            txt.update(entry.txt)
        merged.append(
            dataclasses.replace(
                best,
                kind="pos_terminal" if any(e.kind == "pos_terminal" for e in entries) else "printer",
                service=", ".join(sources),
                model=max(models, key=len) if models else None,
                txt=txt,
            )
        )
    return sorted(merged, key=lambda e: (e.kind != "printer", _host_key(e.host), e.port, e.name))


def source_rank(source: str) -> int:
    """Return how much ``source`` is preferred when several found the same host:port (0 first)."""
    return SOURCE_ORDER.index(source) if source in SOURCE_ORDER else len(SOURCE_ORDER)


def _host_key(host: str) -> tuple[int, int, str]:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return (9, 0, host)
    return (address.version, int(address), host)
