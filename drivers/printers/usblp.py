"""USB printers on the kernel's usblp driver (/dev/usb/lp*), by the stable names the package's udev rules give them.

packaging/udev/60-venue-agent-printers.rules links each usblp node as
``/dev/venue-printer/<vendor>-<product>-<serial>`` (or ``<vendor>-<product>-port-<usb path>`` for a printer
without a serial number). The node number changes when a printer is re-plugged; the name does not, so the
config names the printer by it (``connection = "file"``, ``path = "/dev/venue-printer/..."``). This module
only reads: the links under /dev/venue-printer, the usblp nodes in sysfs and the USB attributes beside them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

LINK_DIR = "venue-printer"
RULES_FILE = "/lib/udev/rules.d/60-venue-agent-printers.rules"
_LINK_NAME = re.compile(r"^(?P<vendor>[0-9a-f]{4})-(?P<product>[0-9a-f]{4})-(?:port-(?P<port>.+)|(?P<serial>.+))$")


@dataclass(frozen=True)
class UsbPrinter:
    """One usblp printer: its stable path (``None`` without the udev rules), its node now, and what it says it is."""

    path: str | None
    node: str
    vendor: str | None = None
    product: str | None = None
    serial: str | None = None
    model: str | None = None

    @property
    def label(self) -> str:
        """Return ``vendor:product`` as lsusb shows it, or ``?`` when sysfs did not say."""
        return f"{self.vendor}:{self.product}" if self.vendor and self.product else "?"


@dataclass(frozen=True)
class LinkName:
    """What a /dev/venue-printer/ name says: vendor, product, and the serial number or the USB port."""

    vendor: str
    product: str
    serial: str | None
    port: str | None


def parse_link_name(name: str) -> LinkName | None:
    """Parse ``04b8-0202-J5CF012345`` or ``04b8-0202-port-pci-0000_00_14_0-usb-0_2_1_0``; ``None`` otherwise."""
    match = _LINK_NAME.match(name)
    if match is None:
        return None
    return LinkName(match["vendor"], match["product"], match["serial"], match["port"])


def _read(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
    return "".join(ch if ch.isprintable() else "?" for ch in text) or None


def _from_sysfs(sys_root: Path, kernel_name: str) -> dict[str, str | None]:
    """Return vendor, product, serial and model of ``lpN`` from sysfs (its USB device is the interface's parent)."""
    try:
        interface = (sys_root / "class" / "usbmisc" / kernel_name / "device").resolve(strict=True)
    except OSError:
        return {}
    device = interface.parent
    maker, product = _read(device / "manufacturer"), _read(device / "product")
    model = " ".join(part for part in (maker, product) if part) or None
    return {
        "vendor": _read(device / "idVendor"),
        "product": _read(device / "idProduct"),
        "serial": _read(device / "serial"),
        "model": model,
    }


def list_usb_printers(dev_root: Path = Path("/dev"), sys_root: Path = Path("/sys")) -> list[UsbPrinter]:
    """Return every usblp printer now: each node in sysfs with its /dev/venue-printer/ name where it has one."""
    links: dict[str, str] = {}
    link_dir = dev_root / LINK_DIR
    try:
        entries = sorted(link_dir.iterdir())
    except OSError:
        entries = []
    for entry in entries:
        if entry.is_symlink():
            links[os.path.realpath(entry)] = str(Path("/dev") / LINK_DIR / entry.name)
    try:
        kernel_names = sorted(p.name for p in (sys_root / "class" / "usbmisc").iterdir() if p.name.startswith("lp"))
    except OSError:
        kernel_names = []
    printers = []
    seen: set[str] = set()
    for kernel_name in kernel_names:
        node = dev_root / "usb" / kernel_name
        real = os.path.realpath(node)
        seen.add(real)
        printers.append(
            UsbPrinter(path=links.get(real), node=f"/dev/usb/{kernel_name}", **_from_sysfs(sys_root, kernel_name))
        )
    # A name whose node sysfs did not list (another kernel naming, a stale link): shown, from what the name says.
    for real, path in links.items():
        if real in seen:
            continue
        parsed = parse_link_name(Path(path).name)
        printers.append(
            UsbPrinter(
                path=path,
                node=real,
                vendor=parsed.vendor if parsed else None,
                product=parsed.product if parsed else None,
                serial=parsed.serial if parsed else None,
            )
        )
    return printers
