"""Accounts and their API keys. Keys are stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

from cachetools import TTLCache
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.db.tables import Account, ApiKey
from src.db.upsert import insert_missing
from src.errors import Unauthorized

DEFAULT_ACCOUNT_ID = "default"
KEY_PREFIX = "pk_"


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


async def register_api_key(
    sessions: async_sessionmaker[AsyncSession],
    key: str,
    account_id: str = DEFAULT_ACCOUNT_ID,
    account_name: str | None = None,
) -> None:
    """Store a key for an account, creating the account if needed (idempotent)."""
    now = datetime.now(UTC)
    async with sessions.begin() as db:
        await insert_missing(
            db,
            Account,
            [{"id": account_id, "name": account_name or account_id, "created_time": now}],
            ["id"],
        )
        await insert_missing(
            db,
            ApiKey,
            [
                {
                    "key_hash": hash_api_key(key),
                    "account_id": account_id,
                    "prefix": key[:8],
                    "created_time": now,
                    "revoked": False,
                }
            ],
            ["key_hash"],
        )


async def revoke_api_key(sessions: async_sessionmaker[AsyncSession], key: str) -> bool:
    """Mark a key revoked; False when no such key is stored. API processes stop accepting it
    once their cache entry expires (PARLEY_API_KEY_CACHE_SECONDS)."""
    async with sessions.begin() as db:
        row = await db.get(ApiKey, hash_api_key(key))
        if row is None:
            return False
        row.revoked = True
    return True


class ApiKeyAuthenticator:
    """Resolves a Bearer key to its account; remembers answers for a short while so a turn
    costs no DB read, and a revoked key stops working when its entry expires."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], cache_seconds: float = 30.0
    ) -> None:
        self._sessions = sessions
        # Unknown keys are not remembered: a key created a moment ago works at once.
        self._known: TTLCache[str, str] | None = (
            TTLCache(maxsize=10_000, ttl=cache_seconds) if cache_seconds > 0 else None
        )

    async def account_for(self, key: str | None) -> str:
        if not key:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        key_hash = hash_api_key(key)
        account_id = self._known.get(key_hash) if self._known is not None else None
        if account_id is None:
            async with self._sessions() as db:
                row = await db.get(ApiKey, key_hash)
            if row is None or row.revoked:
                raise Unauthorized("invalid API key")
            account_id = row.account_id
            if self._known is not None:
                self._known[key_hash] = account_id
        return account_id
