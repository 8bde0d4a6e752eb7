"""When to try an order again: full-jitter exponential backoff, the POS's Retry-After, pre-order spread."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta


def full_jitter(strike: int, *, base: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """Return a delay drawn uniformly from [0, min(cap, base * 2**(strike-1))] (AWS "full jitter")."""
    ceiling = min(cap, base * 2.0 ** max(0, strike - 1))
    return ceiling * rand()


def next_attempt_at(
    *,
    now: datetime,
    strike: int,
    base: float,
    cap: float,
    retry_after: float | None = None,
    requested_at: datetime | None = None,
    attempts_left: int = 1,
    rand: Callable[[], float] = random.random,
) -> datetime:
    """Return when to try again after the ``strike``-th counted failure.

    A pre-order whose requested time is still ahead may spread its remaining attempts up to that time,
    so a short POS outage hours before service does not use them all up. The POS's own Retry-After is
    a floor: the agent never comes back sooner than asked.
    """
    effective_cap = cap
    if requested_at is not None and requested_at > now and attempts_left > 0:
        spread = (requested_at - now).total_seconds() / attempts_left
        effective_cap = max(cap, spread)
    delay = full_jitter(strike, base=base, cap=effective_cap, rand=rand)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return now + timedelta(seconds=delay)
