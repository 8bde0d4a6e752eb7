"""Never more than ``rate`` POS requests in any second: requests are spaced 1/rate apart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class RateLimiter:
    """Hands out send slots at most ``rate`` per second, evenly spaced (no bursts into a POS)."""

    def __init__(
        self,
        rate: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.interval = 1.0 / rate
        self._monotonic = monotonic
        self._sleep = sleep
        self._next = -float("inf")
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Return when the next request may go."""
        async with self._lock:
            now = self._monotonic()
            wait = self._next - now
            if wait > 0:
                await self._sleep(wait)
                now = self._monotonic()
            self._next = max(now, self._next) + self.interval
