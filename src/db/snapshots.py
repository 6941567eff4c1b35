"""Reading and writing frozen agent snapshots; immutable, so reads are cached."""

from __future__ import annotations

from collections import OrderedDict
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.db.tables import AgentSnapshotRow
from src.db.upsert import insert_missing
from src.domain import FROM_STORAGE, AgentSnapshot

_CACHED_SNAPSHOTS = 2048


class SnapshotNotFound(Exception):
    pass


class SnapshotStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._cache: OrderedDict[str, AgentSnapshot] = OrderedDict()

    async def save(self, account_id: str, snapshot: AgentSnapshot) -> str:
        snapshot_id = snapshot.snapshot_id
        if snapshot_id not in self._cache:
            row = {
                "id": snapshot_id,
                "account_id": account_id,
                "config": snapshot.model_dump(mode="json"),
                "created_time": datetime.now(UTC),
            }
            async with self._sessions.begin() as db:
                await insert_missing(db, AgentSnapshotRow, [row], ["id"])
            self._remember(snapshot_id, snapshot)
        return snapshot_id

    async def load(self, snapshot_id: str) -> AgentSnapshot:
        snapshot = self._cache.get(snapshot_id)
        if snapshot is None:
            async with self._sessions() as db:
                row = await db.get(AgentSnapshotRow, snapshot_id)
            if row is None:
                raise SnapshotNotFound(f"agent snapshot {snapshot_id} is not in the database")
            snapshot = AgentSnapshot.model_validate(row.config, context=FROM_STORAGE)
            self._remember(snapshot_id, snapshot)
        return snapshot

    def _remember(self, snapshot_id: str, snapshot: AgentSnapshot) -> None:
        self._cache[snapshot_id] = snapshot
        self._cache.move_to_end(snapshot_id)
        while len(self._cache) > _CACHED_SNAPSHOTS:
            self._cache.popitem(last=False)
