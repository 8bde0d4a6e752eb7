"""OAuth2 refresh-token rotation for a POS API whose refresh tokens are single-use (Lightspeed K-Series).

Exceptions (both carry a ``reason`` that never contains a token or the client secret)::

    TokenError                  root
    ├── AuthRequired            a human must act: re-authorise (refresh token spent, expired, revoked or lost)
    │                           or fix client_id/client_secret (the endpoint refused the client: invalid_client)
    └── TokenEndpointUnavailable  the token endpoint could not be asked or answered badly: try again later

The request (RFC 6749 §6): ``POST /oauth/token`` with the form ``grant_type=refresh_token&refresh_token=…``
only; the client authenticates with HTTP Basic, ``Authorization: Basic base64(client_id:client_secret)``, each
part form-urlencoded first (RFC 6749 §2.3.1). The credentials never go in the body: §2.3.1 allows
them there only for a client that cannot use Basic, and a server that supports Basic may refuse them.

Refresh tokens are single-use and expire after 14 days unused (K-Series Authorization FAQ, "Quick Facts":
https://api-portal.lsk.lightspeed.app/quick-start/authentication/authorization). When a refresh token was
received is stored under ``<prefix>.refresh_token_at``, so an ``invalid_grant`` after the agent was off for
longer can say that this is why.

Durability. The current refresh token lives in the store under ``<prefix>.refresh_token``; the seed from the
configuration is used only while the store holds none (or when the seed was changed in the configuration
after the stored token was derived from an older seed). A refresh:

1. commits ``<prefix>.refresh_started`` (a marker, no secret) before anything is sent; a store that cannot
   commit stops the refresh here, before the server rotates anything;
2. sends the old refresh token;
3. commits the new refresh token as soon as the answer is parsed, before the new access token is used or
   the old refresh token forgotten, then clears the marker.

Remaining crash window: between the server rotating the token (step 2, server side) and the commit in step 3
(a crash, power loss, or an answer lost to a timeout or broken connection). The old token is then dead at the
server and the new one never reached the disk; nothing on this box can recover it. The next refresh gets
``invalid_grant``; the marker tells that it was an interrupted refresh and ``AuthRequired`` says so.
A crash before step 2 leaves the old token valid at the server, so the refresh after a restart works.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote_plus

import httpx
import structlog

from drivers.pos.base import KeyValueStore

log = structlog.get_logger("venue_agent.pos.oauth")

REFRESH_MARGIN = timedelta(minutes=5)
DEFAULT_EXPIRES_IN = 3600.0
REAUTHORISE = "re-authorise the POS connection (venue-agent pos authorize)"
# An unused Lightspeed refresh token expires after 14 days (Authorization FAQ, "Quick Facts", see above).
REFRESH_TOKEN_IDLE_LIMIT = timedelta(days=14)
# The words every invalid_client reason carries: the remedy is the configuration, not a new authorisation.
CLIENT_REJECTED = "client credentials (pos.lightspeed_k.client_id / client_secret) are wrong"

_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol, httpx.InvalidURL)
_HTTPX_ERRORS = (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError)


class TokenError(Exception):
    """Root of the token errors; ``reason`` is safe to log and show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AuthRequired(TokenError):
    """No usable refresh token: only a human re-authorising the connection helps."""


class TokenEndpointUnavailable(TokenError):
    """The token endpoint could not be reached or answered with a transient failure."""


@dataclass(frozen=True)
class _Access:
    token: str
    expires_at: datetime
    refresh_at: datetime

    @classmethod
    def issued(cls, token: str, now: datetime, lifetime: float) -> _Access:
        # A lifetime under twice the margin would refresh on every call: such a token is used for half its life.
        margin = min(REFRESH_MARGIN.total_seconds(), lifetime / 2)
        return cls(token, now + timedelta(seconds=lifetime), now + timedelta(seconds=lifetime - margin))


class TokenManager:
    """Hand out a valid access token, refreshing (one refresh at a time) within 5 minutes of expiry."""

    def __init__(
        self,
        *,
        token_url: str,
        client_id: str,
        client_secret: str,
        seed_refresh_token: str | None,
        store: KeyValueStore | None,
        client: httpx.AsyncClient,
        clock: Callable[[], datetime],
        key_prefix: str,
    ) -> None:
        self._token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._seed = seed_refresh_token or None
        self._store = store
        self._client = client
        self._clock = clock
        self._key_refresh = f"{key_prefix}.refresh_token"
        self._key_seed = f"{key_prefix}.seed_sha256"
        self._key_started = f"{key_prefix}.refresh_started"
        self._key_access = f"{key_prefix}.access_token"
        self._key_since = f"{key_prefix}.refresh_token_at"
        self._lock = asyncio.Lock()
        self._access: _Access | None = None
        self._access_loaded = False
        # A rotated refresh token the store refused to commit: the only live copy, kept until committed.
        self._uncommitted: str | None = None
        # The refresh token the server rejected, so probes do not hammer the endpoint until it changes.
        self._rejected: tuple[str, AuthRequired] | None = None

    async def access_token(self) -> str:
        """Return an access token valid for at least 5 more minutes; raise AuthRequired or TokenEndpointUnavailable."""
        access = self._access
        if access is not None and self._fresh(access):
            return access.token
        async with self._lock:
            if not self._access_loaded:
                self._access_loaded = True
                self._access = self._access or await self._load_access()
            access = self._access
            if access is not None and self._fresh(access):
                return access.token
            return await self._refresh()

    async def force_refresh(self, rejected: str | None = None) -> str:
        """Refresh after the API refused ``rejected`` (401); callers holding the same token share one refresh."""
        async with self._lock:
            access = self._access
            if access is not None and rejected is not None and access.token != rejected and self._fresh(access):
                return access.token
            self._access = None
            return await self._refresh()

    async def set_refresh_token(self, token: str) -> None:
        """Store a refresh token from a new authorisation and forget the cached access token."""
        token = token.strip()
        if not token:
            msg = "the refresh token is empty"
            raise ValueError(msg)
        store = self._require_store()
        async with self._lock:
            await store.kv_put(self._key_refresh, token)
            await store.kv_put(self._key_since, self._clock().isoformat())
            await store.kv_put(self._key_seed, self._seed_fingerprint())
            await store.kv_put(self._key_started, "")
            await store.kv_put(self._key_access, "")
            self._access = None
            self._access_loaded = True
            self._uncommitted = None
            self._rejected = None
        log.info("pos_token_authorized")

    @property
    def _basic(self) -> str:
        """The client's ``Authorization`` header: Basic over the form-urlencoded id and secret (RFC 6749 §2.3.1)."""
        pair = f"{quote_plus(self._client_id)}:{quote_plus(self._client_secret)}"
        return "Basic " + base64.b64encode(pair.encode()).decode("ascii")

    def _fresh(self, access: _Access) -> bool:
        return self._clock() < access.refresh_at

    def _require_store(self) -> KeyValueStore:
        if self._store is None:
            # Rotating a single-use token with nowhere durable to put the new one would burn the seed.
            msg = "no durable store for the rotated refresh token (the outbox is not open); not refreshing"
            raise AuthRequired(msg)
        return self._store

    def _seed_fingerprint(self) -> str:
        return hashlib.sha256(self._seed.encode()).hexdigest() if self._seed else ""

    async def _current_refresh_token(self, store: KeyValueStore) -> str:
        if self._uncommitted is not None:
            return self._uncommitted
        stored = await self._store_get(store, self._key_refresh)
        if stored:
            seed_of_stored = await self._store_get(store, self._key_seed)
            if self._seed is None or not seed_of_stored or seed_of_stored == self._seed_fingerprint():
                return stored
            log.info("pos_token_seed_changed")
        if self._seed is None:
            raise AuthRequired(f"no refresh token configured or stored; {REAUTHORISE}")
        return self._seed

    async def _refresh(self) -> str:
        """Run one refresh; the caller holds the lock."""
        store = self._require_store()
        old = await self._current_refresh_token(store)
        if self._rejected is not None and self._rejected[0] == old:
            raise self._rejected[1]
        if self._uncommitted is not None:
            await self._commit(store, self._uncommitted, None)
        interrupted = bool(await self._store_get(store, self._key_started))
        try:
            await store.kv_put(self._key_started, self._clock().isoformat())
        except Exception as exc:
            msg = f"cannot refresh the POS token: the outbox cannot store the rotated token ({type(exc).__name__})"
            raise TokenEndpointUnavailable(msg) from exc
        answer = await self._post(old)
        status, body = answer
        if status == 200 and isinstance(body, dict) and isinstance(body.get("access_token"), str):
            return await self._accept(store, old, body)
        if status == 429 or status >= 500:
            # The server refused before rotating: the old token stays good, so the marker is cleared.
            await self._store_put_quietly(store, self._key_started, "")
            raise TokenEndpointUnavailable(f"the POS token endpoint answered {status}; will retry")
        error = body.get("error") if isinstance(body, dict) else None
        if status == 200:
            raise TokenEndpointUnavailable("the POS token endpoint answered 200 without an access token")
        if error == "invalid_grant":
            reason = _invalid_grant_reason(interrupted, await self._idle_for(store, old))
        elif error == "invalid_client" or status == 401:
            # RFC 6749 §5.2: the client itself was refused; a new refresh token would be refused the same way.
            reason = (
                f"the POS token endpoint refused the API client (invalid_client): the {CLIENT_REJECTED}; "
                "correct them in the configuration and restart the agent (re-authorising does not help)"
            )
        else:
            reason = f"the POS token endpoint refused the refresh ({status} {error or 'no error code'}); {REAUTHORISE}"
        failure = AuthRequired(reason)
        self._rejected = (old, failure)
        self._access = None
        log.warning("pos_token_refresh_failed", status=status, error=error, interrupted=interrupted)
        raise failure

    async def _idle_for(self, store: KeyValueStore, presented: str) -> timedelta | None:
        """Return how long ``presented`` had been held unused, when it is the stored token and its time is known."""
        try:
            if await store.kv_get(self._key_refresh) != presented:
                return None  # the seed from the configuration: when it was issued is not known here
            since = datetime.fromisoformat(await store.kv_get(self._key_since) or "")
        except Exception:  # an unreadable or missing record only makes the message less specific
            return None
        return self._clock() - since if since.tzinfo is not None else None

    async def _post(self, refresh_token: str) -> tuple[int, object]:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        headers = {"Accept": "application/json", "Authorization": self._basic}
        try:
            response = await self._client.post(self._token_url, data=form, headers=headers)
        except _HTTPX_ERRORS as exc:
            sent = not isinstance(exc, _NOT_SENT)
            log.warning("pos_token_refresh_failed", reason=type(exc).__name__, maybe_rotated=sent)
            # httpx messages can echo the URL, never the form; the type name is enough and certainly safe.
            detail = f"the POS token endpoint could not be reached ({type(exc).__name__})"
            if sent:
                detail += "; if the server rotated the token meanwhile, the next refresh will need re-authorisation"
            raise TokenEndpointUnavailable(detail) from None
        try:
            body: object = response.json()
        except (
            ValueError,
            RecursionError,
        ):  # RecursionError: a nesting bomb from a broken or hostile POS is just not JSON
            body = None
        return response.status_code, body

    async def _accept(self, store: KeyValueStore, old: str, body: dict[str, Any]) -> str:
        new_refresh = body.get("refresh_token")
        rotated = isinstance(new_refresh, str) and bool(new_refresh) and new_refresh != old
        expires_in = _expires_in(body.get("expires_in"))
        access = _Access.issued(str(body["access_token"]), self._clock(), expires_in)
        if rotated:
            assert isinstance(new_refresh, str)
            await self._commit(store, new_refresh, access)
        else:
            await self._store_put_quietly(store, self._key_started, "")
            await self._save_access(store, access)
        self._access = access
        self._rejected = None
        log.info("pos_token_refreshed", expires_in=expires_in, rotated=rotated)
        return access.token

    async def _commit(self, store: KeyValueStore, refresh_token: str, access: _Access | None) -> None:
        try:
            await store.kv_put(self._key_refresh, refresh_token)
        except Exception as exc:
            self._uncommitted = refresh_token
            self._access = None
            log.error("pos_token_store_failed", reason=type(exc).__name__)
            msg = "the rotated POS refresh token could not be stored; it is kept in memory and stored on the next try"
            raise TokenEndpointUnavailable(msg) from None
        self._uncommitted = None
        await self._store_put_quietly(store, self._key_since, self._clock().isoformat())
        await self._store_put_quietly(store, self._key_seed, self._seed_fingerprint())
        await self._store_put_quietly(store, self._key_started, "")
        if access is not None:
            await self._save_access(store, access)

    async def _save_access(self, store: KeyValueStore, access: _Access) -> None:
        value = json.dumps(
            {
                "token": access.token,
                "expires_at": access.expires_at.isoformat(),
                "refresh_at": access.refresh_at.isoformat(),
            }
        )
        await self._store_put_quietly(store, self._key_access, value)

    async def _load_access(self) -> _Access | None:
        if self._store is None:
            return None
        raw = await self._store_get(self._store, self._key_access)
        if not raw:
            return None
        try:
            data = json.loads(raw)
            return _Access(
                str(data["token"]),
                datetime.fromisoformat(str(data["expires_at"])),
                datetime.fromisoformat(str(data["refresh_at"])),
            )
        except (ValueError, KeyError, TypeError):
            return None

    async def _store_get(self, store: KeyValueStore, key: str) -> str | None:
        try:
            return await store.kv_get(key)
        except Exception as exc:
            msg = f"cannot read the POS token state from the outbox ({type(exc).__name__})"
            raise TokenEndpointUnavailable(msg) from exc

    async def _store_put_quietly(self, store: KeyValueStore, key: str, value: str) -> None:
        try:
            await store.kv_put(key, value)
        except Exception as exc:
            log.warning("pos_token_store_failed", key=key, reason=type(exc).__name__)


def _invalid_grant_reason(interrupted: bool, idle: timedelta | None) -> str:
    if interrupted:
        return (
            "the POS refresh token was rejected (invalid_grant) after an interrupted token refresh: the server "
            "rotated it but the new one never reached the disk; this cannot be recovered automatically; " + REAUTHORISE
        )
    if idle is not None and idle > REFRESH_TOKEN_IDLE_LIMIT:
        return (
            f"the POS refresh token was rejected (invalid_grant): the refresh token was last used {idle.days} days "
            f"ago; Lightspeed refresh tokens expire after {REFRESH_TOKEN_IDLE_LIMIT.days} days unused: "
            "re-authorise with venue-agent pos authorize"
        )
    return (
        "the POS refresh token was rejected (invalid_grant): expired, revoked or already used; "
        "this cannot be recovered automatically; " + REAUTHORISE
    )


def _expires_in(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    if isinstance(value, str):
        try:
            seconds = float(value)
        except ValueError:
            return DEFAULT_EXPIRES_IN
        return seconds if seconds > 0 else DEFAULT_EXPIRES_IN
    return DEFAULT_EXPIRES_IN
