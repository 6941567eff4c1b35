"""Per-API-key request rates over the last minute, kept in this process's memory by the
`limits` library (each API process counts on its own).

The sliding-window counter (this minute's count plus the previous minute's, weighted by how
much of it is still in the window) costs two counters per key; the exact moving window would
keep one timestamp per request, and its in-memory storage sweeps them in a thread per key."""

from __future__ import annotations

import math
import time

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter


class RequestRateLimiter:
    def __init__(self, per_minute: int) -> None:
        """`per_minute` 0 turns the limit off."""
        self._item = RateLimitItemPerMinute(per_minute) if per_minute > 0 else None
        self._limiter = SlidingWindowCounterRateLimiter(MemoryStorage())

    async def retry_after(self, key_hash: str) -> int | None:
        """Counts one request for the key: None when it may go ahead, else the whole seconds
        until the window has room again."""
        if self._item is None or await self._limiter.hit(self._item, key_hash):
            return None
        stats = await self._limiter.get_window_stats(self._item, key_hash)
        return max(1, math.ceil(stats.reset_time - time.time()))
