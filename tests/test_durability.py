"""Nothing is lost: worker restarts, continue-as-new, and history that stays small."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from src.worker import running_worker
from tests.conftest import AgentFactory, api_client
from tests.sessions import open_chat, say, stored_session


async def _workflow_id(db: async_sessionmaker[AsyncSession], session_id: str) -> str:
    return (await stored_session(db, session_id)).workflow_id


async def test_worker_restarted_between_turns_loses_nothing(
    make_settings: Any,
    serve_api: Any,
    api_key: str,
    temporal_client: Client,
    make_agent: AgentFactory,
) -> None:
    settings = make_settings(TEMPORAL_TASK_QUEUE=f"restart-{uuid.uuid4().hex[:8]}")
    agent_id = await make_agent()
    async with serve_api(settings) as url, api_client(url, api_key) as http:
        async with running_worker(settings, temporal_client):
            session = await open_chat(http, agent_id)
            await say(http, session["id"], "before the restart")

        # No worker at all now: the message waits in Temporal instead of failing.
        pending = asyncio.create_task(say(http, session["id"], "while no worker runs"))
        await asyncio.sleep(0.5)
        assert not pending.done()
        async with running_worker(settings, temporal_client):
            during = await pending
            after = await say(http, session["id"], "after the restart")
            transcript = (await http.get(f"/chats/{session['id']}")).json()["messages"]

    assert during["messages"][-1]["content"] == "echo: while no worker runs"
    assert after["messages"][-1]["content"] == "echo: after the restart"
    assert [m["content"] for m in transcript] == [
        "before the restart",
        "echo: before the restart",
        "while no worker runs",
        "echo: while no worker runs",
        "after the restart",
        "echo: after the restart",
    ]


async def test_sessions_continue_as_new_with_no_client_visible_error(
    make_settings: Any,
    serve_api: Any,
    api_key: str,
    worker: None,
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
    make_agent: AgentFactory,
) -> None:
    settings = make_settings(PARLEY_TURNS_PER_RUN=3)
    agent_id = await make_agent(first_message="welcome")
    async with serve_api(settings) as url, api_client(url, api_key) as http:
        session = await open_chat(http, agent_id)
        keyed = await say(http, session["id"], "turn 0", headers={"Idempotency-Key": "k-0"})
        sequential = [await say(http, session["id"], f"turn {n}") for n in range(1, 8)]
        concurrent = await asyncio.gather(
            *(say(http, session["id"], f"burst {n}") for n in range(6))
        )
        replayed = await say(http, session["id"], "turn 0", headers={"Idempotency-Key": "k-0"})
        transcript = (await http.get(f"/chats/{session['id']}")).json()["messages"]
        ended = await http.post(f"/chats/{session['id']}/end")

    assert replayed == keyed
    assert [t["messages"][-1]["content"] for t in sequential] == [
        f"echo: turn {n}" for n in range(1, 8)
    ]
    assert sorted(t["messages"][-1]["content"] for t in concurrent) == sorted(
        f"echo: burst {n}" for n in range(6)
    )
    contents = [m["content"] for m in transcript]
    assert contents[:17] == ["welcome"] + [
        text for n in range(8) for text in (f"turn {n}", f"echo: turn {n}")
    ]
    assert sorted(contents[17:]) == sorted(
        text for n in range(6) for text in (f"burst {n}", f"echo: burst {n}")
    )
    assert ended.status_code == 200 and len(ended.json()["messages"]) == 29
    runs = [
        run
        async for run in temporal_client.list_workflows(
            f"WorkflowId = '{await _workflow_id(db, session['id'])}'"
        )
    ]
    assert len(runs) >= 4


@pytest.mark.database_agnostic  # Temporal's history, ~2.5 min: measured once
async def test_history_bytes_per_turn_do_not_grow_with_the_conversation(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
) -> None:
    session = await open_chat(http, await make_agent())
    handle = temporal_client.get_workflow_handle(await _workflow_id(db, session["id"]))
    sizes = []
    for n in range(24):
        before = await handle.fetch_history()
        await say(http, session["id"], f"message number {n:04d} " + "x" * 200)
        # the background recording of the turn is part of the turn's cost
        for _ in range(100):
            after = await handle.fetch_history()
            scheduled = [
                e
                for e in after.events
                if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
            ]
            if len(scheduled) == 2 * (n + 1) + 1:
                break
            await asyncio.sleep(0.05)
        added = after.events[len(before.events) :]
        sizes.append(sum(event.ByteSize() for event in added))

    early, late = sizes[3], sizes[23]
    assert late <= early * 1.2, sizes
