"""The LLM activity heartbeats while the model thinks, so a worker killed mid-call is noticed
within the heartbeat timeout (seconds) instead of the 120 s start-to-close timeout."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import ActivityEnvironment

from src.activities.llm import LLMActivities, SessionTurnRequest
from src.config import Settings
from src.db.snapshots import SnapshotStore
from src.domain import Message
from src.llm.providers import ModelProviders
from src.sealing.secret_box import SecretBox
from src.workflows import activity_options
from tests.conftest import AgentFactory
from tests.sessions import open_chat


async def test_llm_activity_heartbeats_during_a_slow_model_call(
    settings: Settings,
    db: async_sessionmaker[AsyncSession],
    http: Any,
    make_agent: AgentFactory,
) -> None:
    session = await open_chat(http, await make_agent(model="slow-2500"))
    activities = LLMActivities(
        ModelProviders(settings), db, SnapshotStore(db, SecretBox(settings.secret_keys()))
    )
    beats: list[Any] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details)
    request = SessionTurnRequest(
        session_id=session["id"],
        recorded_count=0,
        unrecorded=[Message(role="user", content="think slowly", time=datetime.now(UTC))],
    )

    reply = await env.run(activities.complete_session_turn, request)

    assert reply.content == "echo: think slowly"
    assert len(beats) >= 2  # one at the start, more while the 2.5 s answer is awaited
    heartbeat = activity_options.LLM.get("heartbeat_timeout")
    start_to_close = activity_options.LLM.get("start_to_close_timeout")
    assert heartbeat is not None and start_to_close is not None
    assert heartbeat < start_to_close
