"""A session under a sustained backlog: hand-over with messages queued, channel messages
refused on the record, idempotency keys older than memory, and the audit log's order."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from src.workflows.chat_session import ChatSessionWorkflow
from src.workflows.chat_session_models import UserMessage
from tests.conftest import AgentFactory, api_client
from tests.fakes.tool_server import FakeToolServer
from tests.sessions import open_chat, say, stored_session, wait_until_final
from tests.test_tools import webhook_tool


async def _handle(temporal_client: Client, db: async_sessionmaker[AsyncSession], sid: str) -> Any:
    return temporal_client.get_workflow_handle((await stored_session(db, sid)).workflow_id)


async def test_a_backlog_is_handed_over_and_every_message_answered_once(
    make_settings: Any,
    serve_api: Any,
    api_key: str,
    worker: None,
    make_agent: AgentFactory,
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
) -> None:
    # 0.002 of the limits is ~100 events: a run hands over after a turn or two, queue or not.
    settings = make_settings(PARLEY_HISTORY_HANDOVER_FRACTION=0.002)
    agent_id = await make_agent(model="slow-100")
    async with serve_api(settings) as url, api_client(url, api_key) as http:
        session = await open_chat(http, agent_id)
        handle = await _handle(temporal_client, db, session["id"])
        for n in range(6):
            await handle.signal(
                ChatSessionWorkflow.receive_message, UserMessage(content=f"sms {n}")
            )
        replies = await asyncio.gather(
            *(say(http, session["id"], f"api {n}") for n in range(4)),
            say(http, session["id"], "keyed", headers={"Idempotency-Key": "bk-1"}),
        )
        ended = await http.post(f"/chats/{session['id']}/end", json={"note": "drained"})
        transcript = ended.json()["messages"]
        runs = [r async for r in temporal_client.list_workflows(f"WorkflowId = '{handle.id}'")]

    assert sorted(t["messages"][-1]["content"] for t in replies) == sorted(
        [f"echo: api {n}" for n in range(4)] + ["echo: keyed"]
    )
    contents = [m["content"] for m in transcript]
    user = [c for c in contents if not c.startswith("echo: ")]
    assert sorted(user) == sorted(
        [f"sms {n}" for n in range(6)] + [f"api {n}" for n in range(4)] + ["keyed"]
    )
    assert [c for c in user if c.startswith("sms")] == [f"sms {n}" for n in range(6)]
    assert contents == [text for u in user for text in (u, f"echo: {u}")]
    assert ended.json()["final_reason"] == "user_end"
    assert len(runs) >= 2  # one run before: a backlog was never handed over


async def test_invalid_channel_messages_are_refused_on_the_record(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
) -> None:
    session = await open_chat(http, await make_agent(model="slow-300"))
    handle = await _handle(temporal_client, db, session["id"])
    signal = ChatSessionWorkflow.receive_message

    await handle.signal(signal, UserMessage(content="   "))
    await handle.signal(signal, UserMessage(content="x" * 20_000))
    await handle.signal(signal, UserMessage(content="hi", session_id=str(uuid.uuid4())))
    turn = asyncio.create_task(say(http, session["id"], "valid"))
    await asyncio.sleep(0.1)
    end = asyncio.create_task(http.post(f"/chats/{session['id']}/end"))
    await asyncio.sleep(0.1)  # the end waits for the turn: the session reads final meanwhile
    await handle.signal(signal, UserMessage(content="after the end"))
    await turn
    await end
    final = await wait_until_final(http, session["id"])
    events = (await http.get(f"/chats/{session['id']}/events")).json()["items"]

    assert [m["content"] for m in final["messages"]] == ["valid", "echo: valid"]
    assert [e["data"]["reason"] for e in events if e["kind"] == "message.refused"] == [
        "empty",
        "too_large",
        "another_session",
        "session_final",
    ]


async def test_a_key_the_session_no_longer_remembers_is_answered_from_the_database(
    make_settings: Any, serve_api: Any, api_key: str, worker: None, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent()
    async with (
        serve_api(make_settings(PARLEY_ANSWERED_KEYS_KEPT=2)) as url,
        api_client(url, api_key) as http,
    ):
        session = await open_chat(http, agent_id)
        first = await say(http, session["id"], "turn 0", headers={"Idempotency-Key": "old-0"})
        for n in range(1, 4):
            await say(http, session["id"], f"turn {n}", headers={"Idempotency-Key": f"old-{n}"})
        retried = await say(http, session["id"], "turn 0", headers={"Idempotency-Key": "old-0"})
        transcript = (await http.get(f"/chats/{session['id']}")).json()["messages"]

    assert [m["content"] for m in retried["messages"]] == ["echo: turn 0"]
    assert retried["messages"] == first["messages"]
    assert len(transcript) == 8


async def test_a_tool_call_event_is_listed_before_the_message_that_carries_it(
    http: httpx.AsyncClient, make_agent: AgentFactory, tools: tuple[FakeToolServer, str]
) -> None:
    _, base = tools
    agent_id = await make_agent(model="tool-lookup_order", tools=[webhook_tool(f"{base}/echo")])
    session = await open_chat(http, agent_id)

    await say(http, session["id"], '{"id": "B-42"}')
    await http.post(f"/chats/{session['id']}/end")
    events = (await http.get(f"/chats/{session['id']}/events")).json()["items"]

    order = [
        "tool.call"
        if e["kind"] == "tool.call"
        else f"message:{e['data']['role']}" + (":calls" if e["data"]["tool_calls"] else "")
        for e in events
        if e["kind"] in ("tool.call", "message")
    ]
    assert order == ["message:user", "tool.call", "message:assistant:calls", "message:assistant"]
