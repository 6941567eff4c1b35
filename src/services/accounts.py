"""Accounts and their API keys. Keys are stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

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


class ApiKeyAuthenticator:
    """Resolves a Bearer key to its account; remembers answers so a turn costs no DB read."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._known: dict[str, str] = {}

    async def account_for(self, key: str | None) -> str:
        if not key:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        key_hash = hash_api_key(key)
        account_id = self._known.get(key_hash)
        if account_id is None:
            async with self._sessions() as db:
                row = await db.get(ApiKey, key_hash)
            if row is None or row.revoked:
                raise Unauthorized("invalid API key")
            account_id = row.account_id
            if len(self._known) < 10_000:
                self._known[key_hash] = account_id
        return account_id
