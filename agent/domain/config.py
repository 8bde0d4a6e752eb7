"""The technician's configuration: one TOML file plus ``VENUE_AGENT_<SECTION>__<KEY>`` overrides.

The public face of the settings: ``Settings`` (one field per TOML table) and its loading live here; each table's
model lives in the module of its concern (config_venue, config_sections, config_pos, config_printers), the ``Section``
base and secret files in config_base, and the wording of problems in config_problems. A new table is a ``Section``
subclass and one field on ``Settings``; the environment overrides and ``config check`` pick it up by themselves.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from agent.domain.config_base import (
    APP_NAME,
    ENV_PREFIX,
    SECRET_KEYS,
    Section,
    keyed,
    read_secret_file,
    secret_files_deferred,
)
from agent.domain.config_pos import (
    AccountProfiles,
    HttpPosSettings,
    LightspeedKSettings,
    PosSettings,
    SimulatorPosSettings,
    SquareSettings,
    confirm_timeout_problem,
    driver_requirements,
)
from agent.domain.config_printers import PrinterSettings
from agent.domain.config_problems import problems_from, syntax_problem
from agent.domain.config_sections import (
    AvailabilitySettings,
    DiscoverySettings,
    FallbackSettings,
    InjectionSettings,
    IntakeSettings,
    LoggingSettings,
    MqttSettings,
    StorageSettings,
    TicketSettings,
    split_listen,
)
from agent.domain.config_venue import VenueSettings, known_countries, zone_country
from agent.domain.errors import ConfigError, ConfigNotFound, Problem

__all__ = [
    "APP_NAME",
    "ENV_PREFIX",
    "SECRET_KEYS",
    "SYSTEM_CONFIG",
    "AccountProfiles",
    "AvailabilitySettings",
    "DiscoverySettings",
    "FallbackSettings",
    "HttpPosSettings",
    "InjectionSettings",
    "IntakeSettings",
    "LightspeedKSettings",
    "LoggingSettings",
    "MqttSettings",
    "PosSettings",
    "PrinterSettings",
    "Section",
    "Settings",
    "SimulatorPosSettings",
    "SquareSettings",
    "StorageSettings",
    "TicketSettings",
    "VenueSettings",
    "find_config",
    "known_countries",
    "load_settings",
    "read_secret_file",
    "redacted",
    "search_paths",
    "secret_files_deferred",
    "settings_from_dict",
    "split_listen",
    "zone_country",
]

SYSTEM_CONFIG = Path("/etc/venue-agent/agent.toml")


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
            raise keyed({"injection.confirm_timeout_seconds": reason})
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
            raise keyed(problems)
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
    """Return the config file to use, or raise ConfigNotFound naming every path searched."""
    paths = search_paths(explicit)
    for path in paths:
        if path.is_file():
            return path
    searched = ", ".join(str(p) for p in paths)
    raise ConfigNotFound([Problem("config", f"no config file found; searched: {searched}")], paths)


def load_settings(path: str | os.PathLike[str] | None = None) -> tuple[Settings, Path]:
    """Load and validate the config (file + environment), or raise ConfigError listing every problem."""
    found = find_config(path)
    source = str(found)
    try:
        text = found.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem("config", f"cannot read the file: {exc}", source)]) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([syntax_problem(text, exc, source)]) from None
    return settings_from_dict(raw, source=source), found


def settings_from_dict(raw: dict[str, Any], *, source: str = "") -> Settings:
    """Validate an already parsed config (plus environment overrides)."""
    try:
        return Settings(**raw)
    except ValidationError as exc:
        problems = problems_from(exc.errors(include_url=False), Settings, raw, source)
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
