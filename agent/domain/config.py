"""The technician's configuration: one TOML file plus ``VENUE_AGENT_<SECTION>__<KEY>`` overrides (SPEC §3)."""

from __future__ import annotations

import functools
import importlib.resources
import ipaddress
import os
import re
import tomllib
import zoneinfo
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import platformdirs
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from agent.domain import credentials
from agent.domain.errors import ConfigError, Problem

ENV_PREFIX = "VENUE_AGENT_"
SYSTEM_CONFIG = Path("/etc/venue-agent/agent.toml")
APP_NAME = "venue-agent"
SECRET_KEYS = frozenset(
    {
        "token",
        "password",
        "client_secret",
        "refresh_token",
        "hmac_secret",
        "access_token",
        "command_hmac_secret",
        "webhook_password",
    }
)


def _system_timezone() -> str:
    """Return the IANA name of the system's zone, or UTC when it cannot be told."""
    for candidate in (os.environ.get("TZ", "").lstrip(":"),):
        if candidate:
            return candidate
    try:
        target = Path("/etc/localtime").resolve()
        marker = "zoneinfo/"
        if marker in str(target):
            return str(target).split(marker, 1)[1]
    except OSError:
        pass
    try:
        name = Path("/etc/timezone").read_text().strip()
        if name:
            return name
    except OSError:
        pass
    return "UTC"


def _tzdata_dirs() -> list[Path]:
    """Return the directories that may hold tzdata's tables: the system's zoneinfo, then the tzdata package."""
    dirs = [Path(p) for p in zoneinfo.TZPATH]
    try:
        dirs.append(Path(str(importlib.resources.files("tzdata") / "zoneinfo")))
    except ModuleNotFoundError:
        pass
    return dirs


def _tab_rows(name: str) -> list[list[str]]:
    """Return the tab-separated rows of tzdata's table ``name`` (comments dropped), from the first place holding it."""
    for directory in _tzdata_dirs():
        try:
            text = (directory / name).read_text(encoding="utf-8")
        except OSError:
            continue
        return [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]
    return []


@functools.cache
def _zone_countries() -> dict[str, str]:
    """Return zone name -> ISO 3166-1 alpha-2 country: zone.tab (one country a zone), then zone1970.tab."""
    countries: dict[str, str] = {}
    for row in _tab_rows("zone1970.tab"):
        if len(row) >= 3:
            # "GB,GG,IM,JE  +513030-0000731  Europe/London": the first code is the zone's main country.
            countries[row[2]] = row[0].split(",")[0]
    for row in _tab_rows("zone.tab"):
        if len(row) >= 3:
            countries[row[2]] = row[0]
    return countries


@functools.cache
def known_countries() -> frozenset[str]:
    """Return the ISO 3166-1 alpha-2 codes of tzdata's iso3166.tab (empty when the system has no tzdata)."""
    return frozenset(row[0] for row in _tab_rows("iso3166.tab") if row and re.fullmatch(r"[A-Z]{2}", row[0]))


def zone_country(zone: str) -> str | None:
    """Return the country of IANA zone ``zone`` from the system's tzdata tables, or None (UTC, Etc/*, unknown)."""
    countries = _zone_countries()
    if zone in countries:
        return countries[zone]
    # A backward-compatible name ("GB", "US/Eastern") is a link to the canonical zone the tables list.
    for directory in _tzdata_dirs():
        try:
            target = (directory / zone).resolve(strict=True).relative_to(directory.resolve())
        except (OSError, ValueError, RuntimeError):
            continue
        return countries.get(str(target))
    return None


def _keyed(problems: dict[str, str]) -> ValueError:
    """Return an error that ``config check`` splits into one problem per (relative) key."""
    return ValueError("\n".join(f"@{key}: {message}" for key, message in problems.items()))


def read_secret_file(path_text: str, key: str) -> SecretStr:
    """Read a ``<key>_file`` secret (a relative one is located as credentials.locate says); ValueError says why not."""
    located = credentials.locate(path_text)
    path = located.path
    where = "" if located.how == "absolute path" else f" ({located.how})"
    if located.encrypted:
        msg = f"cannot read {key}_file {str(path)!r}{where}: it is encrypted; only the service gets it decrypted"
        raise ValueError(msg)
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        searched = f"; looked in {', '.join(map(str, located.searched))}" if len(located.searched) > 1 else ""
        msg = f"cannot read {key}_file {str(path)!r}{where}: {exc.strerror or exc}{searched}"
        raise ValueError(msg) from None
    if not value:
        msg = f"{key}_file {str(path)!r} is empty"
        raise ValueError(msg)
    return SecretStr(value)


# Operator commands load the config with secret files left unread, then read each one themselves: a command that
# needs no secret must not fail because a root-only one is unreadable (agent/cli/operator.py).
_defer_secret_files: ContextVar[bool] = ContextVar("defer_secret_files", default=False)


@contextmanager
def secret_files_deferred() -> Iterator[None]:
    """Within the block, validation checks ``*_file`` keys but does not read the files (the secret stays None)."""
    token = _defer_secret_files.set(True)
    try:
        yield
    finally:
        _defer_secret_files.reset(token)


class Section(BaseModel):
    """A config table: unknown keys are errors (they are usually typos)."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    @model_validator(mode="after")
    def _load_secret_files(self) -> Section:
        for key in SECRET_KEYS:
            file_key = f"{key}_file"
            if file_key not in type(self).model_fields:
                continue
            file_value = getattr(self, file_key)
            if file_value is None:
                continue
            if getattr(self, key) is not None:
                raise _keyed({file_key: f"give {key} or {file_key}, not both"})
            if _defer_secret_files.get():
                continue
            try:
                object.__setattr__(self, key, read_secret_file(file_value, key))
            except ValueError as exc:
                raise _keyed({file_key: str(exc)}) from None
        return self


class VenueSettings(Section):
    """``[venue]``: who this box serves."""

    id: Annotated[str, Field(pattern=r"^[a-z0-9-]{1,64}$")]
    name: str = ""
    timezone: str = Field(default_factory=_system_timezone)
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "GBP"
    # ISO 3166-1 alpha-2; places phone numbers typed without their country code. Default: the timezone's country.
    country: str | None = None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            msg = f"unknown time zone {value!r} (use an IANA name such as 'Europe/London')"
            raise ValueError(msg) from None
        return value

    @field_validator("country")
    @classmethod
    def _known_country(cls, value: str | None) -> str | None:
        if value is None:
            return None
        code = value.strip().upper()
        known = known_countries()
        if not re.fullmatch(r"[A-Z]{2}", code) or (known and code not in known):
            msg = f"unknown country {value!r} (use an ISO 3166-1 alpha-2 code such as 'GB')"
            raise ValueError(msg)
        return code

    @model_validator(mode="after")
    def _country_of_the_zone(self) -> VenueSettings:
        if self.country is None:
            self.country = zone_country(self.timezone)
        return self

    @property
    def tz(self) -> ZoneInfo:
        """Return the venue's time zone."""
        return ZoneInfo(self.timezone)


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
            raise _keyed({"token": msg})
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
            raise _keyed({"backoff_max_seconds": "must not be below backoff_base_seconds"})
        return self


class FallbackSettings(Section):
    """``[fallback]``: when a kitchen ticket is printed instead of (or before) the POS."""

    enabled: bool = True
    print_after_seconds: Annotated[float, Field(ge=0, le=86400)] = 60
    print_when_pos_not_ready: bool = True
    after_print: Literal["inject_marked", "inject", "skip"] = "inject_marked"
    printers: list[str] | None = None


class AccountProfiles(Section):
    """K-Series order profile code per fulfilment type."""

    pickup: str = "storekit"
    delivery: str = "storekit"
    dine_in: str = "storekit"


LIGHTSPEED_SKU_MAX = 25
# Lightspeed keeps trying to deliver an order to the till for maxTimeToAttemptOrderDeliverToPos, at least
# 60000 ms (Order and Pay OAS: "The minimum value is 60000ms (1 minute)").
LIGHTSPEED_MIN_CONFIRM_SECONDS = 60


class LightspeedKSettings(Section):
    """``[pos.lightspeed_k]``: Lightspeed Restaurant K-Series (SPEC §7.1)."""

    base_url: str = "https://api.lsk.lightspeed.app"
    business_location_id: int | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    client_secret_file: str | None = None
    refresh_token: SecretStr | None = None
    refresh_token_file: str | None = None
    endpoint_id: str | None = None
    account_profiles: AccountProfiles = Field(default_factory=AccountProfiles)
    delivery_fee_sku: str = "STOREKIT_DELIVERY"
    discount_sku: str = "STOREKIT_DISCOUNT"
    service_charge_sku: str = "STOREKIT_SERVICE_CHARGE"
    payment_method: str = "STOREKIT"
    native_discounts: bool = False
    # Not in SPEC §7.1: the native discount codes (pos_ids) that are percentages in the POS, so they may ride on
    # every item line; any other code is taken as an amount and goes on one line only (README, Lightspeed).
    percentage_discount_codes: list[str] = Field(default_factory=list)
    webhook_username: str | None = None
    webhook_password: SecretStr | None = None
    webhook_password_file: str | None = None
    check_readiness: bool = True

    @field_validator("delivery_fee_sku", "discount_sku", "service_charge_sku")
    @classmethod
    def _k_series_sku(cls, value: str) -> str:
        # An item line's sku is 1-25 characters (Order and Pay OAS, apeToGoOrderItemLine.sku maxLength 25),
        # counted in UTF-16 units as the Java API counts them.
        units = len(value) + sum(1 for ch in value if ord(ch) > 0xFFFF)
        if not 1 <= units <= LIGHTSPEED_SKU_MAX:
            msg = f"must be 1 to {LIGHTSPEED_SKU_MAX} characters: Lightspeed K-Series refuses a longer item SKU"
            raise ValueError(msg)
        return value


class SquareSettings(Section):
    """``[pos.square]``: Square Orders API (SPEC §7.2)."""

    base_url: str = "https://connect.squareup.com"
    location_id: str | None = None
    access_token: SecretStr | None = None
    access_token_file: str | None = None
    square_version: str = "2025-01-23"
    catalog: dict[str, str] = Field(default_factory=dict)

    @field_validator("catalog")
    @classmethod
    def _catalog_ids_square_takes(cls, value: dict[str, str]) -> dict[str, str]:
        # OrderLineItem/OrderLineItemModifier.catalog_object_id: maxLength 192 (Square's api.json); an id
        # cannot be shortened, so a longer one is a config error rather than a refused order.
        bad = {sku: object_id for sku, object_id in value.items() if not object_id or len(object_id) > 192}
        if bad:
            shown = ", ".join(sorted(bad))
            msg = f"catalog object ids must be 1-192 characters (Square's limit); not so for {shown}"
            raise ValueError(msg)
        return value


class HttpPosSettings(Section):
    """``[pos.http]``: a POS terminal or in-house POS on the LAN (SPEC §7.3)."""

    url: Annotated[str, Field(min_length=1)]
    hmac_secret: SecretStr | None = None
    hmac_secret_file: str | None = None
    token: SecretStr | None = None
    token_file: str | None = None

    @field_validator("url")
    @classmethod
    def _http_or_mdns(cls, value: str) -> str:
        if not re.match(r"^(https?://[^\s/]+.*|mdns:\S.*)$", value):
            msg = f"{value!r} is neither an http(s):// URL nor mdns:<instance name>"
            raise ValueError(msg)
        return value


class SimulatorPosSettings(Section):
    """``[pos.simulator]``: where ``venue-agent pos-sim`` listens."""

    url: str = "http://127.0.0.1:8788/orders"
    hmac_secret: SecretStr | None = None
    hmac_secret_file: str | None = None


DRIVER_REQUIRED: dict[str, tuple[str, ...]] = {
    "http": ("url",),
    "lightspeed_k": ("business_location_id", "client_id", "client_secret", "refresh_token", "endpoint_id"),
    "square": ("location_id", "access_token"),
}


def driver_requirements(driver: object, pos: dict[str, Any]) -> dict[str, str]:
    """Return the keys the chosen driver needs that its sub-table lacks (relative to ``pos``)."""
    if not isinstance(driver, str) or driver not in DRIVER_REQUIRED:
        return {}
    table = pos.get(driver)
    table = table if isinstance(table, dict) else {}
    return {
        f"{driver}.{key}": f"required when driver = {driver!r}"
        for key in DRIVER_REQUIRED[driver]
        if table.get(key) is None and table.get(f"{key}_file") is None
    }


def confirm_timeout_problem(driver: object, timeout: object) -> str | None:
    """Return why ``injection.confirm_timeout_seconds`` is too short for ``driver``, or None."""
    if driver != "lightspeed_k" or not isinstance(timeout, int | float) or isinstance(timeout, bool):
        return None
    if timeout >= LIGHTSPEED_MIN_CONFIRM_SECONDS:
        return None
    return (
        f"must be at least {LIGHTSPEED_MIN_CONFIRM_SECONDS} with pos.driver = 'lightspeed_k' (got {timeout:g}):"
        " Lightspeed keeps trying to deliver an order to the till for maxTimeToAttemptOrderDeliverToPos, at"
        " least 60000 ms, so a shorter wait prints the fallback ticket while the till may still get the"
        " order, and the dish is made twice"
    )


PosDriverName = Literal["lightspeed_k", "square", "http", "simulator"]


class PosSettings(Section):
    """``[pos]``: which POS the orders go to and how gently."""

    driver: PosDriverName
    timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 10
    rate_limit_per_second: Annotated[float, Field(gt=0, le=10000)] = 5
    lightspeed_k: LightspeedKSettings | None = None
    square: SquareSettings | None = None
    http: HttpPosSettings | None = None
    simulator: SimulatorPosSettings | None = None

    @model_validator(mode="after")
    def _driver_table_present(self) -> PosSettings:
        problems = driver_requirements(self.driver, self.model_dump(exclude_none=True))
        if problems:
            raise _keyed(problems)
        if self.driver == "simulator" and self.simulator is None:
            self.simulator = SimulatorPosSettings()
        return self


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
    # Not in SPEC §3: how a ticket is confirmed. true (default): the printer's own word that the job came out where
    # its profile has one (Epson GS ( H process ID or GS r), else its status after the job; "process_id",
    # "transmit_status" or "status" force one; false for a printer that never answers DLE EOT, whose tickets
    # then count as printed once written.
    confirm: bool | Literal["process_id", "transmit_status", "status"] = True
    # Not in SPEC §3: the code page forced on this printer (default CP858 where the profile has it).
    code_page: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")] | None = None
    # Not in SPEC §3: what a file printer writes; default escpos for a path under /dev/, else text.
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
            raise _keyed({k: f"required when connection = {self.connection!r}" for k in missing})
        if self.format is not None and self.connection != "file":
            raise _keyed({"format": "only applies to connection = 'file'"})
        if self.categories is not None and not self.categories:
            raise _keyed({"categories": "must name at least one category; leave it out to take every item"})
        return self


class MqttSettings(Section):
    """``[mqtt]``: health and control over MQTT (SPEC §8)."""

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
            raise _keyed(problems)
        if self.port is None:
            self.port = 8883 if self.tls else 1883
        return self


class DiscoverySettings(Section):
    """``[discovery]``: mDNS browse and advertise."""

    enabled: bool = True
    advertise: bool = True


class TicketSettings(Section):
    """``[tickets]``: what a kitchen ticket says beyond the order itself (SPEC §3, §9)."""

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
                raise _keyed({"qr_url": 'required when qr = "order_url" (e.g. "https://example.com/o/{order_id}")'})
            if not re.match(r"^https?://\S+$", self.qr_url) or "{order_id}" not in self.qr_url:
                raise _keyed({"qr_url": "must be an http(s):// URL containing {order_id}"})
        return self

    def qr_data(self, order_id: str) -> str | None:
        """Return what the QR code on ``order_id``'s ticket encodes, or None when tickets carry none."""
        if self.qr != "order_url" or not self.qr_url:
            return None
        return self.qr_url.replace("{order_id}", order_id)


class AvailabilitySettings(Section):
    """``[availability]``: what the ordering platform is told about taking orders (SPEC §8 ``P/availability``)."""

    # How long a change to "not accepting" (or of its reason) must last before it is published; back to
    # accepting is published at once (docs/availability.md).
    debounce_seconds: Annotated[float, Field(ge=0, le=3600)] = 30


def _default_log_format() -> Literal["json", "console"]:
    return "json" if os.environ.get("INVOCATION_ID") or os.environ.get("JOURNAL_STREAM") else "console"


class LoggingSettings(Section):
    """``[logging]``."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = Field(default_factory=_default_log_format)


class Settings(BaseSettings):
    """Everything the agent is configured with."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    venue: VenueSettings
    storage: StorageSettings = Field(default_factory=StorageSettings)
    intake: IntakeSettings = Field(default_factory=IntakeSettings)
    injection: InjectionSettings = Field(default_factory=InjectionSettings)
    fallback: FallbackSettings = Field(default_factory=FallbackSettings)
    pos: PosSettings
    printers: list[PrinterSettings] = Field(default_factory=list)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    discovery: DiscoverySettings = Field(default_factory=DiscoverySettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    tickets: TicketSettings = Field(default_factory=TicketSettings)
    availability: AvailabilitySettings = Field(default_factory=AvailabilitySettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment overrides the file; nothing else is read."""
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _lightspeed_confirm_timeout(self) -> Settings:
        reason = confirm_timeout_problem(self.pos.driver, self.injection.confirm_timeout_seconds)
        if reason:
            raise _keyed({"injection.confirm_timeout_seconds": reason})
        return self

    @model_validator(mode="after")
    def _printer_references(self) -> Settings:
        names = [p.name for p in self.printers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        problems: dict[str, str] = {}
        if duplicates:
            problems["printers"] = f"names must be unique, repeated: {', '.join(duplicates)}"
        unknown = [n for n in (self.fallback.printers or []) if n not in names]
        if unknown:
            problems["fallback.printers"] = f"names printers that are not configured: {', '.join(unknown)}"
        if problems:
            raise _keyed(problems)
        return self

    def fallback_printers(self) -> list[PrinterSettings]:
        """Return the printers fallback tickets go to, in failover order (role fallback or kitchen)."""
        if self.fallback.printers is not None:
            by_name = {p.name: p for p in self.printers}
            return [by_name[n] for n in self.fallback.printers]
        return [p for p in self.printers if "fallback" in p.roles or "kitchen" in p.roles]

    def printers_for(self, kind: str) -> list[PrinterSettings]:
        """Return the printers a ticket of ``kind`` may go to, in failover order.

        Reprints go to the printers with the ``reprint`` role when there are any, else where fallback
        tickets go; every other kind goes where fallback tickets go.
        """
        if kind == "reprint":
            reprinters = [p for p in self.printers if "reprint" in p.roles]
            if reprinters:
                return reprinters
        return self.fallback_printers()


def search_paths(explicit: str | os.PathLike[str] | None = None) -> list[Path]:
    """Return the config paths looked at, in order: --config, $VENUE_AGENT_CONFIG, /etc, the user dir."""
    if explicit:
        return [Path(explicit)]
    env = os.environ.get(f"{ENV_PREFIX}CONFIG")
    if env:
        return [Path(env)]
    return [SYSTEM_CONFIG, Path(platformdirs.user_config_dir(APP_NAME)) / "agent.toml"]


def find_config(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Return the config file to use, or raise ConfigError naming every path searched."""
    paths = search_paths(explicit)
    for path in paths:
        if path.is_file():
            return path
    searched = ", ".join(str(p) for p in paths)
    raise ConfigError([Problem("config", f"no config file found; searched: {searched}")])


def _env_name(loc: tuple[str | int, ...]) -> str:
    return ENV_PREFIX + "__".join(str(p).upper() for p in loc)


def _problems(error: Any, source: str) -> list[Problem]:
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "value_error" and message.startswith("@"):
        base: tuple[str | int, ...] = tuple(error["loc"])
        found = []
        for line in message.splitlines():
            key, _, text = line[1:].partition(": ")
            loc = base + tuple(int(p) if p.isdigit() else p for p in key.split("."))
            found.append(_problem({"loc": loc, "type": "value_error", "msg": text}, source))
        return found
    return [_problem(error, source)]


def _problem(error: Any, source: str) -> Problem:
    loc: tuple[str | int, ...] = tuple(error["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        message = "unknown key (is it misspelt?)"
    elif kind == "missing":
        message = "required key is missing"
    else:
        message = str(error["msg"]).removeprefix("Value error, ")
        if "input" in error and kind not in ("value_error", "model_type") and not _is_secret_loc(loc):
            message += f" (got {error['input']!r})"
    for depth in range(len(loc), 0, -1):
        name = _env_name(loc[:depth])
        if name in os.environ:
            return Problem(key, message, f"environment {name}")
    return Problem(key, message, source)


def _is_secret_loc(loc: tuple[str | int, ...]) -> bool:
    return any(str(p) in SECRET_KEYS for p in loc)


def load_settings(path: str | os.PathLike[str] | None = None) -> tuple[Settings, Path]:
    """Load and validate the config (file + environment), or raise ConfigError listing every problem."""
    found = find_config(path)
    source = str(found)
    try:
        raw = tomllib.loads(found.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem("(syntax)", f"not valid TOML: {exc}", source)]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem("config", f"cannot read the file: {exc}", source)]) from None
    return settings_from_dict(raw, source=source), found


def settings_from_dict(raw: dict[str, Any], *, source: str = "") -> Settings:
    """Validate an already parsed config (plus environment overrides)."""
    try:
        return Settings(**raw)
    except ValidationError as exc:
        problems = [p for e in exc.errors(include_url=False) for p in _problems(e, source)]
        # The driver's own requirements are checked on the raw file too, so they are reported even
        # when another [pos] key is broken (pydantic skips the model check then).
        raw_pos = raw.get("pos")
        pos: dict[str, Any] = raw_pos if isinstance(raw_pos, dict) else {}
        known = {p.key for p in problems}
        for key, message in driver_requirements(pos.get("driver"), pos).items():
            if f"pos.{key}" not in known:
                problems.append(Problem(f"pos.{key}", message, source))
        raw_injection = raw.get("injection")
        injection: dict[str, Any] = raw_injection if isinstance(raw_injection, dict) else {}
        too_short = confirm_timeout_problem(pos.get("driver"), injection.get("confirm_timeout_seconds"))
        if too_short and "injection.confirm_timeout_seconds" not in known:
            problems.append(Problem("injection.confirm_timeout_seconds", too_short, source))
        raise ConfigError(problems) from None


def redacted(settings: Settings) -> dict[str, Any]:
    """Return the effective settings as plain data with every secret replaced by ``"***"``."""
    data: dict[str, Any] = settings.model_dump(mode="json", exclude_none=True)

    def scrub(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: ("***" if k in SECRET_KEYS and v is not None else scrub(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [scrub(v) for v in node]
        return node

    result: dict[str, Any] = scrub(data)
    return result
