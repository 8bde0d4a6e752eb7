"""``[[printers]]``: one kitchen printer each (docs/printers.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from agent.domain.config_base import Section, keyed

PrinterRole = Literal["fallback", "kitchen", "reprint"]


def _fallback_role() -> list[PrinterRole]:
    return ["fallback"]


BuzzerKind = Literal["none", "esc_b", "epson_fn48", "drawer_pin2", "drawer_pin5", "bel"]


class PrinterSettings(Section):
    """``[[printers]]``: one kitchen printer."""

    name: Annotated[str, Field(min_length=1, max_length=64)]
    connection: Literal["network", "serial", "usb", "file"]
    host: str | None = None
    port: Annotated[int, Field(ge=1, le=65535)] = 9100
    device: str | None = None
    baudrate: Annotated[int, Field(ge=300, le=921600)] = 19200
    usb_vendor: int | None = None
    usb_product: int | None = None
    path: Path | None = None
    profile: Annotated[str, Field(min_length=1, max_length=64)] = "default"
    columns: Literal[32, 42, 48] = 48
    roles: list[PrinterRole] = Field(default_factory=_fallback_role)
    categories: list[str] | None = None
    buzzer: bool | BuzzerKind = True
    # how a ticket is confirmed. true (default): the printer's own word that the job came out where
    # its profile has one (Epson GS ( H process ID or GS r), else its status after the job; "process_id",
    # "transmit_status" or "status" force one; false for a printer that never answers DLE EOT, whose tickets
    # then count as printed once written.
    confirm: bool | Literal["process_id", "transmit_status", "status"] = True
    # the code page forced on this printer (default CP858 where the profile has it).
    code_page: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")] | None = None
    # what a file printer writes; default escpos for a path under /dev/, else text.
    format: Literal["text", "escpos"] | None = None

    @property
    def writes_text(self) -> bool:
        """True for a file printer that writes plain text rather than ESC/POS bytes."""
        if self.connection != "file":
            return False
        if self.format is not None:
            return self.format == "text"
        return not str(self.path).startswith("/dev/")

    @property
    def two_way(self) -> bool:
        """Whether the agent reads this printer's replies: network, serial, usb, and a device node under /dev/ whose
        ``confirm`` the config sets (not false; usblp passes replies back); never a regular file."""
        if self.connection != "file":
            return True
        return self.is_device_node and "confirm" in self.model_fields_set and self.confirm is not False

    @property
    def is_device_node(self) -> bool:
        """Whether a file printer's path is a device node (under /dev/), opened and never created."""
        return self.connection == "file" and Path(str(self.path)).parts[1:2] == ("dev",)

    def takes_category(self, category: str | None) -> bool:
        """Whether this printer's ``categories`` include ``category`` (case-insensitive; unset takes all)."""
        if self.categories is None:
            return True
        if category is None:
            return False
        wanted = category.casefold()
        return any(c.casefold() == wanted for c in self.categories)

    @model_validator(mode="after")
    def _connection_keys(self) -> PrinterSettings:
        needs = {
            "network": ["host"],
            "serial": ["device"],
            "usb": ["usb_vendor", "usb_product"],
            "file": ["path"],
        }
        missing = [k for k in needs[self.connection] if getattr(self, k) is None]
        if missing:
            raise keyed({k: f"required when connection = {self.connection!r}" for k in missing})
        if self.format is not None and self.connection != "file":
            raise keyed({"format": "only applies to connection = 'file'"})
        if self.categories is not None and not self.categories:
            raise keyed({"categories": "must name at least one category; leave it out to take every item"})
        return self
