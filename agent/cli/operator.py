"""What an operator command (anything but ``run``) works with on the box: the config, its secrets, the outbox.

Run by a technician (``sudo venue-agent status``), a command has none of the environment systemd gives the service:
no ``$CREDENTIALS_DIRECTORY`` (secrets: agent/domain/credentials.py) and no ``$STATE_DIRECTORY`` (the outbox). So:

- secrets are read one by one after the config validated, and one that cannot be read is remembered rather than
  fatal: only the commands that need it fail, saying why (``SecretFile``);
- the outbox is the service's: an explicit ``storage.path``, else ``$STATE_DIRECTORY``, else on an installed box
  (the config is /etc/venue-agent/agent.toml, or the unit's state directory exists) ``/var/lib/<StateDirectory>/``,
  else the user data directory. Commands say which one they used.
"""

from __future__ import annotations

import errno
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from agent.domain import config, credentials

STATE_ROOT = Path("/var/lib")


@dataclass(frozen=True)
class SecretFile:
    """One ``*_file`` key: where it points, and why this process or the service could not read it (None: fine)."""

    key: str
    value: str
    located: credentials.Located
    error: str | None = None
    denied: bool = False
    service_problem: str | None = None

    def describe(self) -> str:
        """Return ``<path> (<how it was found>)`` for people."""
        return f"{self.located.path} ({self.located.how})"


@dataclass
class Context:
    """The loaded config (secrets read where possible), its file, the secrets' fates and the outbox to use."""

    settings: config.Settings
    path: Path
    secrets: list[SecretFile] = field(default_factory=list)
    unit: credentials.Unit = field(default_factory=credentials.Unit)
    outbox_source: str = ""

    @property
    def outbox(self) -> Path:
        """Return the outbox file the commands use (also in ``settings.storage.path``)."""
        return self.settings.storage.path

    def unreadable(self, prefix: str) -> list[SecretFile]:
        """Return the secrets under the dotted ``prefix`` (``intake``, ``pos``) this process could not read."""
        return [s for s in self.secrets if s.error and (s.key == prefix or s.key.startswith(prefix + "."))]

    def announce_outbox(self) -> None:
        """Say on stderr which outbox file the command opens itself."""
        sys.stderr.write(f"venue-agent: outbox {self.outbox} ({self.outbox_source})\n")

    def token_hint(self) -> str:
        """Return why the local API may have refused this user's request (401), and what to do."""
        unread = self.unreadable("intake")
        if unread:
            return f"this user cannot read intake.token_file: {unread[0].error}; run the command with sudo"
        if self.settings.intake.token is None:
            return f"{self.path} sets no intake token but the agent wants one: is it the service's config?"
        return f"the agent refused the token from {self.path}: is it the service's config?"


def load(explicit: str | os.PathLike[str] | None) -> Context:
    """Load the config for an operator command: secrets read one by one, the service's outbox chosen."""
    with config.secret_files_deferred():
        settings, path = config.load_settings(explicit)
    unit = credentials.installed_unit()
    secrets = [_read(key, section, secret, unit) for key, section, secret in _secret_keys(settings)]
    outbox, source = outbox_location(settings, path, unit, os.environ)
    settings.storage.path = outbox
    return Context(settings, path, secrets, unit, source)


def _secret_keys(model: BaseModel, prefix: str = "") -> list[tuple[str, BaseModel, str]]:
    """Return (dotted ``*_file`` key, its section, the secret's key) for every secret file set in ``model``."""
    found: list[tuple[str, BaseModel, str]] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        dotted = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            found.extend(_secret_keys(value, dotted + "."))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, BaseModel):
                    found.extend(_secret_keys(item, f"{dotted}.{index}."))
        elif name.endswith("_file") and name[:-5] in config.SECRET_KEYS and isinstance(value, str):
            found.append((dotted, model, name[:-5]))
    return found


def _read(key: str, section: BaseModel, secret: str, unit: credentials.Unit) -> SecretFile:
    value: str = getattr(section, f"{secret}_file")
    located = credentials.locate(value, unit=unit)
    problem = credentials.service_sees(value, located, unit)
    try:
        read: SecretStr = config.read_secret_file(value, secret)
    except ValueError as exc:
        return SecretFile(key, value, located, str(exc), _denied(located.path), problem)
    object.__setattr__(section, secret, read)
    return SecretFile(key, value, located, None, False, problem)


def _denied(path: Path) -> bool:
    try:
        with path.open("rb"):
            return False
    except PermissionError:
        return True
    except OSError as exc:
        return exc.errno == errno.EACCES


def outbox_location(
    settings: config.Settings, config_path: Path, unit: credentials.Unit, environ: Any
) -> tuple[Path, str]:
    """Return the outbox file an operator command should open, and why that one (see the module docstring)."""
    if "path" in settings.storage.model_fields_set:
        return settings.storage.path, f"storage.path in {config_path}"
    state = environ.get("STATE_DIRECTORY")
    if state:
        return settings.storage.path, "$STATE_DIRECTORY"
    state_dir = STATE_ROOT / (unit.state_directory or "venue-agent")
    if config_path == config.SYSTEM_CONFIG or state_dir.is_dir():
        return state_dir / "outbox.db", f"the service's state directory {state_dir}"
    return settings.storage.path, "the user data directory: no installed service found"
