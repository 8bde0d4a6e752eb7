"""Refresh-token rotation against the simulator's K-Series token endpoint, with a real outbox as the store."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from structlog.testing import capture_logs

from agent.dispatch import alerts
from agent.domain.clock import FakeClock
from agent.outbox.store import Outbox
from drivers.pos.oauth import AuthRequired, TokenEndpointUnavailable, TokenManager
from drivers.pos.sim_state import SimulatorState
from tests.conftest import Sim, run_simulator

SEED = "seed-refresh-token-from-config"
CLIENT_SECRET = "client-secret-never-logged"
PREFIX = "pos.lightspeed_k.1234"
REFRESH_KEY = f"{PREFIX}.refresh_token"


class Crash(BaseException):
    """The process dies here (not an Exception: nothing may catch and handle it)."""


class RecordingStore:
    """A store that notes every committed write in a shared timeline, then delegates to the outbox."""

    def __init__(self, inner: Outbox, timeline: list[str]) -> None:
        self.inner = inner
        self.timeline = timeline

    async def kv_get(self, key: str) -> str | None:
        return await self.inner.kv_get(key)

    async def kv_put(self, key: str, value: str) -> None:
        await self.inner.kv_put(key, value)
        self.timeline.append(f"committed {key.removeprefix(PREFIX + '.')}")


class ScriptedTransport(httpx.AsyncBaseTransport):
    """A real transport that notes requests and answers in a timeline and can crash before or after one."""

    def __init__(self, timeline: list[str] | None = None, crash: str | None = None) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.timeline = timeline if timeline is not None else []
        self.crash = crash

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.crash == "before_send":
            raise Crash
        self.timeline.append(f"sent {request.url.path}")
        response = await self.inner.handle_async_request(request)
        await response.aread()
        self.timeline.append(f"answered {response.status_code}")
        if self.crash == "after_answer":
            raise Crash
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


@asynccontextmanager
async def outbox_at(path: Path, clock: FakeClock) -> AsyncIterator[Outbox]:
    """Open the outbox at ``path`` (a restart is closing it and opening it again)."""
    outbox = Outbox(path, clock=clock, min_free_mb=0)
    await outbox.open()
    try:
        yield outbox
    finally:
        await outbox.close()


@asynccontextmanager
async def manager(
    sim: Sim,
    store: object,
    clock: FakeClock,
    *,
    seed: str | None = SEED,
    transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[TokenManager]:
    """Yield a TokenManager for the simulator's token endpoint, with its own HTTP client."""
    async with httpx.AsyncClient(transport=transport, trust_env=False, timeout=5) as client:
        yield TokenManager(
            token_url=f"http://127.0.0.1:{sim.port}/oauth/token",
            client_id="venue-agent",
            client_secret=CLIENT_SECRET,
            seed_refresh_token=seed,
            store=store,  # type: ignore[arg-type]
            client=client,
            clock=clock.now,
            key_prefix=PREFIX,
        )


def token_requests(sim: Sim) -> int:
    """Return how many requests reached the token endpoint."""
    return sum(1 for r in sim.state.requests if r.path == "/oauth/token")


async def refresh_directly(sim: Sim, refresh_token: str) -> httpx.Response:
    """Present a refresh token to the simulator's token endpoint, as another client would."""
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    async with httpx.AsyncClient(trust_env=False) as client:
        return await client.post(f"http://127.0.0.1:{sim.port}/oauth/token", data=form, auth=("x", "y"))


@pytest.fixture(name="sim")
async def _sim() -> AsyncIterator[Sim]:
    async with run_simulator(SimulatorState()) as sim:
        yield sim


@pytest.fixture(name="clock")
def _clock() -> FakeClock:
    return FakeClock()


async def test_first_refresh_uses_the_seed_and_commits_the_rotated_token_before_using_it(
    sim: Sim, clock: FakeClock, tmp_path: Path
) -> None:
    timeline: list[str] = []
    async with outbox_at(tmp_path / "outbox.db", clock) as outbox:
        store = RecordingStore(outbox, timeline)
        async with manager(sim, store, clock, transport=ScriptedTransport(timeline)) as tokens:
            access = await tokens.access_token()
            timeline.append("access token handed out")
        stored = await outbox.kv_get(REFRESH_KEY)

    assert access.startswith("sim-at-")
    assert stored is not None and stored.startswith("sim-rt-") and stored != SEED
    # The marker is committed before the request; the new refresh token before the access token is used.
    assert timeline.index("committed refresh_started") < timeline.index("sent /oauth/token")
    assert timeline.index("answered 200") < timeline.index("committed refresh_token")
    assert timeline.index("committed refresh_token") < timeline.index("access token handed out")
    # The seed was spent: single use.
    answer = await refresh_directly(sim, SEED)
    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_grant")


async def test_an_old_refresh_token_cannot_be_used_twice(sim: Sim, clock: FakeClock, tmp_path: Path) -> None:
    async with outbox_at(tmp_path / "outbox.db", clock) as outbox, manager(sim, outbox, clock) as tokens:
        await tokens.access_token()
        first = await outbox.kv_get(REFRESH_KEY)
        await tokens.force_refresh()
        second = await outbox.kv_get(REFRESH_KEY)

    assert first is not None and second is not None and first != second
    assert (await refresh_directly(sim, first)).status_code == 400
    assert (await refresh_directly(sim, second)).status_code == 200


async def test_a_restart_uses_the_stored_tokens_not_the_seed(sim: Sim, clock: FakeClock, tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    async with outbox_at(path, clock) as outbox, manager(sim, outbox, clock) as tokens:
        access = await tokens.access_token()

    async with outbox_at(path, clock) as outbox, manager(sim, outbox, clock) as tokens:
        # The stored access token is still good: no refresh at start-up.
        assert await tokens.access_token() == access
        assert token_requests(sim) == 1
        # A refresh after a restart presents the stored (rotated) token; the seed would be refused.
        renewed = await tokens.force_refresh(access)

    assert renewed != access
    assert [r.status for r in sim.state.requests if r.path == "/oauth/token"] == [200, 200]


async def test_a_crash_before_the_request_is_sent_leaves_a_working_token(
    sim: Sim, clock: FakeClock, tmp_path: Path
) -> None:
    path = tmp_path / "outbox.db"
    async with outbox_at(path, clock) as outbox:
        async with manager(sim, outbox, clock, transport=ScriptedTransport(crash="before_send")) as tokens:
            with pytest.raises(Crash):
                await tokens.access_token()
        assert await outbox.kv_get(REFRESH_KEY) is None
    assert token_requests(sim) == 0

    async with outbox_at(path, clock) as outbox, manager(sim, outbox, clock) as tokens:
        assert (await tokens.access_token()).startswith("sim-at-")
        assert await outbox.kv_get(f"{PREFIX}.refresh_started") == ""


async def test_a_crash_after_the_server_rotated_needs_reauthorisation_and_says_so(
    sim: Sim, clock: FakeClock, tmp_path: Path
) -> None:
    path = tmp_path / "outbox.db"
    async with outbox_at(path, clock) as outbox:
        async with manager(sim, outbox, clock, transport=ScriptedTransport(crash="after_answer")) as tokens:
            with pytest.raises(Crash):
                await tokens.access_token()
        # The server rotated the seed; the new token never reached the disk.
        assert await outbox.kv_get(REFRESH_KEY) is None

    async with outbox_at(path, clock) as outbox, manager(sim, outbox, clock) as tokens:
        with pytest.raises(AuthRequired) as failure:
            await tokens.access_token()
        reason = failure.value.reason
        assert "interrupted token refresh" in reason
        assert "cannot be recovered automatically" in reason
        assert "venue-agent pos authorize" in reason
        # The refusal is remembered: probes do not hammer the token endpoint with a dead token.
        with pytest.raises(AuthRequired):
            await tokens.access_token()
        assert token_requests(sim) == 2

        await tokens.set_refresh_token("re-authorised-refresh-token")
        assert (await tokens.access_token()).startswith("sim-at-")
        assert token_requests(sim) == 3


async def test_concurrent_callers_share_one_refresh(sim: Sim, clock: FakeClock, tmp_path: Path) -> None:
    async with outbox_at(tmp_path / "outbox.db", clock) as outbox, manager(sim, outbox, clock) as tokens:
        first = await asyncio.gather(*(tokens.access_token() for _ in range(20)))
        assert len(set(first)) == 1
        assert token_requests(sim) == 1
        # Twenty requests refused with the same token: one refresh between them.
        again = await asyncio.gather(*(tokens.force_refresh(first[0]) for _ in range(20)))
        assert len(set(again)) == 1 and again[0] != first[0]
        assert token_requests(sim) == 2


async def test_the_token_is_refreshed_five_minutes_before_it_expires(
    sim: Sim, clock: FakeClock, tmp_path: Path
) -> None:
    async with outbox_at(tmp_path / "outbox.db", clock) as outbox, manager(sim, outbox, clock) as tokens:
        first = await tokens.access_token()
        clock.advance(3600 - 300 - 1)
        assert await tokens.access_token() == first
        assert token_requests(sim) == 1
        clock.advance(2)
        second = await tokens.access_token()
        assert second != first
        assert token_requests(sim) == 2


async def test_a_short_lived_token_is_used_for_half_its_life(sim: Sim, clock: FakeClock, tmp_path: Path) -> None:
    async with httpx.AsyncClient(trust_env=False) as client:
        await client.post(f"http://127.0.0.1:{sim.port}/_sim/lightspeed", json={"access_token_ttl_seconds": 120})
    async with outbox_at(tmp_path / "outbox.db", clock) as outbox, manager(sim, outbox, clock) as tokens:
        first = await tokens.access_token()
        clock.advance(59)
        assert await tokens.access_token() == first
        clock.advance(2)
        assert await tokens.access_token() != first


async def test_an_unavailable_token_endpoint_is_transient_and_the_token_survives(
    sim: Sim, clock: FakeClock, tmp_path: Path
) -> None:
    async with outbox_at(tmp_path / "outbox.db", clock) as outbox, manager(sim, outbox, clock) as tokens:
        await sim.state.apply_faults({"down": True})
        with pytest.raises(TokenEndpointUnavailable, match="503"):
            await tokens.access_token()
        await sim.state.apply_faults({"down": False})
        assert (await tokens.access_token()).startswith("sim-at-")


async def test_without_a_store_nothing_is_refreshed(sim: Sim, clock: FakeClock) -> None:
    async with manager(sim, None, clock) as tokens:
        with pytest.raises(AuthRequired, match="no durable store"):
            await tokens.access_token()
    assert token_requests(sim) == 0


async def test_a_new_seed_in_the_configuration_replaces_the_stored_token(
    sim: Sim, clock: FakeClock, tmp_path: Path
) -> None:
    path = tmp_path / "outbox.db"
    async with outbox_at(path, clock) as outbox, manager(sim, outbox, clock) as tokens:
        await tokens.access_token()
    async with httpx.AsyncClient(trust_env=False) as client:
        await client.post(f"http://127.0.0.1:{sim.port}/_sim/lightspeed", json={"expire_access_tokens": True})
    async with outbox_at(path, clock) as outbox, manager(sim, outbox, clock, seed="a-new-seed") as tokens:
        await tokens.force_refresh()
        assert (await refresh_directly(sim, "a-new-seed")).status_code == 400  # it was the one presented


async def test_no_token_or_secret_appears_in_logs_or_errors(sim: Sim, clock: FakeClock, tmp_path: Path) -> None:
    secrets_seen = {SEED, CLIENT_SECRET}
    messages: list[str] = []
    with capture_logs() as logs:
        async with outbox_at(tmp_path / "outbox.db", clock) as outbox, manager(sim, outbox, clock) as tokens:
            secrets_seen.add(await tokens.access_token())
            secrets_seen.add(await outbox.kv_get(REFRESH_KEY) or "")
            secrets_seen.add(await tokens.force_refresh())
            secrets_seen.add(await outbox.kv_get(REFRESH_KEY) or "")
            async with httpx.AsyncClient(trust_env=False) as client:
                await client.post(f"http://127.0.0.1:{sim.port}/_sim/lightspeed", json={"revoke_refresh_tokens": True})
            try:
                await tokens.force_refresh()
            except AuthRequired as exc:
                messages.append(str(exc))
            await sim.state.apply_faults({"hard_down": True})
            await outbox.kv_put(REFRESH_KEY, "another-secret-token")
            secrets_seen.add("another-secret-token")
            try:
                await tokens.force_refresh()
            except TokenEndpointUnavailable as exc:
                messages.append(str(exc))
            await sim.state.apply_faults({"hard_down": False})

    assert len(messages) == 2
    assert {e["event"] for e in logs} >= {"pos_token_refreshed", "pos_token_refresh_failed"}
    text = repr(logs) + "\n".join(messages)
    for secret in secrets_seen - {""}:
        assert secret not in text


# ---- client authentication (RFC 6749 §2.3.1) and the two kinds of refusal -------------------------


class CapturingTransport(httpx.AsyncBaseTransport):
    """A real transport that keeps a copy of every request it sends."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.sent: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.sent.append(request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def sim_settings(sim: Sim, **settings: object) -> dict[str, Any]:
    """Change the simulator's Lightspeed dialect; return what it shows."""
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.post(f"http://127.0.0.1:{sim.port}/_sim/lightspeed", json=settings)
    assert response.status_code == 200, response.text
    shown: dict[str, Any] = response.json()
    return shown


async def test_the_client_authenticates_with_basic_and_the_body_holds_only_the_grant(
    sim: Sim, clock: FakeClock, tmp_path: Path
) -> None:
    """Authorization: Basic base64(client_id:client_secret); the form is grant_type and refresh_token, nothing else."""
    await sim_settings(sim, client_id="venue-agent", client_secret=CLIENT_SECRET)
    transport = CapturingTransport()
    db = tmp_path / "outbox.db"
    async with outbox_at(db, clock) as outbox, manager(sim, outbox, clock, transport=transport) as tokens:
        assert (await tokens.access_token()).startswith("sim-at-")

    [sent] = transport.sent
    expected = base64.b64encode(f"venue-agent:{CLIENT_SECRET}".encode()).decode()
    assert sent.headers["Authorization"] == f"Basic {expected}"
    assert sent.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(sent.content.decode()) == {"grant_type": ["refresh_token"], "refresh_token": [SEED]}
    assert CLIENT_SECRET not in sent.content.decode()
    assert (await sim_settings(sim))["last_token_request"] == {
        "client_authentication": "basic",
        "form_fields": ["grant_type", "refresh_token"],
    }


async def test_credentials_outside_basic_are_refused_as_invalid_client(sim: Sim) -> None:
    """The simulator is as strict as the reference: body credentials or no Basic are 401 invalid_client."""
    url = f"http://127.0.0.1:{sim.port}/oauth/token"
    grant = {"grant_type": "refresh_token", "refresh_token": "any-seed"}
    body_creds = {**grant, "client_id": "venue-agent", "client_secret": CLIENT_SECRET}
    async with httpx.AsyncClient(trust_env=False) as client:
        answers = [
            await client.post(url, data=body_creds),
            await client.post(url, data=grant),
            await client.post(url, data=body_creds, auth=("venue-agent", CLIENT_SECRET)),
            await client.post(url, data=grant, headers={"Authorization": "Basic not-base64!"}),
        ]
        for answer in answers:
            assert answer.status_code == 401, answer.text
            assert answer.json()["error"] == "invalid_client"
            assert answer.headers["WWW-Authenticate"].startswith("Basic")
        # None of the refusals spent the refresh token: the grant is only looked at for an authenticated client.
        assert (await client.post(url, data=grant, auth=("venue-agent", CLIENT_SECRET))).status_code == 200


async def test_a_secret_with_reserved_characters_is_form_encoded_inside_basic(
    sim: Sim, clock: FakeClock, tmp_path: Path
) -> None:
    """RFC 6749 §2.3.1 / appendix B: id and secret are form-urlencoded before base64 (a ':' in the secret survives)."""
    secret = "s3cr:t/+ &é"
    await sim_settings(sim, client_id="venue agent", client_secret=secret)
    transport = CapturingTransport()
    async with (
        outbox_at(tmp_path / "outbox.db", clock) as outbox,
        httpx.AsyncClient(transport=transport, trust_env=False) as client,
    ):
        tokens = TokenManager(
            token_url=f"http://127.0.0.1:{sim.port}/oauth/token",
            client_id="venue agent",
            client_secret=secret,
            seed_refresh_token=SEED,
            store=outbox,
            client=client,
            clock=clock.now,
            key_prefix=PREFIX,
        )
        assert (await tokens.access_token()).startswith("sim-at-")
    header = transport.sent[0].headers["Authorization"].removeprefix("Basic ")
    assert base64.b64decode(header).decode() == "venue+agent:s3cr%3At%2F%2B+%26%C3%A9"


async def test_invalid_client_says_the_client_credentials_are_wrong_not_reauthorise(
    sim: Sim, clock: FakeClock, tmp_path: Path
) -> None:
    """A refused client is an auth failure whose reason names client_id/client_secret; the seed is not spent."""
    await sim_settings(sim, client_id="venue-agent", client_secret="the-right-secret")
    async with outbox_at(tmp_path / "outbox.db", clock) as outbox, manager(sim, outbox, clock) as tokens:
        with pytest.raises(AuthRequired) as failure:
            await tokens.access_token()
    reason = failure.value.reason
    assert "invalid_client" in reason
    assert "pos.lightspeed_k.client_id / client_secret" in reason and "are wrong" in reason
    assert "re-authorising does not help" in reason
    assert "invalid_grant" not in reason
    alert = alerts.pos_auth_required("lightspeed_k", reason)
    assert "client_id / client_secret" in alert["action"] and "does not help" in alert["action"]
    # The refresh token was never looked at: the right secret gets a token with the same seed.
    await sim_settings(sim, client_secret=CLIENT_SECRET)
    async with outbox_at(tmp_path / "outbox.db", clock) as outbox, manager(sim, outbox, clock) as tokens:
        assert (await tokens.access_token()).startswith("sim-at-")


async def test_a_spent_refresh_token_is_invalid_grant_and_says_reauthorise(
    sim: Sim, clock: FakeClock, tmp_path: Path
) -> None:
    """invalid_grant (spent or revoked) is a different alert: re-authorise with venue-agent pos authorize."""
    async with outbox_at(tmp_path / "outbox.db", clock) as outbox, manager(sim, outbox, clock) as tokens:
        await tokens.access_token()
        await sim_settings(sim, revoke_refresh_tokens=True)
        with pytest.raises(AuthRequired) as failure:
            await tokens.force_refresh()
    reason = failure.value.reason
    assert "invalid_grant" in reason and "venue-agent pos authorize" in reason
    assert "client_secret" not in reason and "last used" not in reason
    assert "re-authorise" in alerts.pos_auth_required("lightspeed_k", reason)["action"]


@pytest.fixture(name="shared_clock")
def _shared_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(name="clocked_sim")
async def _clocked_sim(shared_clock: FakeClock) -> AsyncIterator[Sim]:
    """A simulator whose clock is the test's FakeClock, so refresh tokens age with the agent's time."""
    state = SimulatorState(monotonic=lambda: shared_clock.now().timestamp(), wall=shared_clock.now)
    async with run_simulator(state) as sim:
        yield sim


async def test_a_token_unused_for_more_than_14_days_says_so(
    clocked_sim: Sim, shared_clock: FakeClock, tmp_path: Path
) -> None:
    """The agent was off for 20 days: the refresh token expired unused, and the alert says exactly that."""
    path = tmp_path / "outbox.db"
    async with outbox_at(path, shared_clock) as outbox, manager(clocked_sim, outbox, shared_clock) as tokens:
        await tokens.access_token()
        assert await outbox.kv_get(f"{PREFIX}.refresh_token_at") == shared_clock.now().isoformat()

    shared_clock.advance(20 * 86400 + 3600)  # switched off for 20 days
    async with outbox_at(path, shared_clock) as outbox, manager(clocked_sim, outbox, shared_clock) as tokens:
        with pytest.raises(AuthRequired) as failure:
            await tokens.access_token()
    assert failure.value.reason == (
        "the POS refresh token was rejected (invalid_grant): the refresh token was last used 20 days ago; "
        "Lightspeed refresh tokens expire after 14 days unused: re-authorise with venue-agent pos authorize"
    )
    assert [r.status for r in clocked_sim.state.requests if r.path == "/oauth/token"] == [200, 400]


async def test_a_token_used_within_14_days_keeps_working_and_a_new_authorisation_restarts_the_count(
    clocked_sim: Sim, shared_clock: FakeClock, tmp_path: Path
) -> None:
    """13 days off is fine; every rotation (and pos authorize) records a new 'last used' time."""
    path = tmp_path / "outbox.db"
    async with outbox_at(path, shared_clock) as outbox, manager(clocked_sim, outbox, shared_clock) as tokens:
        await tokens.access_token()
        shared_clock.advance(13 * 86400)
        await tokens.access_token()  # the access token expired long ago: a refresh, accepted
        assert await outbox.kv_get(f"{PREFIX}.refresh_token_at") == shared_clock.now().isoformat()
        await tokens.set_refresh_token("re-authorised-token")
        assert await outbox.kv_get(f"{PREFIX}.refresh_token_at") == shared_clock.now().isoformat()
    assert [r.status for r in clocked_sim.state.requests if r.path == "/oauth/token"] == [200, 200]


async def test_a_rejected_seed_of_unknown_age_gets_the_general_message(
    clocked_sim: Sim, shared_clock: FakeClock, tmp_path: Path
) -> None:
    """The configured seed's age is not known: invalid_grant then names the possible causes, no day count."""
    await sim_settings(clocked_sim, accept_unknown_refresh_tokens=False)
    async with outbox_at(tmp_path / "outbox.db", shared_clock) as outbox:
        # A stale record of an older token must not be blamed on the seed.
        await outbox.kv_put(f"{PREFIX}.refresh_token_at", (shared_clock.now() - timedelta(days=40)).isoformat())
        async with manager(clocked_sim, outbox, shared_clock) as tokens:
            with pytest.raises(AuthRequired) as failure:
                await tokens.access_token()
    assert "expired, revoked or already used" in failure.value.reason
    assert "days ago" not in failure.value.reason
