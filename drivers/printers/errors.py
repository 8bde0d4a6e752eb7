"""Exceptions of the printer transports and renderers.

The hierarchy::

    PrinterError                root of everything a printer transport raises on purpose
    ├── PrinterUnavailable      unreachable, timed out or not writable: try the next printer
    │   └── PrinterNotReady     reachable but reported paper out, cover open or offline; nothing was sent
    ├── PrinterConfigError      the transport cannot be built from its settings (bad path, unknown profile)
    └── EscPosDecodeError       bytes that are not the ESC/POS this project writes (the test decoder)

Each transport translates ``OSError``, pyserial, pyusb and python-escpos exceptions into these at its
edge, so the print worker only ever catches ``PrinterError``.
"""

from __future__ import annotations

from drivers.printers.base import PrinterStatus


class PrinterError(Exception):
    """Root of the printer exceptions."""


class PrinterUnavailable(PrinterError):
    """The printer cannot take a ticket right now; the job should go to another printer with the role."""

    def __init__(self, printer: str, reason: str, *, status: PrinterStatus = PrinterStatus.OFFLINE) -> None:
        self.printer = printer
        self.reason = reason
        self.status = status
        super().__init__(f"printer {printer!r} unavailable: {reason}")


class PrinterNotReady(PrinterUnavailable):
    """The printer answered that it cannot print (paper out, cover open, offline); no byte was sent."""


class PrinterConfigError(PrinterError):
    """The printer's settings are unusable."""


class EscPosDecodeError(PrinterError):
    """The bytes hold a command the decoder does not know, or one cut short."""
