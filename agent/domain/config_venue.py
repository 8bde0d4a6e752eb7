"""``[venue]``: who the box serves, with its time zone and country (from the system's tzdata tables)."""

from __future__ import annotations

import functools
import importlib.resources
import os
import re
import zoneinfo
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from agent.domain.config_base import Section


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


class VenueSettings(Section):
    """``[venue]``: who this box serves."""

    # The description is the pattern in words: config check shows it instead of the expression.
    id: Annotated[
        str,
        Field(
            pattern=r"^[a-z0-9-]{1,64}$",
            description="must be 1 to 64 characters, each a lowercase letter a-z, a digit 0-9 or a hyphen"
            " (no capitals, spaces, dots or underscores), e.g. 'harbour-kitchen'",
        ),
    ]
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
