"""Audit events written outside a session's own activities: template variables that were missing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.db.queries import audit_row, insert_audit_rows

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
    kind = "template.missing_variable"
    events = [
        audit_row(
            session_id,
            account_id,
            kind,
            now,
            {"variable": name, "template": template},
            event_key=f"{session_id}:{kind}:{template}:{name}",
        )
        for name in sorted(set(missing))
    ]
    if not events:
        return
    async with sessions.begin() as db:
        await insert_audit_rows(db, events)
