"""A turn's plain reply is recorded by its model call (src/activities/turn_record.py): with the
turn's unrecorded messages, keys and audit events, in the stream's last transaction; a retried
call whose earlier attempt committed returns that reply without asking the model again; a reply
with tool calls is left for the session to record."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import ActivityEnvironment

from src.activities.llm import LLMActivities, SessionTurnRequest
from src.activities.recorded_transcripts import RecordedTranscripts
from src.activities.session_store import AuditEntry
from src.activities.turn_record import TurnRecord
from src.activities.turn_stream import TurnStream
from src.config import Settings
from src.db.snapshots import SnapshotStore
from src.domain import Message
from src.llm.providers import ModelProviders
from src.sealing.secret_box import SecretBox
from tests.conftest import AgentFactory
from tests.fakes.llm_server import FakeLLM
from tests.test_recorded_batches import session_without_workflow, stored_rows
from tests.test_tools import webhook_tool


def _activities(
    settings: Settings, db: async_sessionmaker[AsyncSession], transcripts: RecordedTranscripts
) -> LLMActivities:
    snapshots = SnapshotStore(db, SecretBox(settings.secret_keys()))
    return LLMActivities(ModelProviders(settings), db, snapshots, transcripts=transcripts)


def _turn(session_id: str, account_id: str, text: str) -> SessionTurnRequest:
    now = datetime.now(UTC)
    return SessionTurnRequest(
        session_id=session_id,
        recorded_count=0,
        unrecorded=[Message(role="user", content=text, time=now)],
        stream=TurnStream(turn="turn-1", message_index=0),
        record=TurnRecord(
            batch=0,
            account_id=account_id,
            agent_id="agent-7",
            events=[AuditEntry(key="context:1", kind="session.context_added", data={}, time=now)],
            idempotency_keys={0: "key-1"},
        ),
    )


async def test_a_plain_reply_is_recorded_with_its_turn_and_a_retry_reads_it_back(
    settings: Settings,
    db: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    fake_llm: tuple[FakeLLM, str],
) -> None:
    session = await session_without_workflow(db, http, await make_agent())
    transcripts = RecordedTranscripts()
    llm = _activities(settings, db, transcripts)
    text = f"hello {uuid.uuid4()}"
    request = _turn(session.id, session.account_id, text)
    env = ActivityEnvironment()

    reply = await env.run(llm.complete_session_turn, request)
    first = await stored_rows(db, session.id)
    env.info = dataclasses.replace(env.info, attempt=2)
    retried = await env.run(llm.complete_session_turn, request)
    after_retry = await stored_rows(db, session.id)

    assert reply.content == f"echo: {text}"
    recorded = reply.recorded_message
    assert recorded is not None and recorded.author is not None
    assert (recorded.role, recorded.content, recorded.author.agent_id) == (
        "assistant",
        f"echo: {text}",
        "agent-7",
    )
    assert first["messages"] == [
        (0, "user", text, "key-1"),
        (1, "assistant", f"echo: {text}", None),
    ]
    assert sorted(_turn_audit(first)) == ["message", "message", "session.context_added"]
    assert [e[1] for e in first["stream"]] == ["user_message", "message.delta", "message"]
    assert first["batches"] == [0]
    kept = transcripts.get(session.id)
    assert kept is not None and kept.count == 2  # the next turn reads nothing back
    # The retry found the write: the same reply, the model not asked again, nothing written.
    assert retried.recorded_message == recorded
    assert retried.content == reply.content
    assert len(fake_llm[0].requests_for(text)) == 1
    assert after_retry == first


async def test_a_reply_with_tool_calls_is_left_to_the_session(
    settings: Settings,
    db: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
) -> None:
    agent_id = await make_agent(
        model="tool-lookup_order", tools=[webhook_tool("http://127.0.0.1:9/lookup")]
    )
    session = await session_without_workflow(db, http, agent_id)
    llm = _activities(settings, db, RecordedTranscripts())
    request = _turn(session.id, session.account_id, '{"id": "A-17"}')

    reply = await ActivityEnvironment().run(llm.complete_session_turn, request)
    stored = await stored_rows(db, session.id)

    assert [call.name for call in reply.tool_calls] == ["lookup_order"]
    assert reply.recorded_message is None
    assert stored["messages"] == [] and _turn_audit(stored) == [] and stored["batches"] == []
    assert [e[1] for e in stored["stream"]] == ["user_message", "tool_call"]


def _turn_audit(stored: dict[str, Any]) -> list[str]:
    """The audit kinds of the turn's write (the default agent's prompt also names a variable
    the session lacks, which the model call audits on its own)."""
    return [kind for kind, _ in stored["audit"] if kind != "template.missing_variable"]
