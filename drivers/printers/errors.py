"""Exceptions of the printer transports.

The hierarchy::

    PrinterError                root of everything a printer transport raises on purpose
    ├── PrinterUnavailable      offline, out of paper, cover open or not writable: try the next printer
    └── PrinterConfigError      the transport cannot be built from its settings (bad path, missing host)

Each transport translates ``OSError`` and library exceptions into these at its edge, so the
dispatcher only ever catches ``PrinterError``.
"""

from __future__ import annotations


class PrinterError(Exception):
    """Root of the printer exceptions."""


class PrinterUnavailable(PrinterError):
    """The printer cannot take a ticket right now; the job should go to another printer with the role."""

    def __init__(self, printer: str, reason: str) -> None:
        self.printer = printer
        self.reason = reason
        super().__init__(f"printer {printer!r} unavailable: {reason}")


class PrinterConfigError(PrinterError):
    """The printer's settings are unusable."""
