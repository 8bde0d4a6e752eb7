"""The circuit breaker's decisions (docs/order-flow.md) as a pure state machine, on an injected clock.

A probe is a readiness check where the POS has one; where it has none, the probe is one real order that
spends no attempt, and nothing else is sent until that order's answer closes (or re-opens) the circuit.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agent.dispatch.circuit import Circuit, CircuitState

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    """The injected clock: ``seconds`` after T0."""
    return T0 + timedelta(seconds=seconds)


def opened() -> Circuit:
    """A circuit opened by three consecutive order failures at T0."""
    circuit = Circuit()
    assert not circuit.record_failure(at(0), "503")
    assert not circuit.record_failure(at(0), "503")
    assert circuit.record_failure(at(0), "503")
    return circuit


def test_a_closed_circuit_lets_every_free_slot_claim_and_counts_attempts() -> None:
    """Closed: the sender fills its free slots and each send spends an attempt."""
    circuit = Circuit()
    assert circuit.orders_to_claim(8) == 8
    assert circuit.counts_attempt()


def test_an_open_circuit_claims_nothing_and_spends_no_attempt() -> None:
    """Open, before and while the readiness probe runs: no order goes out, no attempt is spent."""
    circuit = opened()
    assert circuit.orders_to_claim(8) == 0 and not circuit.counts_attempt()
    assert not circuit.probe_due(at(4.9)) and circuit.probe_due(at(5))
    circuit.start_probe()
    assert circuit.state is CircuitState.HALF_OPEN
    assert circuit.orders_to_claim(8) == 0, "a readiness probe in flight lets no order out"


def test_without_readiness_the_probe_is_exactly_one_order() -> None:
    """Readiness unsupported: one order may be claimed, once; the rest wait for its answer."""
    circuit = opened()
    circuit.start_probe()
    circuit.readiness_unsupported()
    assert circuit.orders_to_claim(8) == 1
    assert circuit.orders_to_claim(0) == 0
    assert not circuit.counts_attempt(), "the probe order spends no attempt"
    circuit.order_probe_claimed()
    assert circuit.orders_to_claim(8) == 0, "a second probe order while the first is in flight"
    circuit.readiness_unsupported()  # a late readiness answer must not let a second order out
    assert circuit.orders_to_claim(8) == 0


def test_the_probe_order_failing_reopens_with_a_longer_wait() -> None:
    """The probe order's transient failure re-opens the circuit, the next probe waits twice as long."""
    circuit = opened()
    circuit.start_probe()
    circuit.readiness_unsupported()
    circuit.order_probe_claimed()
    assert not circuit.record_failure(at(5), "503"), "a re-open is not a new outage (no second pos_down)"
    assert circuit.state is CircuitState.OPEN and circuit.orders_to_claim(8) == 0
    assert circuit.next_probe_at == at(15)
    assert not circuit.order_probe_in_flight and not circuit.order_probe_wanted


def test_the_probe_order_succeeding_closes_the_circuit_once() -> None:
    """An answer from the POS to the probe order closes the circuit: everything may flow again."""
    circuit = opened()
    circuit.start_probe()
    circuit.readiness_unsupported()
    circuit.order_probe_claimed()
    assert circuit.record_success()
    assert circuit.state is CircuitState.CLOSED and circuit.orders_to_claim(8) == 8 and circuit.counts_attempt()
    assert not circuit.record_success(), "closing twice would write a second pos_recovered"


def test_no_waiting_order_means_probing_again_later_without_backoff() -> None:
    """Nothing to probe with: back to open, the next readiness probe after the same delay."""
    circuit = opened()
    circuit.start_probe()
    circuit.readiness_unsupported()
    circuit.order_probe_unclaimed(at(5))
    assert circuit.state is CircuitState.OPEN and circuit.next_probe_at == at(10)
    assert circuit.orders_to_claim(8) == 0


def test_readiness_unsupported_while_closed_or_open_changes_nothing() -> None:
    """A routine probe of a healthy POS without /ready is not a reason to open or close anything."""
    circuit = Circuit()
    circuit.readiness_unsupported()
    assert circuit.state is CircuitState.CLOSED and circuit.orders_to_claim(4) == 4
    circuit = opened()
    circuit.readiness_unsupported()  # not half-open: no probe is running
    assert circuit.orders_to_claim(4) == 0


def test_the_probe_delay_is_capped() -> None:
    """However long the outage, probes come at least once a minute."""
    circuit = opened()
    now = at(0)
    for _ in range(10):
        assert circuit.next_probe_at is not None
        now = circuit.next_probe_at
        circuit.start_probe()
        circuit.probe_failed(now, "still down")
    assert circuit.next_probe_at == now + timedelta(seconds=60)
