"""Squads: agents that hand a conversation to each other, versioned like agents (every update
a new immutable version, delete soft). Members name stored agents or carry inline ones, whose
secrets are sealed in storage as agents' are. A session freezes every member at open."""

from __future__ import annotations

import builtins
import json
import uuid
from datetime import UTC, datetime

from pydantic import BaseModel
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.db.queries import latest_versions, version_row
from src.db.tables import SquadVersion
from src.domain import FROM_STORAGE, AgentSnapshot, SquadPatch, SquadSpec
from src.errors import Conflict, InvalidInput, NotFound, ParleyError, describe_validation_error
from src.sealing.secret_box import SecretBox, SecretUnreadable
from src.services.agents import AgentService


class SquadRecord(BaseModel):
    id: str
    version: int
    spec: SquadSpec
    created_time: datetime


class FrozenMember(BaseModel):
    name: str
    snapshot: AgentSnapshot


class SquadService:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], agents: AgentService, secrets: SecretBox
    ) -> None:
        self._sessions = sessions
        self._agents = agents
        self._secrets = secrets

    async def create(self, account_id: str, spec: SquadSpec) -> SquadRecord:
        await self.freeze_members(account_id, spec)
        return await self._insert(account_id, f"squad-{uuid.uuid4()}", 1, spec)

    async def update(self, account_id: str, squad_id: str, patch: SquadPatch) -> SquadRecord:
        current = await self.get(account_id, squad_id)
        changes = {name: getattr(patch, name) for name in patch.model_fields_set}
        try:
            spec = SquadSpec.model_validate({**current.spec.model_dump(), **changes})
        except ValueError as error:
            raise InvalidInput(
                f"invalid squad update: {describe_validation_error(error)}"
            ) from None
        await self.freeze_members(account_id, spec)
        try:
            return await self._insert(account_id, squad_id, current.version + 1, spec)
        except IntegrityError:
            raise Conflict("the squad was updated concurrently; retry the update") from None

    async def delete(self, account_id: str, squad_id: str) -> None:
        """Soft delete: sessions opened with the squad keep their frozen members."""
        await self.get(account_id, squad_id)
        async with self._sessions.begin() as db:
            await db.execute(
                update(SquadVersion)
                .where(SquadVersion.id == squad_id, SquadVersion.account_id == account_id)
                .values(deleted=True)
            )

    async def reseal(self, account_id: str | None = None) -> tuple[int, int]:
        """Seal inline members' secrets with the first key. Returns (rows changed, rows left
        as they were because no key opens them)."""
        changed = unreadable = 0
        query = select(SquadVersion)
        if account_id is not None:
            query = query.where(SquadVersion.account_id == account_id)
        async with self._sessions.begin() as db:
            for row in (await db.scalars(query)).all():
                stored = json.loads(json.dumps(row.spec))
                try:
                    for member in stored["members"]:
                        if member["agent"] is not None:
                            member["agent"] = self._secrets.reseal_agent(member["agent"])
                except SecretUnreadable:
                    unreadable += 1
                    continue
                if stored != row.spec:
                    row.spec = stored
                    changed += 1
        return changed, unreadable

    async def get(self, account_id: str, squad_id: str, version: int | None = None) -> SquadRecord:
        async with self._sessions() as db:
            row = await version_row(db, SquadVersion, account_id, squad_id, version)
        if row is None:
            which = f"version {version} of squad" if version is not None else "squad"
            raise NotFound(f"{which} {squad_id!r} not found")
        return self._record(row)

    async def list(
        self, account_id: str, limit: int, cursor: str | None
    ) -> tuple[list[SquadRecord], str | None]:
        async with self._sessions() as db:
            rows, next_cursor = await latest_versions(db, SquadVersion, account_id, limit, cursor)
        return [self._record(row) for row in rows], next_cursor

    async def freeze_members(self, account_id: str, spec: SquadSpec) -> builtins.list[FrozenMember]:
        """Every member as a session runs it (a stored agent's latest version, overrides
        applied), its handoffs checked against the squad; a bad member is a 422 naming it."""
        names = {member.name for member in spec.members}
        frozen: builtins.list[FrozenMember] = []
        for index, member in enumerate(spec.members):
            where = f"members[{index}] ({member.name!r})"
            try:
                snapshot = await self._agents.resolve(
                    account_id,
                    member.agent_id,
                    member.agent,
                    member.agent_overrides,
                    squad_member=True,
                )
            except ParleyError as error:  # an unknown agent (404) is the caller's input here
                raise InvalidInput(f"{where}: {error.message}") from None
            for destination in snapshot.handoffs():
                if destination.member not in names or destination.member == member.name:
                    raise InvalidInput(
                        f"{where}: its handoff to {destination.member!r} names no other member "
                        f"of the squad (members: {sorted(names)})"
                    )
            frozen.append(FrozenMember(name=member.name, snapshot=snapshot))
        return frozen

    async def _insert(
        self, account_id: str, squad_id: str, version: int, spec: SquadSpec
    ) -> SquadRecord:
        stored = json.loads(spec.model_dump_json())
        for member in stored["members"]:
            if member["agent"] is not None:
                member["agent"] = self._secrets.seal_agent(member["agent"])
        row = SquadVersion(
            id=squad_id,
            version=version,
            account_id=account_id,
            name=spec.name,
            spec=stored,
            created_time=datetime.now(UTC),
            deleted=False,
        )
        async with self._sessions.begin() as db:
            db.add(row)
        return SquadRecord(id=squad_id, version=version, spec=spec, created_time=row.created_time)

    def _record(self, row: SquadVersion) -> SquadRecord:
        stored = json.loads(json.dumps(row.spec))
        for member in stored["members"]:
            if member["agent"] is not None:
                member["agent"] = self._secrets.open_agent(member["agent"])
        return SquadRecord(
            id=row.id,
            version=row.version,
            spec=SquadSpec.model_validate(stored, context=FROM_STORAGE),
            created_time=row.created_time,
        )
