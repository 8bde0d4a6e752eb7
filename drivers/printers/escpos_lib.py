"""The one place that imports python-escpos 3.1, with its import side effects contained.

Importing ``escpos`` costs about 0.4 s, calls ``logging.basicConfig()`` and leaves an empty
``/tmp/tmpXXXX`` directory behind on every import (python-escpos 3.1's ``capabilities.py``), so nothing
imports it at module level: every helper here calls ``load_escpos()`` first.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import platformdirs

from drivers.printers.errors import PrinterConfigError

_PICKLE_ENV = "ESCPOS_CAPABILITIES_PICKLE_DIR"
_CAPABILITIES_MODULE = "escpos.capabilities"
_import_lock = threading.Lock()


@functools.cache
def load_escpos() -> ModuleType:
    """Import python-escpos once and return ``escpos.printer`` (Dummy, Network, Serial, Usb, File).

    The capabilities pickle goes to ``$CACHE_DIRECTORY`` or the user cache directory, no temporary
    directory is left behind, and the root logger keeps the handlers it had before the import.
    """
    with _import_lock:
        if _CAPABILITIES_MODULE in sys.modules:
            return importlib.import_module("escpos.printer")
        cache = _cache_dir()
        root = logging.getLogger()
        handlers_before = list(root.handlers)
        env_before = os.environ.get(_PICKLE_ENV)
        real_mkdtemp = tempfile.mkdtemp

        def mkdtemp(suffix: str | None = None, prefix: str | None = None, dir: str | None = None) -> str:
            # capabilities.py evaluates mkdtemp() even when the env var is set; only that call is redirected,
            # another thread creating a real temporary directory meanwhile still gets one.
            if sys._getframe(1).f_globals.get("__name__") == _CAPABILITIES_MODULE:
                return str(cache)
            return real_mkdtemp(suffix, prefix, dir)

        os.environ[_PICKLE_ENV] = str(cache)
        tempfile.mkdtemp = mkdtemp  # type: ignore[assignment]
        try:
            module = importlib.import_module("escpos.printer")
        finally:
            tempfile.mkdtemp = real_mkdtemp
            if env_before is None:
                os.environ.pop(_PICKLE_ENV, None)
            else:
                os.environ[_PICKLE_ENV] = env_before
            if not handlers_before:
                for handler in list(root.handlers):
                    root.removeHandler(handler)
        return module


def profile_names() -> list[str]:
    """Return the printer profile names python-escpos knows, sorted case-insensitively."""
    return sorted(_capabilities()["profiles"], key=str.lower)


def check_profile(name: str) -> None:
    """Raise ``PrinterConfigError`` naming the known profiles unless ``name`` is one."""
    if name not in _capabilities()["profiles"]:
        msg = f"unknown printer profile {name!r}; known: {', '.join(profile_names())}"
        raise PrinterConfigError(msg)


def profile_code_pages(name: str) -> dict[str, int]:
    """Return the profile's code pages as ``{"CP858": 19, …}`` (ESC t numbers), ``Unknown`` slots left out."""
    check_profile(name)
    pages: Mapping[str, str] = _capabilities()["profiles"][name].get("codePages", {})
    result: dict[str, int] = {}
    for number, page in sorted(pages.items(), key=lambda kv: int(kv[0])):
        if page != "Unknown":
            result.setdefault(page, int(number))
    return result


def profile_can_cut(name: str) -> bool:
    """Return whether the profile has a full or a partial cutter."""
    check_profile(name)
    features: Mapping[str, bool] = _capabilities()["profiles"][name].get("features", {})
    return bool(features.get("paperFullCut") or features.get("paperPartCut"))


def profile_has(name: str, feature: str) -> bool:
    """Return whether the profile lists ``feature`` (``qrCode``, ``bitImageRaster``, ...) as supported."""
    check_profile(name)
    features: Mapping[str, bool] = _capabilities()["profiles"][name].get("features", {})
    return bool(features.get(feature))


def new_dummy(profile: str, encoding: str, number: int) -> Any:
    """Return a python-escpos ``Dummy`` for ``profile`` that writes text in ``encoding`` and never sends ESC t.

    ``encoding`` is a python-escpos name (``CP858``); it need not be in the profile's table, since a
    technician may know the unit has it, so the encoder is given that one page at ``number``.
    """
    check_profile(profile)
    printer = load_escpos()
    encoder = importlib.import_module("escpos.magicencode").Encoder({encoding: number})
    magic = {"encoding": encoding, "disabled": True, "encoder": encoder}
    return printer.Dummy(profile=profile, magic_encode_args=magic)


def _capabilities() -> Mapping[str, Any]:
    load_escpos()
    data: Mapping[str, Any] = sys.modules[_CAPABILITIES_MODULE].CAPABILITIES
    return data


def _cache_dir() -> Path:
    """Return an existing writable directory for the capabilities pickle, creating it if needed."""
    candidates: list[Path] = []
    systemd = os.environ.get("CACHE_DIRECTORY")
    if systemd:
        # systemd joins several CacheDirectory= entries with colons.
        candidates.append(Path(systemd.split(":")[0]))
    candidates.append(Path(platformdirs.user_cache_dir("venue-agent")) / "escpos")
    candidates.append(Path(tempfile.gettempdir()) / f"venue-agent-escpos-{os.getuid()}")
    for path in candidates:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK | os.X_OK):
            return path
    msg = f"no writable cache directory for python-escpos among {', '.join(map(str, candidates))}"
    raise PrinterConfigError(msg)
