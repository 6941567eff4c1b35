"""The LLM activity sends the model the whole transcript, while reading from the database only
the messages recorded since its previous turn of the same session."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from src.activities.llm import LLMActivities, SessionTurnRequest
from src.activities.session_store import MessagesProduced, SessionStoreActivities
from src.config import Settings
from src.db.snapshots import SnapshotStore
from src.domain import Message
from src.llm.providers import ModelProviders
from src.sealing.secret_box import SecretBox
from tests.conftest import AgentFactory
from tests.fakes.llm_server import FakeLLM
from tests.sessions import open_chat


def _message(role: str, content: str) -> Message:
    return Message(role=role, content=content, time=datetime.now(UTC))


async def test_each_turn_sends_the_whole_transcript_recorded_in_steps(
    settings: Settings,
    db: async_sessionmaker[AsyncSession],
    http: Any,
    make_agent: AgentFactory,
    fake_llm: tuple[FakeLLM, str],
) -> None:
    session = await open_chat(http, await make_agent())
    marker = f"steps-{uuid.uuid4()}"
    store = SessionStoreActivities(db)
    llm = LLMActivities(
        ModelProviders(settings), db, SnapshotStore(db, SecretBox(settings.secret_keys()))
    )
    env = ActivityEnvironment()
    said = [_message("user", f"{marker} one"), _message("assistant", "echo: one")]
    said += [_message("user", f"{marker} two"), _message("assistant", "echo: two")]

    async def record(first: int, count: int) -> None:
        produced = MessagesProduced(
            session_id=session["id"],
            account_id="ignored",
            first_seq=first,
            messages=said[first : first + count],
            last_activity=datetime.now(UTC),
        )
        await env.run(store.record_messages, produced)

    async def turn(recorded: int, activities: LLMActivities = llm) -> list[Any]:
        request = SessionTurnRequest(
            session_id=session["id"],
            recorded_count=recorded,
            unrecorded=[_message("user", f"{marker} turn after {recorded}")],
        )
        await env.run(activities.complete_session_turn, request)
        return list(fake_llm[0].requests_for(marker)[-1]["messages"][1:])

    await record(0, 1)
    after_one = await turn(1)
    await record(1, 3)
    after_four = await turn(4)
    fresh = await turn(
        4,
        LLMActivities(
            ModelProviders(settings), db, SnapshotStore(db, SecretBox(settings.secret_keys()))
        ),
    )

    assert [m["content"] for m in after_one] == [f"{marker} one", f"{marker} turn after 1"]
    assert [m["content"] for m in after_four] == [
        f"{marker} one",
        "echo: one",
        f"{marker} two",
        "echo: two",
        f"{marker} turn after 4",
    ]
    assert fresh == after_four


async def test_a_transcript_missing_recorded_messages_is_refused(
    settings: Settings,
    db: async_sessionmaker[AsyncSession],
    http: Any,
    make_agent: AgentFactory,
) -> None:
    session = await open_chat(http, await make_agent())
    llm = LLMActivities(
        ModelProviders(settings), db, SnapshotStore(db, SecretBox(settings.secret_keys()))
    )
    request = SessionTurnRequest(
        session_id=session["id"], recorded_count=3, unrecorded=[_message("user", "hello")]
    )

    with pytest.raises(ApplicationError, match="expected 3 recorded messages, found 0"):
        await ActivityEnvironment().run(llm.complete_session_turn, request)
