"""Never more than ``rate`` POS requests in any second: requests are spaced 1/rate apart."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

# The POS counts requests when they arrive, not when we send them: evenly spaced sends can bunch up
# in transit by a few milliseconds, so a full window is closed a little longer than one second.
TRANSIT_MARGIN_SECONDS = 0.05


class RateLimiter:
    """Hands out send slots evenly spaced, and at most ``rate`` in any window of 1 s plus a transit margin."""

    def __init__(
        self,
        rate: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        margin: float = TRANSIT_MARGIN_SECONDS,
    ) -> None:
        self.interval = 1.0 / rate
        self._window = 1.0 + margin
        self._recent: deque[float] = deque(maxlen=max(1, math.floor(rate)))
        self._monotonic = monotonic
        self._sleep = sleep
        self._next = -float("inf")
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Return when the next request may go."""
        async with self._lock:
            now = self._monotonic()
            earliest = self._next
            if len(self._recent) == self._recent.maxlen:
                earliest = max(earliest, self._recent[0] + self._window)
            wait = earliest - now
            if wait > 0:
                await self._sleep(wait)
                now = self._monotonic()
            self._recent.append(now)
            self._next = now + self.interval
