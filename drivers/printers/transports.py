"""Build the transport for a configured printer (``[[printers]]`` ``connection``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from drivers.printers.base import Transport
from drivers.printers.errors import PrinterConfigError
from drivers.printers.file import FileTransport
from drivers.printers.network import NetworkTransport
from drivers.printers.serial_port import SerialTransport
from drivers.printers.status import Timeouts
from drivers.printers.usb import UsbTransport

if TYPE_CHECKING:
    from agent.domain.config import PrinterSettings

_T = TypeVar("_T")


def _required(value: _T | None, key: str, settings: PrinterSettings) -> _T:
    if value is None:
        raise PrinterConfigError(
            f"printer {settings.name!r}: {key} is required when connection = {settings.connection!r}"
        )
    return value


def build_transport(settings: PrinterSettings, *, timeouts: Timeouts | None = None) -> Transport:
    """Return the transport for ``settings.connection``; ``PrinterConfigError`` if a key it needs is missing."""
    name = settings.name
    if settings.connection == "network":
        return NetworkTransport(name, _required(settings.host, "host", settings), settings.port, timeouts)
    if settings.connection == "serial":
        return SerialTransport(name, _required(settings.device, "device", settings), settings.baudrate, timeouts)
    if settings.connection == "usb":
        vendor = _required(settings.usb_vendor, "usb_vendor", settings)
        return UsbTransport(name, vendor, _required(settings.usb_product, "usb_product", settings), timeouts)
    if settings.connection == "file":
        return FileTransport(name, _required(settings.path, "path", settings), timeouts, two_way=settings.two_way)
    raise PrinterConfigError(f"printer {name!r}: unknown connection {settings.connection!r}")
