"""Publishable widget keys (`pw_...`): created, read, listed and deleted by an account with its
secret API key; resolved, on each browser request, to the agent and origins they allow.

A key is shown once, at creation, and stored only as its SHA-256 hash, like API keys
(src/services/accounts.py)."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from cachetools import TTLCache
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.db.queries import newest_first, page_of
from src.db.tables import WidgetKey
from src.errors import NotFound, Unauthorized
from src.pagination import encode_cursor
from src.services.accounts import hash_api_key
from src.services.agents import AgentService
from src.widget.origins import OriginPattern, parse_origin_pattern

WIDGET_KEY_PREFIX = "pw_"


class WidgetKeyRecord(BaseModel):
    id: str
    agent_id: str
    key_prefix: str
    allowed_origins: list[str]
    created_time: datetime


@dataclass(frozen=True)
class WidgetGrant:
    """What a valid `pw_` key allows: its account's agent, from its origins."""

    key_id: str
    account_id: str
    agent_id: str
    origins: list[OriginPattern]


class WidgetKeyService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        agents: AgentService,
        cache_seconds: float = 30.0,
    ) -> None:
        self._sessions = sessions
        self._agents = agents
        # Like API keys: a deleted key stops working in other API processes once their entry
        # expires (PARLEY_API_KEY_CACHE_SECONDS); in this one, at once.
        self._known: TTLCache[str, WidgetGrant] | None = (
            TTLCache(maxsize=10_000, ttl=cache_seconds) if cache_seconds > 0 else None
        )

    async def create(
        self, account_id: str, agent_id: str, origins: list[OriginPattern]
    ) -> tuple[WidgetKeyRecord, str]:
        """A new key for one of the account's agents; returns it with the key in clear, which
        is never shown again."""
        await self._agents.get(account_id, agent_id)  # the account's, or NotFound
        key = WIDGET_KEY_PREFIX + secrets.token_urlsafe(32)
        row = WidgetKey(
            id=f"wk-{uuid.uuid4()}",
            account_id=account_id,
            agent_id=agent_id,
            key_hash=hash_api_key(key),
            prefix=key[:8],
            allowed_origins=[str(origin) for origin in origins],
            created_time=datetime.now(UTC),
            revoked=False,
        )
        async with self._sessions.begin() as db:
            db.add(row)
        return _record(row), key

    async def get(self, account_id: str, key_id: str) -> WidgetKeyRecord:
        return _record(await self._row(account_id, key_id))

    async def list(
        self, account_id: str, limit: int, cursor: str | None
    ) -> tuple[list[WidgetKeyRecord], str | None]:
        query = select(WidgetKey).where(
            WidgetKey.account_id == account_id, WidgetKey.revoked.is_(False)
        )
        query = newest_first(query, WidgetKey.created_time, WidgetKey.id, limit, cursor)
        async with self._sessions() as db:
            rows = (await db.scalars(query)).all()
        page, next_cursor = page_of(
            rows, limit, lambda row: encode_cursor(row.created_time, row.id)
        )
        return [_record(row) for row in page], next_cursor

    async def delete(self, account_id: str, key_id: str) -> None:
        async with self._sessions.begin() as db:
            row = await db.get(WidgetKey, key_id)
            if row is None or row.account_id != account_id or row.revoked:
                raise NotFound(f"widget key {key_id!r} not found")
            row.revoked = True
            key_hash = row.key_hash
        if self._known is not None:
            self._known.pop(key_hash, None)

    async def grant_for(self, key: str) -> WidgetGrant:
        """The grant of a `pw_` key; 401 when it is unknown or deleted."""
        key_hash = hash_api_key(key)
        grant = self._known.get(key_hash) if self._known is not None else None
        if grant is None:
            async with self._sessions() as db:
                row = await db.scalar(select(WidgetKey).where(WidgetKey.key_hash == key_hash))
            if row is None or row.revoked:
                raise Unauthorized("invalid or deleted widget key")
            grant = WidgetGrant(
                key_id=row.id,
                account_id=row.account_id,
                agent_id=row.agent_id,
                origins=[parse_origin_pattern(text) for text in row.allowed_origins],
            )
            if self._known is not None:
                self._known[key_hash] = grant
        return grant

    async def _row(self, account_id: str, key_id: str) -> WidgetKey:
        async with self._sessions() as db:
            row = await db.get(WidgetKey, key_id)
        if row is None or row.account_id != account_id or row.revoked:
            raise NotFound(f"widget key {key_id!r} not found")
        return row


def _record(row: WidgetKey) -> WidgetKeyRecord:
    return WidgetKeyRecord(
        id=row.id,
        agent_id=row.agent_id,
        key_prefix=row.prefix,
        allowed_origins=list(row.allowed_origins),
        created_time=row.created_time,
    )
