"""The printer test page, printed and reported the same way by ``venue-agent print-test`` and the MQTT command."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from agent.domain.config import PrinterSettings
from agent.printing.tickets import PrinterSetup, print_test_page
from drivers.printers.base import Delivery, Transport, can_confirm
from drivers.printers.errors import PrinterError, PrinterUnavailable
from drivers.printers.status import ConfirmKind, ConfirmRequest, profile_confirmation


def where(printer: PrinterSettings) -> str:
    """Return how the printer is reached, for people: ``network 10.0.0.5:9100``, ``serial /dev/ttyUSB0``, …."""
    if printer.connection == "network":
        return f"network {printer.host}:{printer.port}"
    if printer.connection == "serial":
        return f"serial {printer.device}"
    if printer.connection == "usb":
        return f"usb {printer.usb_vendor or 0:04x}:{printer.usb_product or 0:04x}"
    return f"file {printer.path}"


def confirm_kind(printer: PrinterSettings) -> ConfirmKind | None:
    """Return how ``printer`` is asked to confirm a job by its settings (before any job told otherwise)."""
    if printer.confirm is True:
        return profile_confirmation(printer.profile)
    if printer.confirm in ("process_id", "transmit_status"):
        return printer.confirm
    return None


async def print_test(setup: PrinterSetup, transport: Transport, *, tz: ZoneInfo) -> dict[str, Any]:
    """Print the test page through ``transport``; return what happened (never raises a printer error).

    The result: ``printer``, ``connection``, ``before``/``after`` (status values), ``printed``, ``error`` (why not
    printed, else None), ``notes`` (what a technician should check), and on delivery ``bytes`` and ``seconds``.
    """
    printer = setup.settings
    result: dict[str, Any] = {
        "printer": printer.name,
        "connection": where(printer),
        "before": "unknown",
        "after": "unknown",
        "printed": False,
        "error": None,
        "notes": [],
    }
    started = time.monotonic()
    try:
        page = print_test_page(setup, now=datetime.now(UTC), tz=tz)
        data = await asyncio.to_thread(setup.payload, page)
        kind = confirm_kind(printer)
        request = ConfirmRequest("process_id", b"TEST") if kind == "process_id" else None
        if kind == "transmit_status":
            request = ConfirmRequest("transmit_status")
        delivery: Delivery
        if request is not None and can_confirm(transport):
            delivery = await transport.send(data, confirm=request)
        else:
            request = None
            delivery = await transport.send(data)
    except PrinterUnavailable as exc:
        result.update(before=exc.status.value, error=exc.reason)
    except PrinterError as exc:
        result.update(error=str(exc))
    else:
        result.update(
            before=delivery.before.status.value,
            after=delivery.after.status.value,
            printed=delivery.printed,
            error=None if delivery.printed else delivery.after.detail,
            bytes=len(data),
            seconds=round(time.monotonic() - started, 3),
        )
        result["confirmation"] = "confirmed" if delivery.confirmed else "unconfirmed"
        if request is not None and delivery.confirmed:
            result["notes"].append(f"the printer confirmed the page came out ({request.kind})")
        elif request is not None and delivery.after.status.value in ("ok", "paper_low"):
            result["notes"].append(
                f"the printer did not answer the job confirmation ({request.kind}) although its status is fine:"
                ' if the page came out, set confirm = "status" for this printer'
            )
        if delivery.after.status.value == "unknown" and not printer.writes_text:
            result["notes"].append("the printer did not answer status requests: check the paper came out")
        elif delivery.after.status.value == "paper_low":
            result["notes"].append("paper is nearly out: put a new roll in soon")
    return result
