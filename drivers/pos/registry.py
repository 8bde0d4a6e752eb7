"""The POS driver registry: ``pos.driver`` names a factory that builds the driver from the settings."""

from __future__ import annotations

from collections.abc import Callable

from agent.domain.config import Settings
from drivers.pos.base import Driver, KeyValueStore
from drivers.pos.errors import PosConfigError
from drivers.pos.http import HttpDriver
from drivers.pos.lightspeed_k import LightspeedKDriver, check_settings
from drivers.pos.square import SquareDriver

Factory = Callable[[Settings, KeyValueStore | None], Driver]


def _http(settings: Settings, store: KeyValueStore | None) -> Driver:
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


def _simulator(settings: Settings, store: KeyValueStore | None) -> Driver:
    sim = settings.pos.simulator
    url = sim.url if sim else "http://127.0.0.1:8788/orders"
    secret = sim.hmac_secret.get_secret_value().encode() if sim and sim.hmac_secret else None
    return HttpDriver(url=url, timeout_seconds=settings.pos.timeout_seconds, hmac_secret=secret, name="simulator")


def _square(settings: Settings, store: KeyValueStore | None) -> Driver:
    square = settings.pos.square
    if square is None or not square.location_id:
        msg = "pos.square.location_id: required when driver = 'square'"
        raise PosConfigError(msg)
    if square.access_token is None or not square.access_token.get_secret_value():
        msg = "pos.square.access_token: required when driver = 'square' (or access_token_file)"
        raise PosConfigError(msg)
    return SquareDriver(
        base_url=square.base_url,
        location_id=square.location_id,
        access_token=square.access_token.get_secret_value(),
        square_version=square.square_version,
        catalog=square.catalog,
        timeout_seconds=settings.pos.timeout_seconds,
        phone_region=settings.venue.country,
    )


def _lightspeed_k(settings: Settings, store: KeyValueStore | None) -> Driver:
    # store may be None (config check): the driver fails only when it needs a token, not when built.
    return LightspeedKDriver(
        check_settings(settings.pos.lightspeed_k),
        tz=settings.venue.tz,
        timeout_seconds=settings.pos.timeout_seconds,
        store=store,
        confirm_timeout_seconds=settings.injection.confirm_timeout_seconds,
        phone_region=settings.venue.country,
    )


def _not_yet(name: str) -> Factory:
    def factory(settings: Settings, store: KeyValueStore | None) -> Driver:
        msg = f"pos.driver: the {name!r} driver is not available in this version (use 'http' or 'simulator')"
        raise PosConfigError(msg)

    return factory


DRIVERS: dict[str, Factory] = {
    "http": _http,
    "simulator": _simulator,
    "lightspeed_k": _lightspeed_k,
    "square": _square,
}


def build_driver(settings: Settings, *, store: KeyValueStore | None = None) -> Driver:
    """Return the driver ``pos.driver`` names, or raise PosConfigError saying why it cannot be built.

    ``store`` is where a driver keeps durable state (the outbox's key/value table); drivers that need
    it (OAuth token rotation) raise PosConfigError without one.
    """
    return DRIVERS[settings.pos.driver](settings, store)
