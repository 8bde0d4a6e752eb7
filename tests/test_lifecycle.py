"""The pure parts of the life cycle: placement, backoff, circuit breaker, fallback rules, rate limiter."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from agent.dispatch.backoff import full_jitter, next_attempt_at
from agent.dispatch.circuit import Circuit, CircuitState
from agent.dispatch.fallback import fallback_reason
from agent.dispatch.ratelimit import RateLimiter
from agent.domain.models import parse_order
from agent.domain.states import TRANSITIONS, ErrorClass, State, can_move, place
from agent.outbox.records import OrderRecord
from tests.conftest import make_order

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def order(**changes: object):  # type: ignore[no-untyped-def]
    """Return a parsed order."""
    return parse_order(make_order(**changes), venue_id="harbour-kitchen")


class TestPlacement:
    """Where a new order starts."""

    def test_asap_paid_is_queued_now(self) -> None:
        """A paid ASAP order is queued and due at once."""
        assert place(order(), now=NOW, hold_unpaid=True, buffered=True, buffer_minutes=20).state is State.QUEUED

    def test_buffered_preorder_is_scheduled_before_its_time(self) -> None:
        """A pre-order is scheduled until requested_at - buffer_minutes."""
        placed = place(
            order(requested_at=(NOW + timedelta(hours=2)).isoformat()),
            now=NOW,
            hold_unpaid=True,
            buffered=True,
            buffer_minutes=20,
        )
        assert placed.state is State.SCHEDULED
        assert placed.due_at == NOW + timedelta(hours=1, minutes=40)

    def test_immediate_preorder_is_queued(self) -> None:
        """With preorders = immediate a pre-order goes at once."""
        placed = place(
            order(requested_at=(NOW + timedelta(hours=2)).isoformat()),
            now=NOW,
            hold_unpaid=True,
            buffered=False,
            buffer_minutes=20,
        )
        assert placed.state is State.QUEUED

    def test_unpaid_is_held_only_when_configured(self) -> None:
        """An unpaid order is held with hold_unpaid, queued without it."""
        pending = make_order()
        pending["payment"]["status"] = "pending"
        unpaid = parse_order(pending, venue_id="harbour-kitchen")
        assert place(unpaid, now=NOW, hold_unpaid=True, buffered=True, buffer_minutes=20).state is State.HELD
        assert place(unpaid, now=NOW, hold_unpaid=False, buffered=True, buffer_minutes=20).state is State.QUEUED

    def test_terminal_states_are_final(self) -> None:
        """Nothing leaves injected or cancelled; every state is in the table."""
        assert set(TRANSITIONS) == set(State)
        assert not TRANSITIONS[State.INJECTED] and not TRANSITIONS[State.CANCELLED]
        assert can_move(State.FAILED, State.INJECTED)  # a late two-phase confirmation


class TestBackoff:
    """Retry timing."""

    def test_full_jitter_stays_under_the_exponential_cap(self) -> None:
        """Delays are within [0, min(cap, base * 2^(n-1))]."""
        assert full_jitter(1, base=2, cap=300, rand=lambda: 1.0) == 2
        assert full_jitter(4, base=2, cap=300, rand=lambda: 1.0) == 16
        assert full_jitter(20, base=2, cap=300, rand=lambda: 1.0) == 300
        assert full_jitter(3, base=2, cap=300, rand=lambda: 0.0) == 0

    def test_retry_after_is_a_floor(self) -> None:
        """The POS's Retry-After is never undercut."""
        at = next_attempt_at(now=NOW, strike=1, base=2, cap=300, retry_after=30, rand=lambda: 0.5)
        assert at == NOW + timedelta(seconds=30)

    def test_preorder_spreads_retries_until_its_time(self) -> None:
        """A pre-order three hours out may wait longer than backoff_max between attempts."""
        at = next_attempt_at(
            now=NOW,
            strike=12,
            base=2,
            cap=300,
            requested_at=NOW + timedelta(hours=3),
            attempts_left=3,
            rand=lambda: 1.0,
        )
        assert at == NOW + timedelta(hours=1)


class TestCircuit:
    """The POS circuit breaker."""

    def test_opens_after_consecutive_failures_and_probes_with_backoff(self) -> None:
        """Three failures open it; probes come at 5 s, then 10 s; success closes it."""
        circuit = Circuit()
        assert not circuit.record_failure(NOW, "503")
        assert not circuit.record_failure(NOW, "503")
        assert circuit.record_failure(NOW, "503")
        assert circuit.state is CircuitState.OPEN and not circuit.allows_orders()
        assert not circuit.probe_due(NOW + timedelta(seconds=4))
        assert circuit.probe_due(NOW + timedelta(seconds=5))
        circuit.start_probe()
        circuit.probe_failed(NOW + timedelta(seconds=5), "still down")
        assert circuit.next_probe_at == NOW + timedelta(seconds=15)
        assert circuit.record_success()
        assert circuit.allows_orders()

    def test_success_resets_the_count(self) -> None:
        """Failures must be consecutive to open the circuit."""
        circuit = Circuit()
        circuit.record_failure(NOW, "x")
        circuit.record_failure(NOW, "x")
        circuit.record_success()
        assert not circuit.record_failure(NOW, "x")

    def test_trip_opens_at_once(self) -> None:
        """A not-ready POS opens the circuit immediately, once."""
        circuit = Circuit()
        assert circuit.trip(NOW, "NOT_READY")
        assert not circuit.trip(NOW, "NOT_READY")


def record(
    state: State, *, due: datetime = NOW, fallback_at: datetime | None = None, error_class: ErrorClass | None = None
) -> OrderRecord:
    """Return an order record in ``state``."""
    o = order()
    return OrderRecord(
        id=o.id,
        revision=1,
        content_hash="h",
        body=o.model_dump_json(),
        display_code="K7Q2M9XA",
        state=state,
        error_class=error_class,
        last_error=None,
        attempts=1,
        strikes=1,
        idempotency_key="k",
        pos_reference=None,
        received_at=NOW,
        due_at=due,
        next_attempt_at=None,
        sent_at=None,
        fallback_at=fallback_at,
        injected_at=None,
        updated_at=NOW,
        in_doubt=False,
    )


class TestFallbackRules:
    """Fallback rules a-c of docs/order-flow.md."""

    def decide(
        self,
        rec: OrderRecord,
        now: datetime,
        *,
        not_ready: bool = False,
        when_not_ready: bool = True,
        enabled: bool = True,
    ) -> str | None:
        """Return the rule's decision."""
        return fallback_reason(
            rec,
            now=now,
            enabled=enabled,
            print_after_seconds=60,
            pos_not_ready=not_ready,
            print_when_pos_not_ready=when_not_ready,
        )

    def test_rule_a_after_waiting(self) -> None:
        """A due order prints 60 s after it became due, not before."""
        rec = record(State.RETRYING)
        assert self.decide(rec, NOW + timedelta(seconds=59)) is None
        assert self.decide(rec, NOW + timedelta(seconds=60)) is not None

    def test_rule_b_on_failure(self) -> None:
        """A failed order prints at once."""
        assert self.decide(record(State.FAILED, error_class=ErrorClass.MENU), NOW) == "failed (menu)"

    def test_rule_c_when_pos_not_ready(self) -> None:
        """A due order prints at once while the POS is down, only if configured."""
        assert self.decide(record(State.QUEUED), NOW, not_ready=True) == "pos_not_ready"
        assert self.decide(record(State.QUEUED), NOW, not_ready=True, when_not_ready=False) is None

    @pytest.mark.parametrize(
        "state", [State.HELD, State.SCHEDULED, State.INJECTED, State.CANCELLED, State.AWAITING_POS, State.SKIPPED]
    )
    def test_never_for_held_not_due_or_done(self, state: State) -> None:
        """Held, scheduled, injected, cancelled, skipped and awaiting orders never print automatically."""
        assert self.decide(record(state), NOW + timedelta(hours=1), not_ready=True) is None

    def test_at_most_one_automatic_ticket(self) -> None:
        """An order that already has its fallback ticket gets no second one."""
        rec = replace(record(State.FAILED, error_class=ErrorClass.OUTAGE), fallback_at=NOW)
        assert self.decide(rec, NOW + timedelta(hours=1)) is None

    def test_disabled(self) -> None:
        """fallback.enabled = false prints nothing."""
        assert self.decide(record(State.FAILED), NOW, enabled=False) is None


class TestRateLimiter:
    """Request spacing."""

    async def test_requests_are_spaced(self) -> None:
        """At 4 per second, requests are a quarter second apart and the fifth waits out the window's margin."""
        now = [0.0]
        slept: list[float] = []

        async def sleep(seconds: float) -> None:
            slept.append(seconds)
            now[0] += seconds

        limiter = RateLimiter(4, monotonic=lambda: now[0], sleep=sleep)
        times = []
        for _ in range(6):
            await limiter.acquire()
            times.append(now[0])
        assert times == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.05, 1.30])

    async def test_a_late_wake_does_not_let_the_next_one_bunch(self) -> None:
        """A sleep that overshoots still leaves no window of 1.05 s with more than ``rate`` sends."""
        now = [0.0]

        async def sleep(seconds: float) -> None:
            now[0] += seconds + 0.03  # the event loop woke us late

        limiter = RateLimiter(10, monotonic=lambda: now[0], sleep=sleep)
        times = []
        for _ in range(40):
            await limiter.acquire()
            times.append(now[0])
        busiest = max(sum(1 for t in times if start <= t < start + 1.05) for start in times)
        assert busiest <= 10
