"""How many sessions are active, for /metrics: a count in the database, cached briefly."""

from __future__ import annotations

from cachetools import TTLCache
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from src.db.tables import ChatSession


class ActiveSessionsCount:
    """The number of sessions not yet final, counted in the database at most once per
    PARLEY_METRICS_CACHE_SECONDS however often /metrics is scraped (sessions finish in the
    workers, so no API process sees every change)."""

    def __init__(self, engine: AsyncEngine, cache_seconds: float) -> None:
        self._engine = engine
        self._cache: TTLCache[str, int] | None = (
            TTLCache(maxsize=1, ttl=cache_seconds) if cache_seconds > 0 else None
        )

    async def value(self) -> int:
        cached = self._cache.get("active") if self._cache is not None else None
        if cached is not None:
            return cached
        async with self._engine.connect() as connection:
            active = await connection.scalar(
                select(func.count()).select_from(ChatSession).where(ChatSession.status == "active")
            )
        if self._cache is not None:
            self._cache["active"] = active or 0
        return active or 0
