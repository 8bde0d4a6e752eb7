"""``venue-agent discover``, the command: run the search of ``discovery``, list the USB printers plugged into this
box (kernel usblp driver) by their stable ``/dev/venue-printer/`` names (drivers/printers/usblp.py), and print what
was found as tables and ready-to-paste TOML that uses those names (or as JSON).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from agent.cli.discovery import (
    BROADCAST_TARGETS,
    DEFAULT_SECONDS,
    RAW_PORT,
    RAW_SOURCES,
    DiscoveryError,
    Found,
    ZeroconfFactory,
    discover,
    source_rank,
)
from agent.cli.table import output_width, table
from agent.cli.tomlout import dumps
from drivers.pos.mdns import DEFAULT_PATH as DEFAULT_POS_PATH
from drivers.pos.mdns import MDNS_SCHEME
from drivers.printers.usblp import RULES_FILE, UsbPrinter, list_usb_printers

DEFAULT_COLUMNS = 48
ALLOWED_COLUMNS = frozenset({32, 42, 48})
UsbLister = Callable[[], list[UsbPrinter]]

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
    return "\n".join(table(rows, header=header, width=output_width()))


def render_usb_table(printers: Sequence[UsbPrinter]) -> str:
    """Return the USB printers as a table, with what to do about one that has no stable name."""
    if not printers:
        return "No USB printers (usblp) are plugged into this box."
    header = ("USB PRINTER (stable name)", "NODE NOW", "VENDOR:PRODUCT", "SERIAL", "MODEL")
    rows = [(p.path or "- (no stable name)", p.node, p.label, p.serial or "-", p.model or "-") for p in printers]
    out = table(rows, header=header, width=output_width())
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
    return (0 if entry.port == RAW_PORT else 1, source_rank(entry.sources[0]))


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
