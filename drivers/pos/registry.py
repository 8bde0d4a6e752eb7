"""The POS driver registry: ``pos.driver`` names a factory that builds the driver from the settings."""

from __future__ import annotations

from collections.abc import Callable

from agent.config import Settings
from drivers.pos.base import Driver
from drivers.pos.errors import PosConfigError
from drivers.pos.http import HttpDriver

Factory = Callable[[Settings], Driver]


def _http(settings: Settings) -> Driver:
    http = settings.pos.http
    if http is None:
        msg = "pos.http.url: required when driver = 'http'"
        raise PosConfigError(msg)
    return HttpDriver(
        url=http.url,
        timeout_seconds=settings.pos.timeout_seconds,
        hmac_secret=http.hmac_secret.get_secret_value().encode() if http.hmac_secret else None,
        token=http.token.get_secret_value() if http.token else None,
    )


def _simulator(settings: Settings) -> Driver:
    sim = settings.pos.simulator
    url = sim.url if sim else "http://127.0.0.1:8788/orders"
    secret = sim.hmac_secret.get_secret_value().encode() if sim and sim.hmac_secret else None
    return HttpDriver(url=url, timeout_seconds=settings.pos.timeout_seconds, hmac_secret=secret, name="simulator")


def _not_yet(name: str) -> Factory:
    def factory(settings: Settings) -> Driver:
        msg = f"pos.driver: the {name!r} driver is not available in this version (use 'http' or 'simulator')"
        raise PosConfigError(msg)

    return factory


DRIVERS: dict[str, Factory] = {
    "http": _http,
    "simulator": _simulator,
    "lightspeed_k": _not_yet("lightspeed_k"),
    "square": _not_yet("square"),
}


def build_driver(settings: Settings) -> Driver:
    """Return the driver ``pos.driver`` names, or raise PosConfigError saying why it cannot be built."""
    return DRIVERS[settings.pos.driver](settings)
