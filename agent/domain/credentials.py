"""Where a relative ``*_file`` secret is read from, for the service and for operator commands alike.

The service reads ``$CREDENTIALS_DIRECTORY/<name>``, a directory systemd fills from the unit's ``LoadCredential=``
lines. A technician's command (``sudo venue-agent status``) gets no such directory, so it reads the same source the
unit would. The search, in order (the first that applies wins; nothing else is tried after it):

1. ``$CREDENTIALS_DIRECTORY/<name>`` when that variable is set (the service itself, or set by hand);
2. the file the installed unit hands over as credential ``<name>``: ``LoadCredential=<name>:<path>`` in
   ``venue-agent.service`` or its drop-ins (``UNIT_DIRS``); a relative or missing ``<path>`` is looked up in
   systemd's credential stores (``CREDSTORE_DIRS``), and so is a name an ``ImportCredential=`` glob matches;
3. ``/etc/venue-agent/credentials/<name>``, where docs/install.md puts them (``CREDENTIALS_DIR``).

An absolute ``*_file`` is read as it is. Nothing here reads a secret: it only says where one is.
"""

from __future__ import annotations

import fnmatch
import os
import pwd
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

UNIT_NAME = "venue-agent.service"
SERVICE_USER = "venue-agent"
# systemd's system unit search path, highest priority first (systemd.unit(5)); /lib is /usr/lib on merged-/usr.
UNIT_DIRS: tuple[Path, ...] = (
    Path("/etc/systemd/system"),
    Path("/run/systemd/system"),
    Path("/usr/local/lib/systemd/system"),
    Path("/usr/lib/systemd/system"),
    Path("/lib/systemd/system"),
)
# Where LoadCredential=<name> (no path, or a relative one) and ImportCredential= look (systemd.exec(5)).
CREDSTORE_DIRS: tuple[Path, ...] = (
    Path("/etc/credstore"),
    Path("/run/credstore"),
    Path("/usr/local/lib/credstore"),
    Path("/usr/lib/credstore"),
)
CREDENTIALS_DIR = Path("/etc/venue-agent/credentials")
# The unit's sandbox hides these from the service: ProtectHome=yes and PrivateTmp=yes.
HIDDEN_FROM_SERVICE: tuple[tuple[str, str], ...] = (
    ("/home/", "ProtectHome=yes"),
    ("/root/", "ProtectHome=yes"),
    ("/run/user/", "ProtectHome=yes"),
    ("/tmp/", "PrivateTmp=yes"),  # noqa: S108 - a path the service cannot see, not a file made here
    ("/var/tmp/", "PrivateTmp=yes"),  # noqa: S108
)


@dataclass(frozen=True)
class UnitCredential:
    """One ``LoadCredential[Encrypted]=`` line: the credential's name, the source as written, and where it was."""

    name: str
    source: str
    origin: Path
    encrypted: bool = False


@dataclass(frozen=True)
class Unit:
    """What the installed unit (with its drop-ins) says about credentials and state; ``files`` empty: none installed."""

    files: tuple[Path, ...] = ()
    loaded: Mapping[str, UnitCredential] = field(default_factory=dict)
    set_names: frozenset[str] = frozenset()
    imports: tuple[str, ...] = ()
    state_directory: str | None = None

    @property
    def installed(self) -> bool:
        """Whether a ``venue-agent.service`` was found."""
        return bool(self.files)

    def provides(self, name: str) -> bool:
        """Whether the service gets a credential called ``name`` (loaded, set inline or imported)."""
        return name in self.loaded or name in self.set_names or any(fnmatch.fnmatch(name, g) for g in self.imports)


@dataclass(frozen=True)
class Located:
    """Where a ``*_file`` value points: the path, how it was chosen, and every path considered."""

    path: Path
    how: str
    searched: tuple[Path, ...] = ()
    encrypted: bool = False


def _logical_lines(text: str) -> Iterable[str]:
    """Yield the unit file's lines with backslash continuations joined and comments dropped."""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""
    if pending:
        yield pending


_SPECIFIERS = {"%%": "%", "%E": "/etc", "%S": "/var/lib", "%C": "/var/cache", "%t": "/run", "%L": "/var/log"}


def _expand(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        pair = value[i : i + 2]
        if pair in _SPECIFIERS:
            out.append(_SPECIFIERS[pair])
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def parse_unit(files: Iterable[tuple[Path, str]]) -> Unit:
    """Read the ``[Service]`` credential and state settings of a unit file and its drop-ins, in systemd's order.

    A later assignment of a name replaces an earlier one; an empty assignment resets the list (systemd.exec(5)).
    """
    loaded: dict[str, UnitCredential] = {}
    set_names: set[str] = set()
    imports: list[str] = []
    state: str | None = None
    paths: list[Path] = []
    for path, text in files:
        paths.append(path)
        section = ""
        for line in _logical_lines(text):
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1].strip()
                continue
            key, sep, value = line.partition("=")
            if not sep or section != "Service":
                continue
            key, value = key.strip(), _expand(value.strip())
            if key in ("LoadCredential", "LoadCredentialEncrypted"):
                if not value:
                    loaded.clear()
                    continue
                name, _, source = value.partition(":")
                loaded[name.strip()] = UnitCredential(name.strip(), source.strip(), path, key.endswith("Encrypted"))
            elif key in ("SetCredential", "SetCredentialEncrypted"):
                if value:
                    set_names.add(value.partition(":")[0])
                else:
                    set_names.clear()
            elif key == "ImportCredential":
                if value:
                    imports.extend(value.split())
                else:
                    imports.clear()
            elif key == "StateDirectory":
                state = value.split()[0].partition(":")[0] if value else None
    return Unit(tuple(paths), loaded, frozenset(set_names), tuple(imports), state)


def unit_files(dirs: Iterable[Path] | None = None) -> list[Path]:
    """Return the installed unit file and its drop-ins (a drop-in's name in a higher directory masks lower ones)."""
    dirs = tuple(UNIT_DIRS if dirs is None else dirs)
    main = next((d / UNIT_NAME for d in dirs if (d / UNIT_NAME).is_file()), None)
    if main is None:
        return []
    dropins: dict[str, Path] = {}
    for directory in reversed(dirs):
        for conf in sorted((directory / f"{UNIT_NAME}.d").glob("*.conf")):
            dropins[conf.name] = conf
    return [main, *(dropins[name] for name in sorted(dropins))]


def installed_unit() -> Unit:
    """Return what the installed ``venue-agent.service`` says (an empty Unit when there is none or it is unreadable)."""
    texts = []
    for path in unit_files():
        try:
            texts.append((path, path.read_text(encoding="utf-8", errors="replace")))
        except OSError:
            continue
    return parse_unit(texts)


def _in_credstore(name: str) -> tuple[Path, tuple[Path, ...]]:
    candidates = tuple(d / name for d in CREDSTORE_DIRS)
    return next((p for p in candidates if p.exists()), candidates[0]), candidates


def locate(value: str, *, environ: Mapping[str, str] | None = None, unit: Unit | None = None) -> Located:
    """Return where the ``*_file`` value ``value`` points, following the search order in this module's docstring."""
    environ = os.environ if environ is None else environ
    path = Path(value)
    if path.is_absolute():
        return Located(path, "absolute path")
    directory = environ.get("CREDENTIALS_DIRECTORY")
    if directory:
        return Located(Path(directory) / path, "$CREDENTIALS_DIRECTORY")
    unit = installed_unit() if unit is None else unit
    credential = unit.loaded.get(value)
    if credential is not None:
        where = f"LoadCredential{'Encrypted' if credential.encrypted else ''}={value} in {credential.origin}"
        if credential.source.startswith("/"):
            return Located(Path(credential.source), where, encrypted=credential.encrypted)
        found, searched = _in_credstore(credential.source or value)
        return Located(found, f"{where}, from the credential store", searched, credential.encrypted)
    if any(fnmatch.fnmatch(value, g) for g in unit.imports):
        found, searched = _in_credstore(value)
        return Located(found, f"ImportCredential= in {UNIT_NAME}, from the credential store", searched)
    how = f"{CREDENTIALS_DIR}/ (no LoadCredential={value} in an installed {UNIT_NAME})"
    return Located(CREDENTIALS_DIR / path, how)


def service_sees(value: str, located: Located, unit: Unit) -> str | None:
    """Return why the installed service would not get this secret, or None (fine, or no unit to judge by)."""
    if not unit.installed:
        return None
    if not Path(value).is_absolute():
        if unit.provides(value):
            return None
        return (
            f"the service gets no credential {value!r}: add 'LoadCredential={value}:{CREDENTIALS_DIR}/{value}'"
            f" to a drop-in (sudo systemctl edit venue-agent)"
        )
    for prefix, setting in HIDDEN_FROM_SERVICE:
        if str(located.path).startswith(prefix):
            return f"{located.path} is hidden from the service by {setting}: keep secrets in {CREDENTIALS_DIR}/"
    return _user_cannot_read(located.path)


def _user_cannot_read(path: Path) -> str | None:
    """Return why the service user cannot read ``path`` by its mode bits, or None (can, or nothing to judge by)."""
    try:
        user = pwd.getpwnam(SERVICE_USER)
        info = path.stat()
    except (KeyError, OSError):
        return None
    groups = {user.pw_gid, *(g for g in os.getgrouplist(SERVICE_USER, user.pw_gid))}
    mode = info.st_mode
    if info.st_uid == user.pw_uid:
        readable = bool(mode & stat.S_IRUSR)
    elif info.st_gid in groups:
        readable = bool(mode & stat.S_IRGRP)
    else:
        readable = bool(mode & stat.S_IROTH)
    if readable:
        return None
    return (
        f"{path} is not readable by the service's user {SERVICE_USER} (mode {stat.filemode(mode)}): give it a"
        f" relative name and hand it over with LoadCredential= (root-only files stay root-only)"
    )
