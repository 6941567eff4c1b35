"""Audit events written outside a session's own activities: template variables that were missing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.db.tables import AuditEvent
from src.db.upsert import insert_missing

TemplateName = Literal["system_prompt", "first_message"]


async def record_missing_variables(
    sessions: async_sessionmaker[AsyncSession],
    account_id: str,
    session_id: str,
    template: TemplateName,
    missing: list[str],
) -> None:
    """One `template.missing_variable` event per variable and template, however often the
    template is rendered (the system prompt is, at every turn)."""
    now = datetime.now(UTC)
    events = [
        {
            "event_key": f"{session_id}:template.missing_variable:{template}:{name}",
            "account_id": account_id,
            "session_id": session_id,
            "kind": "template.missing_variable",
            "data": {"variable": name, "template": template},
            "time": now,
        }
        for name in sorted(set(missing))
    ]
    if not events:
        return
    async with sessions.begin() as db:
        await insert_missing(db, AuditEvent, events, ["event_key"])
