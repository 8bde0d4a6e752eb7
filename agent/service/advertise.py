"""Announce the agent's intake API on the LAN as ``_venue-agent._tcp`` (mDNS), without ever stopping the agent."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable

import ifaddr
import structlog
from zeroconf import Error as ZeroconfError
from zeroconf import InterfaceChoice, IPVersion, NonUniqueNameException
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from agent import __version__

log = structlog.get_logger("venue_agent.advertise")

SERVICE_TYPE = "_venue-agent._tcp.local."
API_PATH = "/v1"
STOP_TIMEOUT_SECONDS = 3.0

ZeroconfFactory = Callable[[], AsyncZeroconf]


class Advertiser:
    """Announces ``venue-agent-<venue id>._venue-agent._tcp.local.`` on the intake port; failures are only logged.

    The zeroconf instance (made here or by ``zeroconf_factory``) belongs to the advertiser and is closed by ``stop``.
    """

    def __init__(self, *, venue_id: str, host: str, port: int, zeroconf_factory: ZeroconfFactory | None = None) -> None:
        self.venue_id = venue_id
        self.host = host
        self.port = port
        self.instance = f"venue-agent-{venue_id}"
        self.name = f"{self.instance}.{SERVICE_TYPE}"
        self._factory = zeroconf_factory
        self._zeroconf: AsyncZeroconf | None = None
        self._task: asyncio.Task[bool] | None = None

    async def start(self) -> None:
        """Begin announcing in the background (probing takes about a second); never raises."""
        if self._zeroconf is not None:
            return
        try:
            addresses, interfaces, ip_version = _where(self.host)
            info = AsyncServiceInfo(
                SERVICE_TYPE,
                self.name,
                port=self.port,
                parsed_addresses=addresses,
                properties={"venue": self.venue_id, "version": __version__, "api": API_PATH},
                server=f"{self.instance}.local.",
            )
            self._zeroconf = (
                self._factory() if self._factory is not None else AsyncZeroconf(interfaces, ip_version=ip_version)
            )
        except (OSError, ValueError, ZeroconfError) as exc:
            self._failed(exc)
            return
        self._task = asyncio.create_task(self._register(self._zeroconf, info), name="venue-agent mdns advertise")

    async def wait_registered(self) -> bool:
        """Wait for the background registration; True when the service is announced."""
        task = self._task
        if task is None:
            return False
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():  # stop() came first
                return False
            raise

    async def stop(self) -> None:
        """Withdraw the announcement (goodbye packets) and close zeroconf; idempotent, never raises."""
        task, self._task = self._task, None
        zeroconf, self._zeroconf = self._zeroconf, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if zeroconf is None:
            return
        try:
            # async_close sends the goodbyes for every registered service before closing the sockets.
            await asyncio.wait_for(zeroconf.async_close(), timeout=STOP_TIMEOUT_SECONDS)
        except Exception as exc:  # shutting down: a failed goodbye must not keep the agent from stopping
            log.warning("mdns_advertise_stop_failed", instance=self.instance, error=str(exc) or type(exc).__name__)
        else:
            log.info("mdns_advertise_stopped", instance=self.instance)

    async def _register(self, zeroconf: AsyncZeroconf, info: AsyncServiceInfo) -> bool:
        try:
            announced = await zeroconf.async_register_service(info)
            await announced
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # advertising is a convenience: whatever goes wrong, the agent keeps running
            self._failed(exc)
            return False
        log.info(
            "mdns_advertised",
            instance=self.instance,
            service=SERVICE_TYPE,
            port=self.port,
            addresses=info.parsed_addresses(),
        )
        return True

    def _failed(self, exc: BaseException) -> None:
        error = str(exc) or type(exc).__name__
        if isinstance(exc, NonUniqueNameException):
            error = f"{self.name} is already announced on this network (another agent with venue id {self.venue_id}?)"
        log.warning("mdns_advertise_failed", instance=self.instance, port=self.port, error=error)


def _where(host: str) -> tuple[list[str], list[str] | InterfaceChoice, IPVersion]:
    """Return the addresses to announce, the interfaces to answer on and the IP version for ``host``."""
    if host == "localhost":
        host = "127.0.0.1"
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        address = None
    if address is not None and not address.is_unspecified:
        version = IPVersion.V4Only if address.version == 4 else IPVersion.V6Only
        return [str(address)], [str(address)], version
    # Listening on every interface (or a host name): announce every non-loopback IPv4 address.
    addresses = sorted(
        {
            str(ip.ip)
            for adapter in ifaddr.get_adapters()
            for ip in adapter.ips
            if ip.is_IPv4 and not ipaddress.ip_address(str(ip.ip)).is_loopback
        }
    )
    if not addresses:
        msg = "no network address to announce (no interface is up)"
        raise OSError(msg)
    return addresses, InterfaceChoice.All, IPVersion.V4Only
