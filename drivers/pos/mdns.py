"""Find a POS that announces itself on the LAN as a ``_venue-pos._tcp`` service (mDNS / zeroconf)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog
from zeroconf import Error as ZeroconfError
from zeroconf import InterfaceChoice, IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from drivers.pos.errors import PosResolveError

SERVICE_TYPE = "_venue-pos._tcp.local."
DEFAULT_PATH = "/orders"
MDNS_SCHEME = "mdns:"

log = structlog.get_logger("venue_agent.pos.mdns")


class MdnsResolver:
    """Resolve ``mdns:<instance>`` names to ``http://<ipv4>:<port><path>`` and remember the answer."""

    def __init__(
        self,
        *,
        timeout_seconds: float = 3.0,
        interfaces: Sequence[str] | None = None,
        zeroconf: AsyncZeroconf | None = None,
    ) -> None:
        self._timeout_ms = timeout_seconds * 1000
        self._interfaces = list(interfaces) if interfaces is not None else None
        self._zeroconf = zeroconf
        self._owns_zeroconf = zeroconf is None
        self._cache: dict[str, str] = {}
        self._lock = asyncio.Lock()

    async def resolve(self, name: str) -> str:
        """Return the POS's URL (cached), or raise ``PosResolveError`` when nobody answers in time."""
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        async with self._lock:
            cached = self._cache.get(name)
            if cached is not None:
                return cached
            url = await self._lookup(name)
            self._cache[name] = url
            log.info("pos_mdns_resolved", instance=name, url=url)
            return url

    def forget(self, name: str) -> None:
        """Drop the cached URL so the next ``resolve`` asks the network again (after a connect error)."""
        self._cache.pop(name, None)

    async def aclose(self) -> None:
        """Stop zeroconf if this resolver started it."""
        zeroconf, self._zeroconf = self._zeroconf, None
        if zeroconf is not None and self._owns_zeroconf:
            await zeroconf.async_close()

    async def _lookup(self, name: str) -> str:
        full_name = name if name.endswith(SERVICE_TYPE) else f"{name}.{SERVICE_TYPE}"
        try:
            zeroconf = self._ensure_zeroconf()
            info = AsyncServiceInfo(SERVICE_TYPE, full_name)
            found = await info.async_request(zeroconf.zeroconf, self._timeout_ms)
        except (OSError, ValueError, ZeroconfError) as exc:
            log.warning("pos_mdns_failed", instance=name, error=str(exc))
            msg = f"POS {name!r} could not be looked up on the network (mDNS): {exc}"
            raise PosResolveError(msg) from exc
        addresses = info.parsed_addresses(IPVersion.V4Only) if found else []
        if not found or not addresses or not info.port:
            log.warning("pos_mdns_not_found", instance=name)
            msg = f"POS {name!r} not found on the network (mDNS)"
            raise PosResolveError(msg)
        path = info.decoded_properties.get("path") or DEFAULT_PATH
        if not path.startswith("/"):
            path = f"/{path}"
        return f"http://{addresses[0]}:{info.port}{path}"

    def _ensure_zeroconf(self) -> AsyncZeroconf:
        if self._zeroconf is None:
            interfaces = self._interfaces if self._interfaces is not None else InterfaceChoice.All
            self._zeroconf = AsyncZeroconf(interfaces=interfaces)
        return self._zeroconf
