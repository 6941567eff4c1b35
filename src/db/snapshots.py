"""Reading and writing frozen agent snapshots; immutable, so reads are cached. Their secrets
are sealed on the way into the database and opened on the way out (src/sealing/secret_box.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from cachetools import LRUCache
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.db.tables import AgentSnapshotRow, ChatSession
from src.db.upsert import insert_missing
from src.domain import FROM_STORAGE, AgentSnapshot, SessionStatus
from src.sealing.secret_box import SecretBox, SecretUnreadable, erase_agent_secrets, has_secrets

_CACHED_SNAPSHOTS = 2048


class SnapshotNotFound(Exception):
    pass


class SnapshotStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], secrets: SecretBox) -> None:
        self._sessions = sessions
        self._secrets = secrets
        self._cache: LRUCache[str, AgentSnapshot] = LRUCache(_CACHED_SNAPSHOTS)

    async def save(self, account_id: str, snapshot: AgentSnapshot) -> str:
        snapshot_id = snapshot.snapshot_id
        if snapshot_id not in self._cache:
            config = snapshot.model_dump(mode="json")
            config["spec"] = self._secrets.seal_agent(config["spec"])
            row = {
                "id": snapshot_id,
                "account_id": account_id,
                "config": config,
                "created_time": datetime.now(UTC),
            }
            async with self._sessions.begin() as db:
                await insert_missing(db, AgentSnapshotRow, [row], ["id"])
            self._cache[snapshot_id] = snapshot
        return snapshot_id

    async def load(self, snapshot_id: str) -> AgentSnapshot:
        snapshot = self._cache.get(snapshot_id)
        if snapshot is None:
            async with self._sessions() as db:
                row = await db.get(AgentSnapshotRow, snapshot_id)
            if row is None:
                raise SnapshotNotFound(f"agent snapshot {snapshot_id} is not in the database")
            snapshot = self._open(row)
            self._cache[snapshot_id] = snapshot
        return snapshot

    async def erase_unused_secrets(self, account_id: str, agent_id: str) -> int:
        """Erase the secrets of every snapshot of an agent that no active session runs on
        (a session's MCP-resolved snapshot counts as the one it was opened with). Returns
        how many snapshots were erased. Running processes' caches keep theirs until evicted."""
        async with self._sessions.begin() as db:
            active = set(
                await db.scalars(
                    select(ChatSession.snapshot_id).where(
                        ChatSession.account_id == account_id,
                        ChatSession.agent_id == agent_id,
                        ChatSession.status == SessionStatus.ACTIVE.value,
                    )
                )
            )
            rows = (
                await db.scalars(
                    select(AgentSnapshotRow).where(AgentSnapshotRow.account_id == account_id)
                )
            ).all()
            erased = 0
            for row in rows:
                if row.config.get("id") != agent_id or row.id in active:
                    continue
                if self._opened_as(row) & active or not has_secrets(row.config["spec"]):
                    continue
                config = {**row.config, "spec": erase_agent_secrets(row.config["spec"])}
                await db.execute(
                    update(AgentSnapshotRow)
                    .where(AgentSnapshotRow.id == row.id)
                    .values(config=config)
                )
                self._cache.pop(row.id, None)
                erased += 1
        return erased

    async def reseal(self, account_id: str | None = None) -> tuple[int, int]:
        """Seal every snapshot's secrets (of one account, or all) with the first key.
        Returns (rows changed, rows no key opens)."""
        changed = unreadable = 0
        query = select(AgentSnapshotRow)
        if account_id is not None:
            query = query.where(AgentSnapshotRow.account_id == account_id)
        async with self._sessions.begin() as db:
            for row in (await db.scalars(query)).all():
                try:
                    spec = self._secrets.reseal_agent(row.config["spec"])
                except SecretUnreadable:
                    unreadable += 1
                    continue
                if spec != row.config["spec"]:
                    await db.execute(
                        update(AgentSnapshotRow)
                        .where(AgentSnapshotRow.id == row.id)
                        .values(config={**row.config, "spec": spec})
                    )
                    changed += 1
        return changed, unreadable

    def _open(self, row: AgentSnapshotRow) -> AgentSnapshot:
        config = {**row.config, "spec": self._secrets.open_agent(row.config["spec"])}
        return AgentSnapshot.model_validate(config, context=FROM_STORAGE)

    def _opened_as(self, row: AgentSnapshotRow) -> set[str]:
        """The id of the snapshot a session was opened with, for this one (which may be
        that snapshot with its MCP tools discovered)."""
        try:
            snapshot = self._open(row)
        except SecretUnreadable:
            return set()
        return {snapshot.model_copy(update={"mcp_tools": [], "mcp_discovered": False}).snapshot_id}
