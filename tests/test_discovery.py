"""``discover`` and the ``_venue-agent._tcp`` advertiser against real zeroconf on loopback and real UDP responders."""

from __future__ import annotations

import asyncio
import io
import json
import random
import socket
import tomllib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import cast

import pytest
import structlog
from zeroconf import DNSQuestionType, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from agent import __version__
from agent.cli.discover_command import render_table, render_toml, run_discover
from agent.cli.discovery import ENPC_QUERY, Found, discover, parse_enpc_model
from agent.domain.config import HttpPosSettings, PrinterSettings
from agent.service.advertise import SERVICE_TYPE as AGENT_SERVICE_TYPE
from agent.service.advertise import Advertiser

PDL = "_pdl-datastream._tcp.local."
POS = "_venue-pos._tcp.local."
# What a TM-T88V (UB-E04) sent back to the ENPC query: header, binary fields, then the model in ASCII.
EPSON_REPLY = (
    b"EPSONq\x03\x00\x00\x00\x10\x00\x00\x00\x00\x50"
    + b"\x00\x01\x02\x30\x00\x00\x00\x00"
    + b"TM-T88V\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    + b"\x00\x26\xab\x11\x22\x33"
)


def loopback() -> AsyncZeroconf:
    """Return zeroconf answering and asking on 127.0.0.1 only."""
    return AsyncZeroconf(interfaces=["127.0.0.1"])


def unique(prefix: str) -> str:
    """Return a name no other test run announces."""
    return f"{prefix} {uuid.uuid4().hex[:8]}"


def random_loopback() -> str:
    """Return a loopback address other test runs on this machine are unlikely to use at the same time."""
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"


@pytest.fixture
async def announcer() -> AsyncIterator[AsyncZeroconf]:
    """A zeroconf responder on loopback, standing in for printers and terminals announcing themselves."""
    zeroconf = loopback()
    try:
        yield zeroconf
    finally:
        await zeroconf.async_close()


async def announce(
    announcer: AsyncZeroconf, type_: str, name: str, host: str, port: int, properties: dict[str, str] | None = None
) -> None:
    """Announce ``name`` of ``type_`` at ``host``:``port``."""
    info = AsyncServiceInfo(
        type_,
        f"{name}.{type_}",
        parsed_addresses=[host],
        port=port,
        properties=properties or {},
        server=f"{uuid.uuid4().hex[:12]}.local.",
    )
    # Cooperating responders skip the uniqueness probe (about a second) that a test does not need.
    await announcer.async_register_service(info, cooperating_responders=True)


class Responder(asyncio.DatagramProtocol):
    """A UDP responder on port 3289's behalf: answers ``reply`` to the exact ENPC query and records what came in."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.received: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append(data)
        if data == ENPC_QUERY and self.transport is not None:
            self.transport.sendto(self.reply, addr)


@asynccontextmanager
async def responder(host: str, reply: bytes) -> AsyncIterator[tuple[Responder, tuple[str, int]]]:
    """Serve a ``Responder`` on ``host`` (ephemeral port); yield it and its address."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(lambda: Responder(reply), local_addr=(host, 0))
    try:
        yield protocol, transport.get_extra_info("sockname")[:2]
    finally:
        transport.close()


def open_fds() -> int:
    """Return how many file descriptors this process has open."""
    return len(list(Path("/proc/self/fd").iterdir()))


def free_udp_port(host: str) -> int:
    """Return a UDP port on ``host`` nobody listens on (the socket is closed again)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


async def test_discover_finds_announced_printer_and_pos_terminal(announcer: AsyncZeroconf) -> None:
    """Printers and terminals announced by mDNS are found with their host, port, TXT and kind."""
    host = random_loopback()
    printer, till = unique("Kitchen Printer"), unique("Front Till")
    await announce(announcer, PDL, printer, host, 9100, {"ty": "EPSON TM-T20II", "note": "pass"})
    await announce(announcer, POS, till, host, 8080, {"path": "/v1/orders"})

    found = await discover(1.5, epson_targets=(), zeroconf_factory=loopback)

    mine = {entry.name: entry for entry in found if entry.host == host}
    assert set(mine) == {printer, till}
    assert mine[printer] == Found(
        kind="printer",
        name=printer,
        host=host,
        port=9100,
        service="_pdl-datastream._tcp",
        model="EPSON TM-T20II",
        txt={"ty": "EPSON TM-T20II", "note": "pass"},
    )
    assert (mine[till].kind, mine[till].port, mine[till].service) == ("pos_terminal", 8080, "_venue-pos._tcp")
    assert mine[till].txt == {"path": "/v1/orders"}
    assert [e.kind for e in found] == sorted((e.kind for e in found), key=lambda k: k != "printer")


async def test_epson_reply_is_found_merged_with_mdns_and_garbage_is_ignored(announcer: AsyncZeroconf) -> None:
    """An ENPC reply becomes a printer on 9100 with its model; the same host:port from mDNS is one entry."""
    epson_host, garbage_host, silent_host = random_loopback(), random_loopback(), random_loopback()
    name = unique("Pass Printer")
    await announce(announcer, PDL, name, epson_host, 9100)
    async with (
        responder(epson_host, EPSON_REPLY) as (epson, epson_address),
        responder(garbage_host, b"HELLO TM-T88V this is not ENPC") as (garbage, garbage_address),
    ):
        targets = [epson_address, garbage_address, (silent_host, free_udp_port(silent_host))]
        found = await discover(1.5, epson_targets=targets, zeroconf_factory=loopback)

    assert set(epson.received) == {ENPC_QUERY}
    assert set(garbage.received) == {ENPC_QUERY}
    assert not [e for e in found if e.host in (garbage_host, silent_host)]
    assert [e for e in found if e.host == epson_host] == [
        Found(
            kind="printer",
            name=name,
            host=epson_host,
            port=9100,
            service="_pdl-datastream._tcp, epson-enpc",
            model="TM-T88V",
            txt={},
        )
    ]


async def test_epson_only_printer_and_its_toml() -> None:
    """A printer that only answers ENPC is named after its model and gets the matching profile and columns."""
    host = random_loopback()
    async with responder(host, EPSON_REPLY) as (_, address):
        found = await discover(0.6, epson_targets=[address], zeroconf_factory=loopback)
    entries = [e for e in found if e.host == host]
    assert entries == [Found("printer", "TM-T88V", host, 9100, "epson-enpc", "TM-T88V", {})]
    printers = tomllib.loads(render_toml(entries))["printers"]
    assert printers == [
        {
            "name": "tm-t88v",
            "connection": "network",
            "host": host,
            "port": 9100,
            "profile": "TM-T88V",
            "columns": 42,
            "roles": ["fallback"],
        }
    ]
    PrinterSettings.model_validate(printers[0])


async def test_cancelled_discovery_closes_zeroconf_and_sockets() -> None:
    """Cancelling ``discover`` mid-window closes zeroconf and the ENPC socket (no file descriptor left open)."""
    opened: list[AsyncZeroconf] = []

    def factory() -> AsyncZeroconf:
        opened.append(loopback())
        return opened[-1]

    before = open_fds()
    task = asyncio.create_task(discover(30, epson_targets=[("127.0.0.1", 9)], zeroconf_factory=factory))
    await asyncio.sleep(0.3)
    assert open_fds() > before
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert opened[0].zeroconf.done
    assert open_fds() == before


def test_parse_enpc_model() -> None:
    """The model is the printable run holding ``TM-``; replies without one have no model."""
    assert parse_enpc_model(EPSON_REPLY) == "TM-T88V"
    assert parse_enpc_model(b"EPSONq\x03\x00\x00\x00\x10\x00\x00\x00\x00\x00\x01\x02") is None


def test_render_toml_parses_and_every_printer_validates() -> None:
    """The TOML parses, printers get unique safe names and raw port 9100, and the POS block works uncommented."""
    found = [
        Found("printer", "Kitchen Printer", "192.0.2.10", 9100, "_pdl-datastream._tcp", "EPSON TM-T88V"),
        Found("printer", "Kitchen Printer", "192.0.2.11", 9100, "_pdl-datastream._tcp", None),
        Found("printer", "Bar\nroles = []", "192.0.2.12", 631, "_ipp._tcp", "EPSON TM-m30\nprofile = 'x'"),
        Found("printer", "Office", "192.0.2.13", 515, "_printer._tcp", None),
        Found("printer", "Office", "192.0.2.13", 631, "_ipp._tcp", None),
        Found("printer", "TM-T20II", "192.0.2.14", 9100, "epson-enpc", "TM-T20II"),
        Found("pos_terminal", 'Front "Till"', "192.0.2.20", 8080, "_venue-pos._tcp", None, {"path": "/v1/orders"}),
        Found("pos_terminal", "Bar\x7fTill", "192.0.2.21", 8080, "_venue-pos._tcp", None, {}),
    ]
    text = render_toml(found)
    printers = tomllib.loads(text)["printers"]

    assert [(p["name"], p["host"], p["port"], p["profile"], p["columns"]) for p in printers] == [
        ("kitchen-printer", "192.0.2.10", 9100, "TM-T88V", 42),
        ("kitchen-printer-2", "192.0.2.11", 9100, "default", 48),
        ("bar-roles", "192.0.2.12", 9100, "default", 48),
        ("office", "192.0.2.13", 9100, "default", 48),
        ("tm-t20ii", "192.0.2.14", 9100, "TM-T20II", 48),
    ]
    for printer in printers:
        settings = PrinterSettings.model_validate(printer)
        assert settings.connection == "network"
        assert settings.roles == ["fallback"]
    assert "IPP/LPR are not used, the agent prints raw to 9100" in text
    assert "no python-escpos profile for EPSON TM-m30?profile = 'x':" in text
    urls = []
    for block in text.split("# [pos.http]\n")[1:]:
        uncommented = tomllib.loads("[pos.http]\n" + block.splitlines()[0].removeprefix("# "))
        urls.append(HttpPosSettings.model_validate(uncommented["pos"]["http"]).url)
    # A name with a control character cannot be looked up reliably: only its address is offered.
    assert urls == ['mdns:Front "Till"', "http://192.0.2.21:8080/orders"]
    assert '(or, if its address never changes: url = "http://192.0.2.20:8080/v1/orders")' in text


def test_render_toml_without_printers() -> None:
    """Nothing found gives no TOML; a lone terminal gives only comments."""
    assert render_toml([]) == ""
    only_pos = render_toml([Found("pos_terminal", "till", "192.0.2.20", 8080, "_venue-pos._tcp")])
    assert tomllib.loads(only_pos) == {}
    assert '# url = "mdns:till"' in only_pos


def test_render_table() -> None:
    """A table with one aligned row per entry, or what to check when nothing answered."""
    empty = render_table([], seconds=3)
    assert empty.startswith("No printers or POS terminals answered within 3 s.")
    assert "VLAN" in empty
    assert "multicast" in empty
    assert "venue-agent print-test" in empty
    table = render_table(
        [
            Found("printer", "Kitchen", "192.0.2.10", 9100, "_pdl-datastream._tcp, epson-enpc", "TM-T88V"),
            Found("pos_terminal", "Front till", "192.0.2.20", 8080, "_venue-pos._tcp"),
        ]
    ).splitlines()
    assert table[0].split() == ["KIND", "NAME", "HOST", "PORT", "FOUND", "BY", "MODEL"]
    assert table[1].split("  ")[0] == "printer"
    assert table[2].startswith("pos terminal")
    assert table[2].rstrip().endswith("-")
    assert table[0].index("HOST") == table[1].index("192.0.2.10") == table[2].index("192.0.2.20")


async def test_run_discover_prints_table_toml_and_json() -> None:
    """The command prints the table and TOML, or a JSON list with ``--json``; both exit 0."""
    host = random_loopback()
    async with responder(host, EPSON_REPLY) as (_, address):
        out = io.StringIO()
        code = await run_discover(0.5, as_json=False, out=out, epson_targets=[address], zeroconf_factory=loopback)
        assert code == 0
        assert "KIND" in out.getvalue()
        assert f'host = "{host}"' in out.getvalue()
        out = io.StringIO()
        code = await run_discover(0.5, as_json=True, out=out, epson_targets=[address], zeroconf_factory=loopback)
        assert code == 0
        entries = [e for e in json.loads(out.getvalue()) if e["host"] == host]
        assert entries == [
            {
                "kind": "printer",
                "name": "TM-T88V",
                "host": host,
                "port": 9100,
                "service": "epson-enpc",
                "model": "TM-T88V",
                "txt": {},
            }
        ]


async def test_run_discover_exit_codes_for_nothing_found_and_failure() -> None:
    """Nothing answering exits 0 and says so; a network that cannot be opened exits 1 with a message."""
    silent = random_loopback()
    out, err = io.StringIO(), io.StringIO()
    targets = [(silent, free_udp_port(silent))]
    code = await run_discover(0.3, as_json=False, out=out, err=err, epson_targets=targets, zeroconf_factory=loopback)
    assert code == 0
    # Other test runs on this machine may be announcing on loopback right now; alone, nothing answers.
    assert out.getvalue().startswith(("No printers or POS terminals answered within 0.3 s.", "KIND"))

    def broken() -> AsyncZeroconf:
        raise OSError(19, "No such device")

    out, err = io.StringIO(), io.StringIO()
    assert await run_discover(0.3, as_json=True, out=out, err=err, zeroconf_factory=broken) == 1
    assert out.getvalue() == ""
    assert "discovery failed" in err.getvalue()
    assert "No such device" in err.getvalue()


async def resolve_agent(name: str, timeout_ms: float) -> AsyncServiceInfo | None:
    """Ask a fresh, independent zeroconf on loopback for ``name``; None when nobody answers."""
    async with loopback() as zeroconf:
        info = AsyncServiceInfo(AGENT_SERVICE_TYPE, name)
        # QM: a multicast answer reaches every zeroconf on this host; a unicast one may land on another's socket.
        return info if await info.async_request(zeroconf.zeroconf, timeout_ms, DNSQuestionType.QM) else None


async def test_advertiser_announces_and_withdraws() -> None:
    """An independent browser sees the agent with its port and TXT while advertised; after ``stop`` it is gone."""
    venue = f"test-{uuid.uuid4().hex[:8]}"
    name = f"venue-agent-{venue}.{AGENT_SERVICE_TYPE}"
    added = asyncio.Event()

    def on_change(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if name == f"venue-agent-{venue}.{AGENT_SERVICE_TYPE}" and state_change is ServiceStateChange.Added:
            added.set()

    advertiser = Advertiser(venue_id=venue, host="127.0.0.1", port=8787)
    async with loopback() as observer, AsyncServiceBrowser(observer.zeroconf, AGENT_SERVICE_TYPE, [on_change]):
        await advertiser.start()
        try:
            await asyncio.wait_for(added.wait(), timeout=5)
            assert await advertiser.wait_registered()
            info = AsyncServiceInfo(AGENT_SERVICE_TYPE, name)
            assert await info.async_request(observer.zeroconf, 3000)
        finally:
            await advertiser.stop()
    await advertiser.stop()
    assert info.port == 8787
    assert info.parsed_addresses() == ["127.0.0.1"]
    assert info.decoded_properties == {"venue": venue, "version": __version__, "api": "/v1"}
    assert await resolve_agent(name, 600) is None


async def test_advertiser_failures_are_logged_not_raised() -> None:
    """A zeroconf that cannot start is logged as mdns_advertise_failed; start and stop (twice) do not raise."""

    def broken() -> AsyncZeroconf:
        raise OSError(99, "Cannot assign requested address")

    with structlog.testing.capture_logs() as logs:
        advertiser = Advertiser(venue_id="harbour-kitchen", host="192.0.2.1", port=8787, zeroconf_factory=broken)
        await advertiser.start()
        assert not await advertiser.wait_registered()
        await advertiser.stop()
        await advertiser.stop()
    failures = [entry for entry in logs if entry["event"] == "mdns_advertise_failed"]
    assert len(failures) == 1
    assert "Cannot assign requested address" in failures[0]["error"]
    assert failures[0]["log_level"] == "warning"


async def test_advertiser_name_held_by_another_agent_is_logged() -> None:
    """When another agent already announces the venue's name, the second one logs the conflict and runs on."""
    venue = f"test-{uuid.uuid4().hex[:8]}"
    name = f"venue-agent-{venue}.{AGENT_SERVICE_TYPE}"
    first = Advertiser(venue_id=venue, host="127.0.0.1", port=8787)
    seen = loopback()
    await first.start()
    try:
        assert await first.wait_registered()
        # On one host the probe's unicast answer may land on any socket bound to 5353, so the second agent's
        # zeroconf is one that has heard the first announce itself (as it would on a LAN).
        assert await AsyncServiceInfo(AGENT_SERVICE_TYPE, name).async_request(seen.zeroconf, 3000)
        second = Advertiser(venue_id=venue, host="127.0.0.1", port=8788, zeroconf_factory=lambda: seen)
        with structlog.testing.capture_logs() as logs:
            await second.start()
            assert not await second.wait_registered()
            await second.stop()
    finally:
        await first.stop()
        await seen.async_close()
    failures = [e for e in logs if e["event"] == "mdns_advertise_failed"]
    assert len(failures) == 1
    assert "already announced" in failures[0]["error"]
