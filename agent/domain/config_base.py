"""What every config table shares: unknown keys refused, ``*_file`` secrets read, problems keyed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

from agent.domain import credentials

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


def keyed(problems: dict[str, str]) -> ValueError:
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
                raise keyed({file_key: f"give {key} or {file_key}, not both"})
            if _defer_secret_files.get():
                continue
            try:
                object.__setattr__(self, key, read_secret_file(file_value, key))
            except ValueError as exc:
                raise keyed({file_key: str(exc)}) from None
        return self
