"""The availability rule and its debounce (docs/availability.md), pure: verdicts in, published values out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agent.domain.availability import Availability, Debouncer, Inputs, Verdict, decide

T0 = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)


def inputs(**changes: object) -> Inputs:
    """Return a healthy venue (POS ok, one fallback printer ok, disk fine) with ``changes``."""
    base: dict[str, object] = {
        "pos_state": "ok",
        "fallback_enabled": True,
        "printers": {"pass": "ok"},
        "disk_full": False,
        "storage_open": True,
    }
    return Inputs(**{**base, **changes})  # type: ignore[arg-type]


class TestDecide:
    """An order taken now must reach the POS or paper; otherwise the venue is not accepting."""

    def test_pos_up_accepts_whatever_the_printers(self) -> None:
        """A working POS is enough, even with every printer out of paper or fallback off."""
        verdict = decide(inputs(printers={"pass": "paper_out"}, fallback_enabled=False))
        assert (verdict.accepting, verdict.reason) == (True, "ok")
        assert decide(inputs(pos_state="degraded")).accepting

    @pytest.mark.parametrize("state", ["ok", "paper_low", "unknown"])
    def test_pos_down_with_a_printer_that_can_print_accepts(self, state: str) -> None:
        """POS down but a fallback printer can print: orders come out on paper, so still accepting."""
        verdict = decide(inputs(pos_state="down", printers={"pass": "paper_out", "bar": state}))
        assert (verdict.accepting, verdict.reason) == (True, "pos_down_printing_fallback")
        assert "bar" in verdict.detail

    @pytest.mark.parametrize("blocked", ["paper_out", "offline", "error", "cover_open"])
    def test_pos_down_and_every_printer_blocked_refuses(self, blocked: str) -> None:
        """POS down and no fallback printer can print: not accepting, and the detail names each printer's state."""
        verdict = decide(inputs(pos_state="down", printers={"pass": "paper_out", "bar": blocked}))
        assert (verdict.accepting, verdict.reason) == (False, "pos_down_and_no_printer")
        assert "pass paper out" in verdict.detail
        assert "bar" in verdict.detail

    def test_auth_required_counts_as_pos_down(self) -> None:
        """A POS waiting for re-authorisation takes no orders: it counts as down, with its own reason."""
        verdict = decide(inputs(pos_state="auth_required", printers={"pass": "offline"}))
        assert (verdict.accepting, verdict.reason) == (False, "pos_auth_required_and_no_printer")
        assert "pos authorize" in verdict.detail
        assert decide(inputs(pos_state="auth_required")).accepting

    def test_fallback_off_with_pos_down_refuses_even_with_printers(self) -> None:
        """With [fallback] enabled = false, a healthy printer is no path to the kitchen."""
        verdict = decide(inputs(pos_state="down", fallback_enabled=False))
        assert (verdict.accepting, verdict.reason) == (False, "pos_down_and_fallback_off")

    def test_no_fallback_printer_configured_with_pos_down_refuses(self) -> None:
        """No fallback printer at all and the POS down: nothing can take the order."""
        verdict = decide(inputs(pos_state="down", printers={}))
        assert (verdict.accepting, verdict.reason) == (False, "pos_down_and_no_printer")
        assert "no printer is configured" in verdict.detail

    def test_intake_refusing_wins_over_everything(self) -> None:
        """Disk below min_free_mb or the outbox closed: intake answers 503, so not accepting even with all up."""
        assert decide(inputs(disk_full=True)) == Verdict(
            False, "disk_full", "the disk is below storage.min_free_mb: intake refuses orders"
        )
        assert decide(inputs(storage_open=False, disk_full=True)).reason == "storage_unavailable"


UP = Verdict(True, "ok", "the POS takes orders")
ON_PAPER = Verdict(True, "pos_down_printing_fallback", "the POS is down: orders print on pass")
DOWN = Verdict(False, "pos_down_and_no_printer", "the POS is down and no fallback printer can print")
DISK = Verdict(False, "disk_full", "the disk is below storage.min_free_mb")


def at(seconds: float) -> datetime:
    """Return T0 plus ``seconds``."""
    return T0 + timedelta(seconds=seconds)


class TestDebouncer:
    """Going to not-accepting waits the debounce; going back to accepting is published at once."""

    def test_first_reading_is_published_at_once(self) -> None:
        """With nothing published before (a new outbox), the first reading stands, even a refusal."""
        first = Debouncer(30).observe(DOWN, at(0))
        assert first == Availability(False, DOWN.reason, DOWN.detail, at(0), 1)

    def test_refusal_is_published_only_after_holding_the_debounce(self) -> None:
        """Accepting -> not accepting: nothing before 30 s of continuous refusal; then since = when it began."""
        debouncer = Debouncer(30)
        debouncer.observe(UP, at(0))
        assert debouncer.observe(DOWN, at(10)) is None
        assert debouncer.due(at(10)) == at(40)
        assert debouncer.observe(DOWN, at(39.9)) is None
        published = debouncer.observe(DOWN, at(40))
        assert published == Availability(False, DOWN.reason, DOWN.detail, at(10), 2)
        assert debouncer.observe(DOWN, at(41)) is None
        assert debouncer.due(at(41)) is None

    def test_a_flapping_printer_never_pauses_the_storefront(self) -> None:
        """Refusals shorter than the debounce, however many, publish nothing."""
        debouncer = Debouncer(30)
        debouncer.observe(UP, at(0))
        for start in range(10, 600, 20):
            assert debouncer.observe(DOWN, at(start)) is None
            assert debouncer.observe(DOWN, at(start + 19)) is None
            assert debouncer.observe(ON_PAPER, at(start + 19.5)) is None
        assert debouncer.current is not None
        assert debouncer.current.accepting
        assert debouncer.current.seq == 1

    def test_back_to_accepting_is_published_at_once(self) -> None:
        """Not accepting -> accepting: published on the first reading, since = now, seq + 1."""
        debouncer = Debouncer(30, Availability(False, DOWN.reason, DOWN.detail, at(0), 7))
        published = debouncer.observe(ON_PAPER, at(100))
        assert published == Availability(True, ON_PAPER.reason, ON_PAPER.detail, at(100), 8)

    def test_reason_change_waits_the_debounce_and_keeps_since(self) -> None:
        """A new reason for the same answer is published after the debounce; since stays when the answer began."""
        debouncer = Debouncer(30)
        debouncer.observe(UP, at(0))
        assert debouncer.observe(ON_PAPER, at(5)) is None
        published = debouncer.observe(ON_PAPER, at(35))
        assert published is not None
        assert (published.reason, published.since, published.seq) == (ON_PAPER.reason, at(0), 2)
        debouncer.observe(DOWN, at(40))
        assert debouncer.observe(DISK, at(60)) is None, "the refusal's 30 s count from 40, not from its new reason"
        published = debouncer.observe(DISK, at(70))
        assert published is not None
        assert (published.accepting, published.reason, published.since) == (False, "disk_full", at(40))

    def test_other_words_for_the_same_state_are_not_a_change(self) -> None:
        """Only accepting and reason make a change: a detail that moves (another printer) publishes nothing."""
        debouncer = Debouncer(0)
        debouncer.observe(ON_PAPER, at(0))
        other = Verdict(True, ON_PAPER.reason, "the POS is down: orders print on bar")
        assert debouncer.observe(other, at(1)) is None
        assert debouncer.current is not None
        assert debouncer.current.detail == ON_PAPER.detail

    def test_zero_debounce_publishes_every_change_at_once(self) -> None:
        """debounce_seconds = 0: a refusal is published on the reading that sees it."""
        debouncer = Debouncer(0)
        debouncer.observe(UP, at(0))
        published = debouncer.observe(DOWN, at(1))
        assert published is not None
        assert (published.accepting, published.seq) == (False, 2)

    def test_restored_value_continues_its_seq(self) -> None:
        """After a restart the stored value is the baseline: the same state publishes nothing, a change seq + 1."""
        last = Availability(True, "ok", "the POS takes orders", at(-3600), 41)
        debouncer = Debouncer(30, last)
        assert debouncer.observe(UP, at(0)) is None
        assert debouncer.current == last
        debouncer.observe(DOWN, at(1))
        published = debouncer.observe(DOWN, at(31))
        assert published is not None
        assert published.seq == 42

    def test_payload_round_trips_with_an_offset(self) -> None:
        """The payload carries accepting, reason, since (RFC 3339 with its offset) and seq, and reads back."""
        value = Availability(False, DOWN.reason, DOWN.detail, at(0), 3)
        payload = value.as_dict()
        assert payload["since"] == "2026-11-23T12:00:00+00:00"
        assert {"accepting", "reason", "since", "seq"} <= payload.keys()
        assert Availability.from_dict(payload) == value
        with pytest.raises(ValueError, match="offset"):
            Availability.from_dict({**payload, "since": "2026-11-23T12:00:00"})
