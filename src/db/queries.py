"""Reads and rows that several services and activities share: a session's transcript in order,
audit rows and their pages, and newest-first keyset pages."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol, TypedDict, TypeVar, TypeVarTuple

from sqlalchemy import Select, SQLColumnExpression, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped

from src.db.tables import AuditEvent, ChatMessage, message_of_row
from src.db.upsert import insert_missing
from src.domain import Message
from src.pagination import decode_cursor, decode_id_cursor, encode_cursor, encode_id_cursor

Row = TypeVar("Row")
Columns = TypeVarTuple("Columns")
V = TypeVar("V")


async def transcript(
    db: AsyncSession, session_id: str, start: int = 0, stop: int | None = None
) -> list[Message]:
    """A session's messages from number `start` up to, not including, `stop`, in order."""
    query = select(ChatMessage).where(ChatMessage.session_id == session_id)
    if start > 0:
        query = query.where(ChatMessage.seq >= start)
    if stop is not None:
        query = query.where(ChatMessage.seq < stop)
    rows = await db.scalars(query.order_by(ChatMessage.seq))
    return [message_of_row(row) for row in rows]


class AuditRow(TypedDict):
    event_key: str
    account_id: str
    session_id: str
    kind: str
    data: dict[str, Any]
    time: datetime


def audit_row(
    session_id: str,
    account_id: str,
    kind: str,
    time: datetime,
    data: dict[str, Any] | None = None,
    *,
    event_key: str | None = None,
) -> AuditRow:
    """An audit event of a session. Its `event_key` (by default `<session id>:<kind>`) is
    unique: a retried write adds no second row."""
    return {
        "event_key": event_key if event_key is not None else f"{session_id}:{kind}",
        "account_id": account_id,
        "session_id": session_id,
        "kind": kind,
        "data": data if data is not None else {},
        "time": time,
    }


async def insert_audit_rows(
    db: AsyncSession, rows: Sequence[AuditRow], batch: int | None = None
) -> None:
    """Insert the rows in their order (the log lists events by id), skipping any whose key
    is stored already; `batch`: the session's write that stores them (recorded_batches)."""
    await insert_missing(db, AuditEvent, [{**row, "batch": batch} for row in rows], ["event_key"])


async def audit_page(
    db: AsyncSession, session_id: str, limit: int, cursor: str | None
) -> tuple[list[AuditEvent], str | None]:
    """A session's audit events oldest first, `limit` a page, after `cursor`. The caller
    checks that the session is the caller's account's."""
    query = select(AuditEvent).where(AuditEvent.session_id == session_id)
    if cursor:
        query = query.where(AuditEvent.id > decode_id_cursor(cursor))
    rows = (await db.scalars(query.order_by(AuditEvent.id).limit(limit + 1))).all()
    return page_of(rows, limit, lambda row: encode_id_cursor(row.id))


def newest_first(
    query: Select[*Columns],
    created: SQLColumnExpression[datetime],
    item_id: SQLColumnExpression[str],
    limit: int,
    cursor: str | None,
) -> Select[*Columns]:
    """`query` ordered newest first by (`created`, `item_id`), from past the item `cursor`
    names, with one row more than a page so that `page_of` can tell whether another follows."""
    if cursor:
        last_created, last_id = decode_cursor(cursor)
        query = query.where(
            or_(created < last_created, and_(created == last_created, item_id < last_id))
        )
    return query.order_by(created.desc(), item_id.desc()).limit(limit + 1)


def page_of(
    rows: Sequence[Row], limit: int, cursor_of: Callable[[Row], str]
) -> tuple[list[Row], str | None]:
    """The first `limit` rows of a query that asked for one more, and the cursor of the next
    page (None when these are the last)."""
    page = list(rows[:limit])
    more = len(rows) > limit
    return page, cursor_of(page[-1]) if more and page else None


class Versioned(Protocol):
    """A table of immutable versions (agents, squads): (id, version) rows of an account."""

    id: Mapped[str]
    version: Mapped[int]
    account_id: Mapped[str]
    created_time: Mapped[datetime]
    deleted: Mapped[bool]


async def latest_versions(
    db: AsyncSession, table: type[V], account_id: str, limit: int, cursor: str | None
) -> tuple[list[V], str | None]:
    """A page of the account's items at their latest version, not deleted, newest first by
    when each was created (its first version), which no update changes, so pages stay stable
    while items are patched."""
    entity: Any = table
    latest = (
        select(
            entity.id,
            func.max(entity.version).label("version"),
            func.min(entity.created_time).label("first_created"),
        )
        .where(entity.account_id == account_id)
        .group_by(entity.id)
        .subquery()
    )
    query = (
        select(entity, latest.c.first_created)
        .join(latest, and_(entity.id == latest.c.id, entity.version == latest.c.version))
        .where(entity.deleted.is_(False))
    )
    query = newest_first(query, latest.c.first_created, entity.id, limit, cursor)
    rows = (await db.execute(query)).all()
    page, next_cursor = page_of(rows, limit, lambda row: encode_cursor(row[1], row[0].id))
    return [row[0] for row in page], next_cursor


async def version_row(
    db: AsyncSession, table: type[V], account_id: str, item_id: str, version: int | None
) -> V | None:
    """The account's item at `version`, or at its latest; None when deleted or not there."""
    entity: Any = table
    query = select(entity).where(
        entity.id == item_id, entity.account_id == account_id, entity.deleted.is_(False)
    )
    if version is not None:
        query = query.where(entity.version == version)
    row: V | None = await db.scalar(query.order_by(entity.version.desc()).limit(1))
    return row
