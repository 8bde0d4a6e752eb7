"""``venue-agent discover``: find kitchen printers and POS terminals on the LAN (mDNS and Epson ENPC, SPEC §10).

It also lists the USB printers plugged into this box (kernel usblp driver) by their stable
``/dev/venue-printer/`` names (drivers/printers/usblp.py), and writes TOML that uses those names.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import importlib.util
import ipaddress
import json
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import structlog
from zeroconf import Error as ZeroconfError
from zeroconf import InterfaceChoice, IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from agent.cli.tomlout import dumps
from agent.domain.errors import AgentError
from drivers.pos.mdns import DEFAULT_PATH as DEFAULT_POS_PATH
from drivers.pos.mdns import MDNS_SCHEME
from drivers.pos.mdns import SERVICE_TYPE as POS_SERVICE_TYPE
from drivers.printers.usblp import RULES_FILE, UsbPrinter, list_usb_printers

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
DEFAULT_COLUMNS = 48
ALLOWED_COLUMNS = frozenset({32, 42, 48})
# python-escpos 3.1 profiles, used only when its capabilities.json cannot be read.
KNOWN_PROFILES: dict[str, int] = {
    "TM-L90": 48,
    "TM-P80": 42,
    "TM-P80-42col": 42,
    "TM-T20II": 48,
    "TM-T20II-42col": 42,
    "TM-T88II": 42,
    "TM-T88III": 42,
    "TM-T88IV": 42,
    "TM-T88IV-SA": 42,
    "TM-T88V": 42,
    "TM-U220": 42,
    "TM-U220B": 42,
    "TSP600": 42,
    "TUP500": 42,
    "SP2000": 42,
    "CT-S651": 48,
}

ZeroconfFactory = Callable[[], AsyncZeroconf]
UsbLister = Callable[[], list[UsbPrinter]]


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
        entries.sort(key=lambda e: _source_rank(e.sources[0]))
        best = entries[0]
        sources = sorted({s for e in entries for s in e.sources}, key=_source_rank)
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


def _source_rank(source: str) -> int:
    return SOURCE_ORDER.index(source) if source in SOURCE_ORDER else len(SOURCE_ORDER)


def _host_key(host: str) -> tuple[int, int, str]:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return (9, 0, host)
    return (address.version, int(address), host)


def render_table(found: Sequence[Found], *, seconds: float = DEFAULT_SECONDS) -> str:
    """Return a fixed-width table of ``found``, or what to check when nothing answered within ``seconds``."""
    if not found:
        return "\n".join(
            (
                f"No printers or POS terminals answered within {seconds:g} s. Check that:",
                "  - this machine is on the same network (and VLAN) as the printers and terminals;",
                "  - the network lets multicast (mDNS, UDP 5353) and broadcast (UDP 3289) through;",
                "  - the printer is switched on and its network interface is enabled (self-test page shows its IP);",
                "  - many Epson TM network interfaces do not announce themselves by mDNS at all: try",
                "    'venue-agent print-test' with the printer's IP address from its self-test page.",
            )
        )
    header = ("KIND", "NAME", "HOST", "PORT", "FOUND BY", "MODEL")
    rows = [
        (e.kind.replace("_", " "), _printable(e.name), e.host, str(e.port), e.service, _printable(e.model or "-"))
        for e in found
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    head = "  ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True)).rstrip()
    return "\n".join([head, *lines])


def render_usb_table(printers: Sequence[UsbPrinter]) -> str:
    """Return the USB printers as a table, with what to do about one that has no stable name."""
    if not printers:
        return "No USB printers (usblp) are plugged into this box."
    header = ("USB PRINTER (stable name)", "NODE NOW", "VENDOR:PRODUCT", "SERIAL", "MODEL")
    rows = [(p.path or "- (no stable name)", p.node, p.label, p.serial or "-", p.model or "-") for p in printers]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    head = "  ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True)).rstrip()
    out = [head, *lines]
    if any(p.path is None for p in printers):
        out += [
            f"A printer without a stable name: the udev rules ({RULES_FILE}) are missing or were not applied yet.",
            "  sudo udevadm control --reload-rules && sudo udevadm trigger --action=add --subsystem-match=usbmisc",
            "  (its /dev/usb/lpN number changes when it is re-plugged: do not put that in agent.toml)",
        ]
    return "\n".join(out)


def render_toml(found: Sequence[Found], usb: Sequence[UsbPrinter] = ()) -> str:
    """Return ready-to-paste TOML: one ``[[printers]]`` per printer host and per named USB printer, POS as comments."""
    blocks: list[str] = []
    names: set[str] = set()
    for entry in _one_per_printer_host(found):
        blocks.append(_printer_block(entry, names))
    for printer in usb:
        if printer.path is not None:
            blocks.append(_usb_block(printer, names))
    for entry in found:
        if entry.kind == "pos_terminal":
            blocks.append(_pos_block(entry))
    if not blocks:
        return ""
    intro = "# Found by 'venue-agent discover'. Check each printer's name, profile, columns and roles before use."
    return "\n\n".join([intro, *blocks]) + "\n"


def _one_per_printer_host(found: Sequence[Found]) -> list[Found]:
    """Return one printer per host, preferring the entry found on the raw port (the agent always prints raw)."""
    chosen: dict[str, Found] = {}
    for entry in found:
        if entry.kind != "printer":
            continue
        current = chosen.get(entry.host)
        if current is None or _printer_rank(entry) < _printer_rank(current):
            chosen[entry.host] = entry
    return list(chosen.values())


def _printer_rank(entry: Found) -> tuple[int, int]:
    return (0 if entry.port == RAW_PORT else 1, _source_rank(entry.sources[0]))


def _printer_block(entry: Found, names: set[str]) -> str:
    name = _unique(_slug(entry.name), names)
    profile, columns = guess_profile(entry.model)
    profile_comment = columns_comment = ""
    if profile == "default":
        model = entry.model or "an unknown model"
        profile_comment = f"no python-escpos profile for {model}: set the closest one (e.g. TM-T88V, TM-T20II)"
    else:
        columns_comment = f"font A width of the {profile} profile"
    values: list[tuple[str, Any, str]] = [
        ("name", name, ""),
        ("connection", "network", ""),
        ("host", entry.host, ""),
        ("port", RAW_PORT, _port_comment(entry)),
        ("profile", profile, profile_comment),
        ("columns", columns, columns_comment),
        ("roles", ["fallback"], ""),
    ]
    lines = [f"# {_printable(entry.name)} at {entry.host} (found by {entry.service})", "[[printers]]"]
    for key, value, comment in values:
        line = dumps({key: value}).strip()
        lines.append(f"{line}  # {_printable(comment)}" if comment else line)
    return "\n".join(lines)


def _usb_block(printer: UsbPrinter, names: set[str]) -> str:
    assert printer.path is not None
    model = printer.model or f"USB printer {printer.label}"
    name = _unique(_slug(printer.model or "usb-printer"), names)
    profile, columns = guess_profile(printer.model)
    profile_comment = columns_comment = ""
    if profile == "default":
        profile_comment = f"no python-escpos profile for {model}: set the closest one (e.g. TM-T88V, TM-T20II)"
    else:
        columns_comment = f"font A width of the {profile} profile"
    values: list[tuple[str, Any, str]] = [
        ("name", name, ""),
        ("connection", "file", "usblp: the kernel's USB printer driver, no status replies"),
        ("path", printer.path, f"{printer.node} now; this name stays when it is re-plugged"),
        ("profile", profile, profile_comment),
        ("columns", columns, columns_comment),
        ("roles", ["fallback"], ""),
        ("confirm", False, "counts once written; true reads status and confirmations if print-test shows it answers"),
    ]
    lines = [f"# {_printable(model)} on USB (serial {printer.serial or 'none: named by its USB port'})", "[[printers]]"]
    for key, value, comment in values:
        line = dumps({key: value}).strip()
        lines.append(f"{line}  # {_printable(comment)}" if comment else line)
    return "\n".join(lines)


def _port_comment(entry: Found) -> str:
    if entry.port == RAW_PORT and RAW_SOURCES.intersection(entry.sources):
        return ""
    return (
        f"announced {entry.service} on port {entry.port}; IPP/LPR are not used, the agent prints raw to 9100 "
        "(check with 'venue-agent print-test')"
    )


def _pos_block(entry: Found) -> str:
    path = entry.txt.get("path") or DEFAULT_POS_PATH
    fixed = dumps({"url": f"http://{_url_host(entry.host)}:{entry.port}/{path.lstrip('/')}"}).strip()
    lines = [
        f"# POS terminal {_printable(entry.name)} announces itself at {entry.host}:{entry.port} ({entry.service}).",
        '# To send orders to it, set driver = "http" in [pos] and uncomment:',
        "# [pos.http]",
    ]
    if entry.name.isprintable() and entry.name.strip() == entry.name:
        lines.append(f"# {dumps({'url': f'{MDNS_SCHEME}{entry.name}'}).strip()}")
        lines.append(f"# (or, if its address never changes: {fixed})")
    else:
        lines.append(f"# {fixed}")
    return "\n".join(lines)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def guess_profile(model: str | None) -> tuple[str, int]:
    """Return the python-escpos profile named in ``model`` and its font A columns, else ("default", 48)."""
    profiles = _profiles()
    by_upper = {name.upper(): name for name in profiles}
    if model:
        tokens = re.findall(r"[A-Za-z0-9]+(?:-[A-Za-z0-9]+)+", model)
        matches = [by_upper[t.upper()] for t in tokens if t.upper() in by_upper]
        if matches:
            profile = max(matches, key=len)
            columns = profiles[profile]
            return profile, columns if columns in ALLOWED_COLUMNS else DEFAULT_COLUMNS
    return "default", DEFAULT_COLUMNS


@functools.cache
def _profiles() -> dict[str, int]:
    """Return python-escpos profile names and font A columns, read without importing escpos (it has side effects)."""
    spec = importlib.util.find_spec("escpos")
    for location in (spec.submodule_search_locations or []) if spec else []:
        try:
            data = json.loads((Path(location) / "capabilities.json").read_text(encoding="utf-8"))
            return {
                name: int(profile.get("fonts", {}).get("0", {}).get("columns", DEFAULT_COLUMNS))
                for name, profile in data["profiles"].items()
                if name not in ("default", "simple")
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return dict(KNOWN_PROFILES)


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60].strip("-")
    return slug or "printer"


def _unique(name: str, taken: set[str]) -> str:
    candidate, number = name, 2
    while candidate in taken:
        candidate = f"{name}-{number}"
        number += 1
    taken.add(candidate)
    return candidate


def _printable(text: str) -> str:
    """Return ``text`` with control characters replaced, so network-supplied names cannot break a line."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def to_jsonable(found: Sequence[Found], usb: Sequence[UsbPrinter] = ()) -> list[dict[str, Any]]:
    """Return ``found`` and the USB printers (``kind`` "usb_printer") as plain dicts (the ``--json`` output)."""
    return [dataclasses.asdict(entry) for entry in found] + [
        {"kind": "usb_printer", **dataclasses.asdict(printer)} for printer in usb
    ]


async def run_discover(
    seconds: float,
    *,
    as_json: bool,
    out: TextIO,
    err: TextIO | None = None,
    epson_targets: Sequence[tuple[str, int]] = BROADCAST_TARGETS,
    zeroconf_factory: ZeroconfFactory | None = None,
    usb_printers: UsbLister = list_usb_printers,
) -> int:
    """Run ``discover`` and print a table and TOML (or JSON); 0 even when nothing answered, 1 if it could not run."""
    err = err if err is not None else sys.stderr
    usb = usb_printers()
    try:
        found = await discover(seconds, epson_targets=epson_targets, zeroconf_factory=zeroconf_factory)
    except (DiscoveryError, OSError) as exc:
        err.write(f"error: discovery failed: {exc}\n(is this machine connected to the venue's network?)\n")
        return 1
    if as_json:
        out.write(json.dumps(to_jsonable(found, usb), indent=2, ensure_ascii=False) + "\n")
        if not found:
            err.write(render_table(found, seconds=seconds) + "\n")
        return 0
    out.write(render_table(found, seconds=seconds) + "\n")
    out.write("\n" + render_usb_table(usb) + "\n")
    toml = render_toml(found, usb)
    if toml:
        out.write(f"\nPaste into the config file (agent.toml):\n\n{toml}")
    return 0
