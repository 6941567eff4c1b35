"""A transcript write of a lost workflow task is replaced by the write of the same number that
counts (src/db/recorded_batches.py): the case of a dev server that died with a user message and
an operator message admitted at once, whose retries ran in the other order."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import ActivityEnvironment

from src.activities.recorded_transcripts import RecordedTranscript, RecordedTranscripts
from src.activities.session_store import (
    AuditEntry,
    MessagesProduced,
    SessionFinished,
    SessionStoreActivities,
)
from src.db.tables import AuditEvent, ChatMessage, ChatSession, RecordedBatch, StreamEvent
from src.domain import Author, FinishReason, Message, Operator
from tests.conftest import AgentFactory

_T0 = datetime(2026, 12, 5, 7, 0, tzinfo=UTC)
_OPERATOR = Operator(id="op-1", name="Ada")


async def session_without_workflow(
    db: async_sessionmaker[AsyncSession], http: httpx.AsyncClient, agent_id: str
) -> ChatSession:
    """A session row of the caller's account that no workflow writes to."""
    opened = (await http.post("/chats", json={"agent_id": agent_id, "channel": "web"})).json()
    async with db() as s:
        template = await s.get(ChatSession, opened["id"])
    assert template is not None
    row = ChatSession(
        id=str(uuid.uuid4()),
        account_id=template.account_id,
        agent_id=template.agent_id,
        agent_version=template.agent_version,
        snapshot_id=template.snapshot_id,
        channel="web",
        workflow_id="none",
        additional_data={},
        ttl_seconds=60,
        status="active",
        created_time=_T0,
        last_activity=_T0,
    )
    async with db.begin() as s:
        s.add(row)
    return row


def _user(text: str, at: int) -> Message:
    return Message(role="user", content=text, time=_T0 + timedelta(seconds=at))


def _operator(text: str, at: int) -> Message:
    return Message(
        role="assistant",
        content=text,
        time=_T0 + timedelta(seconds=at),
        author=Author.human(_OPERATOR),
    )


def _batch(
    session: ChatSession, batch: int, first_seq: int, messages: list[Message]
) -> MessagesProduced:
    """A write as the session workflow makes it: the messages, an `operator.message` audit
    event for each operator message (keyed by its seq), and the user messages' keys."""
    events, keys = [], {}
    for offset, message in enumerate(messages):
        seq = first_seq + offset
        if message.author is not None:
            events.append(
                AuditEntry(
                    key=f"operator_message:{seq}",
                    kind="operator.message",
                    data={"seq": seq},
                    time=message.time,
                )
            )
        else:
            keys[seq] = f"key-{message.content}"
    return MessagesProduced(
        batch=batch,
        session_id=session.id,
        account_id=session.account_id,
        first_seq=first_seq,
        messages=messages,
        last_activity=messages[-1].time if messages else _T0,
        events=events,
        idempotency_keys=keys,
    )


async def stored_rows(db: async_sessionmaker[AsyncSession], session_id: str) -> dict[str, Any]:
    async with db() as s:
        messages = (
            await s.scalars(
                select(ChatMessage)
                .where(ChatMessage.session_id == session_id)
                .order_by(ChatMessage.seq)
            )
        ).all()
        audit = (
            await s.scalars(
                select(AuditEvent)
                .where(AuditEvent.session_id == session_id)
                .order_by(AuditEvent.id)
            )
        ).all()
        stream = (
            await s.scalars(
                select(StreamEvent)
                .where(StreamEvent.session_id == session_id)
                .order_by(StreamEvent.position)
            )
        ).all()
        batches = (
            await s.scalars(
                select(RecordedBatch.batch)
                .where(RecordedBatch.session_id == session_id)
                .order_by(RecordedBatch.batch)
            )
        ).all()
    return {
        "messages": [(m.seq, m.role, m.content, m.idempotency_key) for m in messages],
        "audit": [(a.kind, a.event_key.split(":", 1)[1]) for a in audit],
        "audit_ids": [a.id for a in audit],
        "stream": [(e.position, e.kind, e.event_key, e.data.get("seq")) for e in stream],
        "batches": list(batches),
    }


async def test_a_lost_tasks_write_is_replaced_by_the_one_that_counts(
    db: async_sessionmaker[AsyncSession], http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    session = await session_without_workflow(db, http, await make_agent())
    transcripts = RecordedTranscripts()
    store = SessionStoreActivities(db, transcripts)
    env = ActivityEnvironment()
    hello = _user("hello", 1)
    await env.run(store.record_messages, _batch(session, 0, 0, [hello]))
    transcripts.keep(session.id, RecordedTranscript(count=0, wire=[]).extended([hello]))
    user, operator = _user("where is my order", 2), _operator("let me look", 2)
    # The lost task took the operator's message first...
    await env.run(store.record_messages, _batch(session, 1, 1, [operator, user]))
    lost = await stored_rows(db, session.id)
    # ...the one that counts, the user's.
    await env.run(store.record_messages, _batch(session, 1, 1, [user, operator]))
    after = await stored_rows(db, session.id)

    assert [m[:3] for m in lost["messages"]][1:] == [
        (1, "assistant", "let me look"),
        (2, "user", "where is my order"),
    ]
    assert after["messages"] == [
        (0, "user", "hello", "key-hello"),
        (1, "user", "where is my order", "key-where is my order"),
        (2, "assistant", "let me look", None),
    ]
    operator_events = [a for a in after["audit"] if a[0] == "operator.message"]
    assert operator_events == [("operator.message", "operator_message:2")]
    assert [a[0] for a in after["audit"]].count("message") == 3
    # The stream keeps what followers may have read, and streams the corrected messages after.
    kept = after["stream"][: len(lost["stream"])]
    assert [e[:2] for e in kept] == [e[:2] for e in lost["stream"]]
    corrected = after["stream"][len(lost["stream"]) :]
    assert [(e[1], e[3]) for e in corrected] == [("user_message", 1), ("message", 2)]
    assert all(e[2] is not None for e in corrected)
    assert after["batches"] == [0, 1]
    assert transcripts.get(session.id) is None  # read again from the database


async def test_a_retried_write_changes_nothing(
    db: async_sessionmaker[AsyncSession], http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    session = await session_without_workflow(db, http, await make_agent())
    store = SessionStoreActivities(db)
    env = ActivityEnvironment()
    written = _batch(session, 0, 0, [_user("hi", 1), _operator("hello there", 2)])
    await env.run(store.record_messages, written)
    first = await stored_rows(db, session.id)
    await env.run(store.record_messages, written)

    assert await stored_rows(db, session.id) == first
    assert len(first["messages"]) == 2 and len(first["stream"]) == 2


async def test_later_writes_of_a_lost_task_go_with_it(
    db: async_sessionmaker[AsyncSession], http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    """A lost task that wrote twice (batches 0 and 1): the write of 0 that counts removes
    both, and batch 1 is then a fresh write."""
    session = await session_without_workflow(db, http, await make_agent())
    store = SessionStoreActivities(db)
    env = ActivityEnvironment()
    await env.run(store.record_messages, _batch(session, 0, 0, [_operator("first", 1)]))
    await env.run(store.record_messages, _batch(session, 1, 1, [_user("second", 2)]))
    await env.run(store.record_messages, _batch(session, 0, 0, [_user("second", 2)]))
    middle = await stored_rows(db, session.id)
    await env.run(store.record_messages, _batch(session, 1, 1, [_operator("first", 3)]))
    after = await stored_rows(db, session.id)

    assert middle["messages"] == [(0, "user", "second", "key-second")]
    assert middle["batches"] == [0]
    assert [a for a in middle["audit"] if a[0] == "operator.message"] == []
    assert after["messages"] == [
        (0, "user", "second", "key-second"),
        (1, "assistant", "first", None),
    ]
    assert [a for a in after["audit"] if a[0] == "operator.message"] == [
        ("operator.message", "operator_message:1")
    ]


async def test_unnumbered_writes_insert_what_is_missing(
    db: async_sessionmaker[AsyncSession], http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    """A stateless turn's write has no number: rows already there stay as they are."""
    session = await session_without_workflow(db, http, await make_agent())
    store = SessionStoreActivities(db)
    env = ActivityEnvironment()
    first = _batch(session, 0, 0, [_user("one", 1)]).model_copy(update={"batch": None})
    other = _batch(session, 0, 0, [_user("two", 2)]).model_copy(update={"batch": None})
    await env.run(store.record_messages, first)
    await env.run(store.record_messages, other)

    stored = await stored_rows(db, session.id)
    assert [m[:3] for m in stored["messages"]] == [(0, "user", "one")]
    assert stored["batches"] == []


async def test_a_final_session_keeps_its_transcript_and_forgets_its_claims(
    db: async_sessionmaker[AsyncSession], http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    """persist_final drops the session's batch claims through its own write's number (a
    turn still finishing may claim later ones); a retry of it writes nothing twice."""
    session = await session_without_workflow(db, http, await make_agent())
    store = SessionStoreActivities(db)
    env = ActivityEnvironment()
    await env.run(store.record_messages, _batch(session, 0, 0, [_user("hi", 1)]))
    await env.run(store.record_messages, _batch(session, 1, 1, [_operator("hello", 2)]))
    # A write a handler still running makes after the final one was numbered.
    await env.run(store.record_messages, _batch(session, 3, 2, []))
    before = await stored_rows(db, session.id)
    finished = SessionFinished(
        session_id=session.id,
        account_id=session.account_id,
        reason=FinishReason.AGENT_FINISH,
        note=None,
        unrecorded=_batch(session, 2, 2, [_user("bye", 3)]),
        finished_time=_T0 + timedelta(seconds=4),
    )
    await env.run(store.persist_final, finished)
    after = await stored_rows(db, session.id)
    await env.run(store.persist_final, finished)  # its result was lost: Temporal runs it again

    assert before["batches"] == [0, 1, 3]
    assert after["batches"] == [3]
    assert [m[:3] for m in after["messages"]] == [
        (0, "user", "hi"),
        (1, "assistant", "hello"),
        (2, "user", "bye"),
    ]
    assert await stored_rows(db, session.id) == after
