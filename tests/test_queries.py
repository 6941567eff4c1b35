"""The shared reads (src/db/queries.py) on the real database: transcript ranges in order, audit
rows written once and paged oldest first, and newest-first keyset pages that neither skip nor
repeat an item at a page boundary, even among items created at the same instant."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.db.queries import (
    audit_page,
    audit_row,
    insert_audit_rows,
    newest_first,
    page_of,
    transcript,
)
from src.db.tables import AgentSnapshotRow, ChatMessage, ChatSession
from src.db.upsert import insert_missing
from src.pagination import encode_cursor
from src.services.accounts import new_api_key, register_api_key

NOON = datetime(2026, 1, 1, 12, tzinfo=UTC)


async def new_account(db: async_sessionmaker[AsyncSession]) -> str:
    account = f"queries-{uuid.uuid4().hex[:8]}"
    await register_api_key(db, new_api_key(), account_id=account)
    return account


async def stored_sessions(
    db: async_sessionmaker[AsyncSession], account: str, created: list[datetime]
) -> list[str]:
    """Session rows of `account` created at the given times; their ids, in that order."""
    snapshot = f"snap-{uuid.uuid4().hex}"
    ids = [f"s-{uuid.uuid4()}" for _ in created]
    rows = [
        {
            "id": session_id,
            "account_id": account,
            "agent_id": "agent-q",
            "agent_version": 1,
            "snapshot_id": snapshot,
            "channel": "web",
            "workflow_id": f"chat-{session_id}",
            "kind": "session",
            "additional_data": {},
            "ttl_seconds": 600,
            "status": "final",
            "created_time": when,
            "last_activity": when,
        }
        for session_id, when in zip(ids, created, strict=True)
    ]
    snapshot_row = {"id": snapshot, "account_id": account, "config": {}, "created_time": NOON}
    async with db.begin() as s:
        await insert_missing(s, AgentSnapshotRow, [snapshot_row], ["id"])
        await insert_missing(s, ChatSession, rows, ["id"])
    return ids


async def stored_messages(
    db: async_sessionmaker[AsyncSession], session_id: str, seqs: list[int]
) -> None:
    rows = [
        {
            "session_id": session_id,
            "seq": seq,
            "role": "user",
            "content": f"message {seq}",
            "tool_calls": [],
            "time": NOON + timedelta(seconds=seq),
        }
        for seq in seqs
    ]
    async with db.begin() as s:
        await insert_missing(s, ChatMessage, rows, ["session_id", "seq"])


async def newest_first_pages(
    db: async_sessionmaker[AsyncSession], account: str, limit: int
) -> list[list[str]]:
    """Every page of the account's sessions, following next_cursor to the end."""
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        query = newest_first(
            select(ChatSession).where(ChatSession.account_id == account),
            ChatSession.created_time,
            ChatSession.id,
            limit,
            cursor,
        )
        async with db() as s:
            rows = (await s.scalars(query)).all()
        page, cursor = page_of(rows, limit, lambda row: encode_cursor(row.created_time, row.id))
        pages.append([row.id for row in page])
        if cursor is None:
            return pages


async def test_a_transcript_range_comes_in_order_and_from_its_session_only(
    db: async_sessionmaker[AsyncSession],
) -> None:
    account = await new_account(db)
    session, other = await stored_sessions(db, account, [NOON, NOON])
    await stored_messages(db, session, [3, 0, 4, 1, 2])
    await stored_messages(db, other, [0, 1, 2])

    async with db() as s:
        middle = await transcript(s, session, 1, 4)
        before_two = await transcript(s, session, stop=2)
        everything = await transcript(s, session)

    assert [m.content for m in middle] == ["message 1", "message 2", "message 3"]
    assert [m.content for m in before_two] == ["message 0", "message 1"]
    assert [m.content for m in everything] == [f"message {n}" for n in range(5)]


async def test_newest_first_pages_split_items_of_one_instant_without_skipping_or_repeating(
    db: async_sessionmaker[AsyncSession],
) -> None:
    account = await new_account(db)
    earlier, later = NOON, NOON + timedelta(minutes=1)
    ids = await stored_sessions(db, account, [earlier, later, earlier, later, earlier])
    newest = sorted(
        zip(ids, [earlier, later, earlier, later, earlier], strict=True),
        key=lambda item: (item[1], item[0]),
        reverse=True,
    )

    pages = await newest_first_pages(db, account, limit=2)

    assert [len(page) for page in pages] == [2, 2, 1]
    assert [session_id for page in pages for session_id in page] == [i for i, _ in newest]


async def test_a_last_page_that_is_exactly_full_has_no_next_cursor(
    db: async_sessionmaker[AsyncSession],
) -> None:
    account = await new_account(db)
    await stored_sessions(db, account, [NOON + timedelta(seconds=n) for n in range(4)])

    pages = await newest_first_pages(db, account, limit=2)

    assert [len(page) for page in pages] == [2, 2]


def test_page_of_keeps_a_page_and_names_its_last_item_only_when_more_follow() -> None:
    more = page_of([1, 2, 3], 2, str)
    exact = page_of([1, 2], 2, str)
    empty: tuple[list[int], str | None] = page_of([], 2, str)

    assert more == ([1, 2], "2")
    assert exact == ([1, 2], None)
    assert empty == ([], None)


async def test_audit_rows_are_written_once_and_paged_oldest_first(
    db: async_sessionmaker[AsyncSession],
) -> None:
    account = await new_account(db)
    session, other = await stored_sessions(db, account, [NOON, NOON])
    rows = [
        audit_row(session, account, "session.opened", NOON),
        audit_row(session, account, "message", NOON, {"seq": 0}, event_key=f"{session}:m:0"),
        audit_row(session, account, "message", NOON, {"seq": 1}, event_key=f"{session}:m:1"),
    ]
    async with db.begin() as s:
        await insert_audit_rows(s, rows)
        await insert_audit_rows(s, [audit_row(other, account, "session.opened", NOON)])
    async with db.begin() as s:  # a retried write
        await insert_audit_rows(s, rows)

    async with db() as s:
        first, cursor = await audit_page(s, session, 2, None)
        second, end = await audit_page(s, session, 2, cursor)

    assert [(e.kind, e.data) for e in first] == [("session.opened", {}), ("message", {"seq": 0})]
    assert [(e.kind, e.data) for e in second] == [("message", {"seq": 1})]
    assert first[0].event_key == f"{session}:session.opened"
    assert cursor is not None and end is None
