"""Log rate limits (agent/service/log_limits.py): a repeated event is counted and summarised, with an injected clock."""

from __future__ import annotations

import io
import json
import logging

import structlog

from agent.service import logs
from agent.service.log_limits import RateLimitProcessor, RepeatLimiter


class Clock:
    """A monotonic clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limiter_passes_a_burst_then_counts() -> None:
    clock = Clock()
    limiter = RepeatLimiter(burst=3, interval=10, clock=clock)
    assert [limiter.admit("boom") for _ in range(5)] == [True, True, True, False, False]
    assert limiter.admit("other"), "another event has its own window"
    assert limiter.ended() == [], "the window has not ended"
    clock.now += 10
    assert limiter.ended() == [("boom", 2)]
    assert limiter.ended() == [], "a summary is given once"
    assert limiter.admit("boom"), "a new window lets the event through again"


def test_limiter_summarises_an_ended_window_when_the_event_comes_back() -> None:
    clock = Clock()
    limiter = RepeatLimiter(burst=1, interval=10, clock=clock)
    assert limiter.admit("boom")
    assert not limiter.admit("boom")
    clock.now += 11
    assert limiter.admit("boom")
    assert limiter.ended() == [("boom", 1)]


def test_processor_drops_over_the_limit_and_emits_one_summary() -> None:
    clock = Clock()
    emitted: list[tuple[str, int]] = []
    processor = RateLimitProcessor(
        RepeatLimiter(burst=2, interval=10, clock=clock), lambda n, c: emitted.append((n, c))
    )
    passed = 0
    for _ in range(10_000):
        try:
            processor(None, "error", {"event": "accept_failed"})
            passed += 1
        except structlog.DropEvent:
            pass
    assert passed == 2
    summary = {"event": "log_suppressed", "name": "accept_failed", "count": 9998}
    assert processor(None, "warning", dict(summary)) == summary, "the summary itself is never limited"
    clock.now += 10
    processor.flush()
    assert emitted == [("accept_failed", 9998)]


def test_configured_logging_writes_a_flood_as_a_few_lines_and_a_summary() -> None:
    """Through the real configuration: 10,000 identical errors (structlog and stdlib) stay a few hundred lines."""
    out = io.StringIO()
    logs.configure("info", "json", stream=out)
    log = structlog.get_logger("test")
    for _ in range(10_000):
        log.error("intake_accept_failed", errno=24)
        logging.getLogger("asyncio").error("socket.accept() out of system resource")
    assert logs._processor is not None
    logs._processor.limiter.clock = lambda: 1e12  # every window has ended
    logs.flush_suppressed()
    logging.basicConfig(force=True, handlers=[logging.NullHandler()])
    lines = out.getvalue().splitlines()
    assert len(lines) < 250, len(lines)
    summaries = [json.loads(line) for line in lines if "log_suppressed" in line]
    counted = {s["name"]: s["count"] for s in summaries}
    assert counted["intake_accept_failed"] == 10_000 - 100
    assert counted["asyncio: socket.accept() out of system resource"] == 10_000 - 100
