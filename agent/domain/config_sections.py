"""The service's own tables: storage, intake, injection, fallback, mqtt, discovery, tickets and logging."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Literal

import platformdirs
from pydantic import Field, SecretStr, field_validator, model_validator

from agent.domain.config_base import APP_NAME, Section, keyed


def _default_db_path() -> Path:
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0]) / "outbox.db"
    return Path(platformdirs.user_data_dir(APP_NAME)) / "outbox.db"


class StorageSettings(Section):
    """``[storage]``: the outbox database."""

    path: Path = Field(default_factory=_default_db_path)
    retention_days: Annotated[int, Field(ge=1, le=3650)] = 30
    min_free_mb: Annotated[int, Field(ge=0)] = 50


class IntakeSettings(Section):
    """``[intake]``: the HTTP API the ordering platform posts to."""

    listen: str = "127.0.0.1:8787"
    token: SecretStr | None = None
    token_file: str | None = None
    max_body_kb: Annotated[int, Field(ge=1, le=65536)] = 256
    # Open intake connections at most (a flood cannot take the descriptors the POS and printers need);
    # at the cap the longest-idle connection is closed for a new one.
    max_connections: Annotated[int, Field(ge=8, le=4096)] = 256
    # A keep-alive connection with no new request within this is closed.
    idle_timeout_seconds: Annotated[int, Field(ge=1, le=300)] = 5
    # A request (line, headers, body) must arrive within this of the connection (or of the previous answer).
    request_timeout_seconds: Annotated[int, Field(ge=1, le=300)] = 10

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        split_listen(value)
        return value

    @model_validator(mode="after")
    def _token_off_loopback(self) -> IntakeSettings:
        host, _ = split_listen(self.listen)
        if not _is_loopback(host) and self.token is None and self.token_file is None:
            msg = f"required when listening on {host} (not loopback): set token or token_file"
            raise keyed({"token": msg})
        return self

    @property
    def host(self) -> str:
        """Return the address to listen on."""
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        """Return the port to listen on."""
        return split_listen(self.listen)[1]


def split_listen(value: str) -> tuple[str, int]:
    """Split ``host:port`` (IPv6 as ``[::1]:8787``) or raise ValueError saying what is wrong."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]]+):(\d{1,5})", value.strip())
    if not match:
        msg = f"{value!r} is not host:port (e.g. '127.0.0.1:8787' or '[::1]:8787')"
        raise ValueError(msg)
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 <= port < 65536:
        msg = f"port {port} is out of range 0-65535 (0 picks a free port)"
        raise ValueError(msg)
    return host, port


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class InjectionSettings(Section):
    """``[injection]``: when and how hard orders are pushed into the POS."""

    preorders: Literal["buffered", "immediate"] = "buffered"
    buffer_minutes: Annotated[int, Field(ge=0, le=24 * 60)] = 20
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 6
    backoff_base_seconds: Annotated[float, Field(gt=0, le=3600)] = 2
    backoff_max_seconds: Annotated[float, Field(gt=0, le=86400)] = 300
    hold_unpaid: bool = True
    confirm_timeout_seconds: Annotated[float, Field(gt=0, le=86400)] = 120

    @model_validator(mode="after")
    def _cap_above_base(self) -> InjectionSettings:
        if self.backoff_max_seconds < self.backoff_base_seconds:
            raise keyed({"backoff_max_seconds": "must not be below backoff_base_seconds"})
        return self


class FallbackSettings(Section):
    """``[fallback]``: when a kitchen ticket is printed instead of (or before) the POS."""

    enabled: bool = True
    print_after_seconds: Annotated[float, Field(ge=0, le=86400)] = 60
    print_when_pos_not_ready: bool = True
    after_print: Literal["inject_marked", "inject", "skip"] = "inject_marked"
    printers: list[str] | None = None


class MqttSettings(Section):
    """``[mqtt]``: health and control over MQTT (docs/mqtt.md)."""

    enabled: bool = False
    host: str | None = None
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_file: str | None = None
    topic_prefix: Annotated[str, Field(pattern=r"^[^#+\s]+$")] = "venues"
    health_interval_seconds: Annotated[float, Field(ge=1, le=3600)] = 30
    command_hmac_secret: SecretStr | None = None
    command_hmac_secret_file: str | None = None

    @model_validator(mode="after")
    def _host_when_enabled(self) -> MqttSettings:
        problems: dict[str, str] = {}
        if self.enabled and not self.host:
            problems["host"] = "required when enabled = true"
        files = {"ca_file": self.ca_file, "cert_file": self.cert_file, "key_file": self.key_file}
        for key, path in files.items():
            if path is None:
                continue
            if not self.tls:
                problems[key] = "is used only with tls = true: set tls = true, or remove it"
            elif self.enabled and not path.is_file():
                problems[key] = f"{path} does not exist or is not a file"
        if self.key_file is not None and self.cert_file is None:
            problems["cert_file"] = "required with key_file (the client certificate the key belongs to)"
        if problems:
            raise keyed(problems)
        if self.port is None:
            self.port = 8883 if self.tls else 1883
        return self


class DiscoverySettings(Section):
    """``[discovery]``: mDNS browse and advertise."""

    enabled: bool = True
    advertise: bool = True


class TicketSettings(Section):
    """``[tickets]``: what a kitchen ticket says beyond the order itself (docs/printers.md)."""

    # A ticket printed more than this after its order became due carries LATE - n MIN.
    late_after_minutes: Annotated[int, Field(ge=0, le=24 * 60)] = 10
    # The venue's own allergy words, flagged like the built-in ones (nut, gluten, dairy, ...).
    allergy_words: list[
        Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]*\S[^\x00-\x1f]*$")]
    ] = Field(default_factory=list, max_length=100)
    qr: Literal["none", "order_url"] = "none"
    # With qr = "order_url": the page a QR code on the ticket opens; {order_id} is replaced by the order's id.
    qr_url: str | None = None

    @model_validator(mode="after")
    def _qr_url_when_needed(self) -> TicketSettings:
        if self.qr == "order_url":
            if not self.qr_url:
                raise keyed({"qr_url": 'required when qr = "order_url" (e.g. "https://example.com/o/{order_id}")'})
            if not re.match(r"^https?://\S+$", self.qr_url) or "{order_id}" not in self.qr_url:
                raise keyed({"qr_url": "must be an http(s):// URL containing {order_id}"})
        return self

    def qr_data(self, order_id: str) -> str | None:
        """Return what the QR code on ``order_id``'s ticket encodes, or None when tickets carry none."""
        if self.qr != "order_url" or not self.qr_url:
            return None
        return self.qr_url.replace("{order_id}", order_id)


class AvailabilitySettings(Section):
    """``[availability]``: what the ordering platform is told about taking orders (docs/availability.md)."""

    # How long a change to "not accepting" (or of its reason) must last before it is published; back to
    # accepting is published at once (docs/availability.md).
    debounce_seconds: Annotated[float, Field(ge=0, le=3600)] = 30


def _default_log_format() -> Literal["json", "console"]:
    return "json" if os.environ.get("INVOCATION_ID") or os.environ.get("JOURNAL_STREAM") else "console"


class LoggingSettings(Section):
    """``[logging]``."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = Field(default_factory=_default_log_format)
