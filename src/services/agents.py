"""Agents: stored, versioned configurations owned by an account."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from pydantic import BaseModel
from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.config import Settings
from src.db.tables import AgentVersion
from src.domain import AgentSnapshot, AgentSpec, ModelConfig
from src.errors import NotFound
from src.pagination import decode_cursor, encode_cursor


class AgentRecord(BaseModel):
    id: str
    version: int
    spec: AgentSpec
    created_time: datetime


def _record(row: AgentVersion) -> AgentRecord:
    return AgentRecord(
        id=row.id,
        version=row.version,
        spec=AgentSpec.model_validate(row.spec),
        created_time=row.created_time,
    )


class AgentService:
    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._settings = settings
        self._sessions = sessions

    async def create(self, account_id: str, spec: AgentSpec) -> AgentRecord:
        row = AgentVersion(
            id=f"agent-{uuid.uuid4()}",
            version=1,
            account_id=account_id,
            name=spec.name,
            spec=spec.model_dump(mode="json"),
            created_time=datetime.now(UTC),
            deleted=False,
        )
        async with self._sessions.begin() as db:
            db.add(row)
        return _record(row)

    async def get(self, account_id: str, agent_id: str) -> AgentRecord:
        async with self._sessions() as db:
            row = await db.scalar(
                select(AgentVersion)
                .where(
                    AgentVersion.id == agent_id,
                    AgentVersion.account_id == account_id,
                    AgentVersion.deleted.is_(False),
                )
                .order_by(AgentVersion.version.desc())
                .limit(1)
            )
        if row is None:
            raise NotFound(f"agent {agent_id!r} not found")
        return _record(row)

    async def list(
        self, account_id: str, limit: int, cursor: str | None
    ) -> tuple[list[AgentRecord], str | None]:
        latest = (
            select(AgentVersion.id, func.max(AgentVersion.version).label("version"))
            .where(AgentVersion.account_id == account_id)
            .group_by(AgentVersion.id)
            .subquery()
        )
        query = (
            select(AgentVersion)
            .join(
                latest,
                and_(AgentVersion.id == latest.c.id, AgentVersion.version == latest.c.version),
            )
            .where(AgentVersion.deleted.is_(False))
            .order_by(AgentVersion.created_time.desc(), AgentVersion.id.desc())
            .limit(limit + 1)
        )
        if cursor:
            created, last_id = decode_cursor(cursor)
            query = query.where(
                or_(
                    AgentVersion.created_time < created,
                    and_(AgentVersion.created_time == created, AgentVersion.id < last_id),
                )
            )
        async with self._sessions() as db:
            rows = list((await db.scalars(query)).all())
        page = [_record(row) for row in rows[:limit]]
        more = len(rows) > limit
        return page, encode_cursor(page[-1].created_time, page[-1].id) if more and page else None

    def snapshot(self, agent: AgentRecord) -> AgentSnapshot:
        """Freeze an agent for a session, resolving the server's default model."""
        model = agent.spec.model or ModelConfig(
            provider=self._settings.default_llm, name=self._settings.default_model_name
        )
        return AgentSnapshot(id=agent.id, version=agent.version, spec=agent.spec, model=model)
