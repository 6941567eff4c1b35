"""The record of MCP tool calls that may have reached their server, so a retried activity
(a worker killed mid-call, an attempt timed out by Temporal) does not send the call again."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.db.tables import McpCallSent
from src.db.upsert import insert_if_missing


class SentMcpCalls:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def was_sent(self, idempotency_key: str) -> bool:
        async with self._sessions() as db:
            found = await db.scalar(
                select(McpCallSent.idempotency_key).where(
                    McpCallSent.idempotency_key == idempotency_key
                )
            )
        return found is not None

    async def claim(self, idempotency_key: str, session_id: str) -> bool:
        """Record that the call is about to be sent, committed before it is; False when a row
        was already there (another attempt claimed it: do not send)."""
        row = {
            "idempotency_key": idempotency_key,
            "session_id": session_id,
            "sent_time": datetime.now(UTC),
        }
        async with self._sessions.begin() as db:
            return await insert_if_missing(db, McpCallSent, row, ["idempotency_key"])
