"""Per-API-key request rates: a moving window of the last minute, kept in this process's
memory by the `limits` library (each API process counts on its own)."""

from __future__ import annotations

import math
import time

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter


class RequestRateLimiter:
    def __init__(self, per_minute: int) -> None:
        """`per_minute` 0 turns the limit off."""
        self._item = RateLimitItemPerMinute(per_minute) if per_minute > 0 else None
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    async def retry_after(self, key_hash: str) -> int | None:
        """Counts one request for the key: None when it may go ahead, else the whole seconds
        until the oldest request in the window leaves it."""
        if self._item is None or await self._limiter.hit(self._item, key_hash):
            return None
        stats = await self._limiter.get_window_stats(self._item, key_hash)
        return max(1, math.ceil(stats.reset_time - time.time()))
