"""A conversation's live stream in the database: written by the worker's activities, read by
any API process (`GET /chats/{id}/stream`, the SSE answers of the message routes).

The stream is a side channel beside Temporal, not workflow history: model text arrives in
batches every few tens of milliseconds and none of it becomes a history event. Positions count
a conversation's events from 1 without gaps; a writer takes the next one inside its
transaction, and on PostgreSQL a writer that lost the race for a position (the unique index)
tries again with the next, so positions are handed out in commit order and a follower that
has read position n never later finds an event before it. On PostgreSQL each write also
NOTIFYs the API processes (`STREAM_CHANNEL`); on SQLite they poll by `id`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from pydantic import BaseModel, Field
from sqlalchemy import Table, delete, func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from src.db.tables import StreamEvent

STREAM_CHANNEL = "parley_stream"
# Positions lost to concurrent writers of one conversation before a write gives up (a write
# that gives up fails its activity, which Temporal retries).
_POSITION_ATTEMPTS = 20
# Partial model text is void once its message is recorded; a final conversation keeps the
# rest of its stream (messages, tool calls, the end) for followers that resume late.
PARTIAL_KINDS = ("message.delta", "discard")


class NewEvent(BaseModel):
    """An event to append. `key`, when set, makes it unique within the conversation."""

    kind: str
    data: dict[str, Any] = Field(default_factory=dict)
    turn: str | None = None
    key: str | None = None


async def append_events(
    db: AsyncSession,
    conversation_id: str,
    events: list[NewEvent],
    time: datetime,
    batch: int | None = None,
) -> None:
    """Append `events` in order, in the caller's transaction; keyed events already there
    (or twice in `events`) are skipped. `batch`: the session's write that appends them
    (src/db/recorded_batches.py)."""
    if not events:
        return
    if db.get_bind().dialect.name != "postgresql":
        await _append(db, conversation_id, events, time, batch)  # SQLite: one writer at a time
        return
    for _ in range(_POSITION_ATTEMPTS):
        try:
            async with db.begin_nested():
                await _append(db, conversation_id, events, time, batch)
                await db.execute(
                    text("SELECT pg_notify(:channel, :conversation)"),
                    {"channel": STREAM_CHANNEL, "conversation": conversation_id},
                )
            return
        except IntegrityError:
            continue  # another writer took the position (or the key) first: read again
    raise RuntimeError(f"no stream position for {conversation_id} after {_POSITION_ATTEMPTS} tries")


async def _append(
    db: AsyncSession,
    conversation_id: str,
    events: list[NewEvent],
    time: datetime,
    batch: int | None,
) -> None:
    keys = [event.key for event in events if event.key is not None]
    taken: set[str | None] = set()
    if keys:
        taken = set(
            await db.scalars(
                select(StreamEvent.event_key).where(
                    StreamEvent.session_id == conversation_id, StreamEvent.event_key.in_(keys)
                )
            )
        )
    fresh: list[NewEvent] = []
    for event in events:
        if event.key is not None:
            if event.key in taken:
                continue
            taken.add(event.key)
        fresh.append(event)
    if not fresh:
        return
    head = await head_position(db, conversation_id)
    rows = [
        {
            "session_id": conversation_id,
            "position": head + offset,
            "kind": event.kind,
            "turn": event.turn,
            "event_key": event.key,
            "data": event.data,
            "time": time,
            "batch": batch,
        }
        for offset, event in enumerate(fresh, start=1)
    ]
    # Core, many rows in one statement compiled once: the ORM's unit of work would also read
    # every new id back, which nothing here needs.
    await db.execute(insert(cast(Table, StreamEvent.__table__)), rows)


async def head_position(db: AsyncSession, conversation_id: str) -> int:
    """The position of the conversation's last event; 0 before the first."""
    head = await db.scalar(
        select(func.max(StreamEvent.position)).where(StreamEvent.session_id == conversation_id)
    )
    return head or 0


async def events_after(
    db: AsyncSession, conversation_id: str, after: int, limit: int = 500
) -> list[StreamEvent]:
    """The conversation's events after position `after`, in order."""
    rows = await db.scalars(
        select(StreamEvent)
        .where(StreamEvent.session_id == conversation_id, StreamEvent.position > after)
        .order_by(StreamEvent.position)
        .limit(limit)
    )
    return list(rows)


async def written_since(db: AsyncSession, last_id: int) -> tuple[set[str], int]:
    """The conversations with events of `id` above `last_id`, and the highest such id."""
    rows = (
        await db.execute(
            select(StreamEvent.session_id, func.max(StreamEvent.id))
            .where(StreamEvent.id > last_id)
            .group_by(StreamEvent.session_id)
        )
    ).all()
    return {row[0] for row in rows}, max((row[1] for row in rows), default=last_id)


async def last_id(db: AsyncSession) -> int:
    return (await db.scalar(select(func.max(StreamEvent.id)))) or 0


async def drop_partial_text(db: AsyncSession, conversation_id: str) -> None:
    """Once a conversation is final, its model text lives in its messages."""
    await db.execute(
        delete(StreamEvent).where(
            StreamEvent.session_id == conversation_id, StreamEvent.kind.in_(PARTIAL_KINDS)
        )
    )
