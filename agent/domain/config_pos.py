"""``[pos]`` and one sub-table per POS driver, with what each driver requires (docs/<driver>.md)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from agent.domain.config_base import Section, keyed


class AccountProfiles(Section):
    """K-Series order profile code per fulfilment type."""

    pickup: str = "storekit"
    delivery: str = "storekit"
    dine_in: str = "storekit"


LIGHTSPEED_SKU_MAX = 25
# Lightspeed keeps trying to deliver an order to the till for maxTimeToAttemptOrderDeliverToPos, at least
# 60000 ms (Order and Pay OAS: "The minimum value is 60000ms (1 minute)").
LIGHTSPEED_MIN_CONFIRM_SECONDS = 60


class LightspeedKSettings(Section):
    """``[pos.lightspeed_k]``: Lightspeed Restaurant K-Series (docs/lightspeed-k.md)."""

    base_url: str = "https://api.lsk.lightspeed.app"
    business_location_id: int | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    client_secret_file: str | None = None
    refresh_token: SecretStr | None = None
    refresh_token_file: str | None = None
    endpoint_id: str | None = None
    account_profiles: AccountProfiles = Field(default_factory=AccountProfiles)
    delivery_fee_sku: str = "STOREKIT_DELIVERY"
    discount_sku: str = "STOREKIT_DISCOUNT"
    service_charge_sku: str = "STOREKIT_SERVICE_CHARGE"
    payment_method: str = "STOREKIT"
    native_discounts: bool = False
    # the native discount codes (pos_ids) that are percentages in the POS, so they may ride on
    # every item line; any other code is taken as an amount and goes on one line only (README, Lightspeed).
    percentage_discount_codes: list[str] = Field(default_factory=list)
    webhook_username: str | None = None
    webhook_password: SecretStr | None = None
    webhook_password_file: str | None = None
    check_readiness: bool = True

    @field_validator("delivery_fee_sku", "discount_sku", "service_charge_sku")
    @classmethod
    def _k_series_sku(cls, value: str) -> str:
        # An item line's sku is 1-25 characters (Order and Pay OAS, apeToGoOrderItemLine.sku maxLength 25),
        # counted in UTF-16 units as the Java API counts them.
        units = len(value) + sum(1 for ch in value if ord(ch) > 0xFFFF)
        if not 1 <= units <= LIGHTSPEED_SKU_MAX:
            msg = f"must be 1 to {LIGHTSPEED_SKU_MAX} characters: Lightspeed K-Series refuses a longer item SKU"
            raise ValueError(msg)
        return value


class SquareSettings(Section):
    """``[pos.square]``: Square Orders API (docs/square.md)."""

    base_url: str = "https://connect.squareup.com"
    location_id: str | None = None
    access_token: SecretStr | None = None
    access_token_file: str | None = None
    square_version: str = "2025-01-23"
    catalog: dict[str, str] = Field(default_factory=dict)

    @field_validator("catalog")
    @classmethod
    def _catalog_ids_square_takes(cls, value: dict[str, str]) -> dict[str, str]:
        # OrderLineItem/OrderLineItemModifier.catalog_object_id: maxLength 192 (Square's api.json); an id
        # cannot be shortened, so a longer one is a config error rather than a refused order.
        bad = {sku: object_id for sku, object_id in value.items() if not object_id or len(object_id) > 192}
        if bad:
            shown = ", ".join(sorted(bad))
            msg = f"catalog object ids must be 1-192 characters (Square's limit); not so for {shown}"
            raise ValueError(msg)
        return value


class HttpPosSettings(Section):
    """``[pos.http]``: a POS terminal or in-house POS on the LAN (docs/http-pos.md)."""

    url: Annotated[str, Field(min_length=1)]
    hmac_secret: SecretStr | None = None
    hmac_secret_file: str | None = None
    token: SecretStr | None = None
    token_file: str | None = None

    @field_validator("url")
    @classmethod
    def _http_or_mdns(cls, value: str) -> str:
        if not re.match(r"^(https?://[^\s/]+.*|mdns:\S.*)$", value):
            msg = f"{value!r} is neither an http(s):// URL nor mdns:<instance name>"
            raise ValueError(msg)
        return value


class SimulatorPosSettings(Section):
    """``[pos.simulator]``: where ``venue-agent pos-sim`` listens."""

    url: str = "http://127.0.0.1:8788/orders"
    hmac_secret: SecretStr | None = None
    hmac_secret_file: str | None = None


DRIVER_REQUIRED: dict[str, tuple[str, ...]] = {
    "http": ("url",),
    "lightspeed_k": ("business_location_id", "client_id", "client_secret", "refresh_token", "endpoint_id"),
    "square": ("location_id", "access_token"),
}


def driver_requirements(driver: object, pos: dict[str, Any]) -> dict[str, str]:
    """Return the keys the chosen driver needs that its sub-table lacks (relative to ``pos``)."""
    if not isinstance(driver, str) or driver not in DRIVER_REQUIRED:
        return {}
    table = pos.get(driver)
    table = table if isinstance(table, dict) else {}
    return {
        f"{driver}.{key}": f"required when driver = {driver!r}"
        for key in DRIVER_REQUIRED[driver]
        if table.get(key) is None and table.get(f"{key}_file") is None
    }


def confirm_timeout_problem(driver: object, timeout: object) -> str | None:
    """Return why ``injection.confirm_timeout_seconds`` is too short for ``driver``, or None."""
    if driver != "lightspeed_k" or not isinstance(timeout, int | float) or isinstance(timeout, bool):
        return None
    if timeout >= LIGHTSPEED_MIN_CONFIRM_SECONDS:
        return None
    return (
        f"must be at least {LIGHTSPEED_MIN_CONFIRM_SECONDS} with pos.driver = 'lightspeed_k' (got {timeout:g}):"
        " Lightspeed keeps trying to deliver an order to the till for maxTimeToAttemptOrderDeliverToPos, at"
        " least 60000 ms, so a shorter wait prints the fallback ticket while the till may still get the"
        " order, and the dish is made twice"
    )


PosDriverName = Literal["lightspeed_k", "square", "http", "simulator"]


class PosSettings(Section):
    """``[pos]``: which POS the orders go to and how gently."""

    driver: PosDriverName
    timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 10
    rate_limit_per_second: Annotated[float, Field(gt=0, le=10000)] = 5
    lightspeed_k: LightspeedKSettings | None = None
    square: SquareSettings | None = None
    http: HttpPosSettings | None = None
    simulator: SimulatorPosSettings | None = None

    @model_validator(mode="after")
    def _driver_table_present(self) -> PosSettings:
        problems = driver_requirements(self.driver, self.model_dump(exclude_none=True))
        if problems:
            raise keyed(problems)
        if self.driver == "simulator" and self.simulator is None:
            self.simulator = SimulatorPosSettings()
        return self
