"""Edge cases found in review: handovers, endpoint reuse, duplicate deliveries, bad text."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from src.db.tables import AuditEvent
from src.workflows.chat_session import ChatSessionWorkflow
from src.workflows.chat_session_models import UserMessage
from tests.conftest import AgentFactory, api_client
from tests.fakes.llm_server import FakeLLM
from tests.sessions import (
    endpoint_open_body,
    open_chat,
    say,
    stored_session,
    wait_until_final,
)

JSON = {"Content-Type": "application/json"}


async def workflow_handle(
    temporal_client: Client, db: async_sessionmaker[AsyncSession], session_id: str
) -> Any:
    row = await stored_session(db, session_id)
    return temporal_client.get_workflow_handle(row.workflow_id)


async def test_an_end_during_the_handover_turn_finishes_the_session(
    make_settings: Any,
    serve_api: Any,
    api_key: str,
    worker: None,
    make_agent: AgentFactory,
    fake_llm: tuple[FakeLLM, str],
) -> None:
    agent_id = await make_agent(model="slow-300")
    marker = f"last words {uuid.uuid4().hex[:8]}"
    async with serve_api(make_settings(PARLEY_TURNS_PER_RUN=1)) as url:
        async with api_client(url, api_key) as http:
            session = await open_chat(http, agent_id)
            turn = asyncio.create_task(say(http, session["id"], marker))
            for _ in range(600):  # until the turn is at the model
                if fake_llm[0].requests_for(marker):
                    break
                await asyncio.sleep(0.01)
            ended = await http.post(f"/chats/{session['id']}/end", json={"note": "bye"})
            answered = await turn

    assert ended.status_code == 200 and ended.json()["final_reason"] == "user_end"
    assert answered["messages"][-1]["content"] == f"echo: {marker}"
    assert [m["content"] for m in ended.json()["messages"]] == [marker, f"echo: {marker}"]


async def test_messages_queued_at_a_handover_see_no_errors(
    make_settings: Any, serve_api: Any, api_key: str, worker: None, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent(model="slow-150")
    async with serve_api(make_settings(PARLEY_TURNS_PER_RUN=1)) as url:
        async with api_client(url, api_key) as http:
            session = await open_chat(http, agent_id)
            first = [say(http, session["id"], f"queued {n}") for n in range(4)]
            pending = [asyncio.create_task(call) for call in first]
            await asyncio.sleep(0.2)
            later = await asyncio.gather(*(say(http, session["id"], f"late {n}") for n in range(2)))
            early = await asyncio.gather(*pending)
            transcript = (await http.get(f"/chats/{session['id']}")).json()["messages"]

    replies = [t["messages"][-1]["content"] for t in early + later]
    assert sorted(replies) == sorted(
        [f"echo: queued {n}" for n in range(4)] + [f"echo: late {n}" for n in range(2)]
    )
    assert len(transcript) == 12


async def test_channel_messages_are_answered_in_the_order_they_arrived(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
) -> None:
    session = await open_chat(http, await make_agent(model="slow-100"))
    handle = await workflow_handle(temporal_client, db, session["id"])

    for n in range(5):
        await handle.signal(ChatSessionWorkflow.receive_message, UserMessage(content=f"sms {n}"))
    await say(http, session["id"], "and the api")
    transcript = (await http.get(f"/chats/{session['id']}")).json()["messages"]

    assert [m["content"] for m in transcript] == [
        text for n in range(5) for text in (f"sms {n}", f"echo: sms {n}")
    ] + ["and the api", "echo: and the api"]


async def test_a_signal_and_an_update_with_one_key_are_answered_once(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
) -> None:
    session = await open_chat(http, await make_agent(model="slow-300"))
    handle = await workflow_handle(temporal_client, db, session["id"])

    turn = asyncio.create_task(
        say(http, session["id"], "once", headers={"Idempotency-Key": "dup-1"})
    )
    await asyncio.sleep(0.1)
    redelivered = UserMessage(content="once", idempotency_key="dup-1")
    await handle.signal(ChatSessionWorkflow.receive_message, redelivered)
    await turn
    await say(http, session["id"], "after")
    transcript = (await http.get(f"/chats/{session['id']}")).json()["messages"]

    assert [m["content"] for m in transcript] == ["once", "echo: once", "after", "echo: after"]


async def test_a_retried_key_never_reaches_the_next_session_on_an_endpoint(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    body = endpoint_open_body(await make_agent())
    first = (await http.post("/chats", json=body)).json()
    await http.post(f"/chats/{first['id']}/end")
    second = (await http.post("/chats", json=body)).json()

    late = await http.post(
        f"/chats/{first['id']}/messages",
        json={"content": "meant for the first"},
        headers={"Idempotency-Key": "late-1"},
    )
    ended_again = await http.post(f"/chats/{first['id']}/end")
    still = (await http.get(f"/chats/{second['id']}")).json()

    assert late.status_code == 409
    assert ended_again.status_code == 200 and ended_again.json()["id"] == first["id"]
    assert still["status"] == "active" and still["messages"] == []


async def test_ending_twice_keeps_the_first_note_and_one_record(
    http: httpx.AsyncClient, make_agent: AgentFactory, db: async_sessionmaker[AsyncSession]
) -> None:
    session = await open_chat(http, await make_agent())

    await http.post(f"/chats/{session['id']}/end", json={"note": "first"})
    await http.post(f"/chats/{session['id']}/end", json={"note": "second"})
    row = await stored_session(db, session["id"])
    async with db() as s:
        finished = await s.scalar(
            select(func.count()).where(
                AuditEvent.session_id == session["id"], AuditEvent.kind == "session.finished"
            )
        )

    assert row is not None and row.note == "first"
    assert finished == 1


async def test_a_terminated_sessions_endpoint_can_open_again(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
) -> None:
    body = endpoint_open_body(await make_agent())
    stale = (await http.post("/chats", json=body)).json()
    handle = await workflow_handle(temporal_client, db, stale["id"])
    await handle.terminate(reason="operator")

    fresh = await http.post("/chats", json=body)
    old = (await http.get(f"/chats/{stale['id']}")).json()

    assert fresh.status_code == 201 and fresh.json()["id"] != stale["id"]
    assert (old["status"], old["final_reason"]) == ("final", "error")


async def test_joining_an_endpoint_does_not_copy_the_transcript_into_history(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
) -> None:
    body = endpoint_open_body(await make_agent())
    session = (await http.post("/chats", json=body)).json()
    handle = await workflow_handle(temporal_client, db, session["id"])

    async def join_cost() -> int:
        before = len((await handle.fetch_history()).events)
        joined = await http.post("/chats", json=body)
        assert joined.status_code == 200
        added = (await handle.fetch_history()).events[before:]
        return sum(event.ByteSize() for event in added)

    early = await join_cost()
    for n in range(12):
        await say(http, session["id"], f"filler message {n:02d} " + "z" * 300)
    late = await join_cost()
    joined = (await http.post("/chats", json=body)).json()

    assert late <= early * 1.2, (early, late)
    assert len(joined["messages"]) == 24


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("messages", {"content": "nul \x00 inside"}),
        ("messages", {"content": "lone \ud800 surrogate"}),
        ("end", {"note": "nul \x00"}),
    ],
)
async def test_unstorable_text_is_422(
    http: httpx.AsyncClient, make_agent: AgentFactory, path: str, body: dict[str, Any]
) -> None:
    session = await open_chat(http, await make_agent())

    response = await http.post(  # json.dumps escapes the surrogate; httpx would refuse it
        f"/chats/{session['id']}/{path}", content=json.dumps(body), headers=JSON
    )

    assert response.status_code == 422, response.text
    assert "NUL character or an unpaired surrogate" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "fields",
    [{"external_id": {"a": "x\x00"}}, {"additional_data": {"k": ["\udfff"]}}],
)
async def test_unstorable_text_at_open_is_422(
    http: httpx.AsyncClient, make_agent: AgentFactory, fields: dict[str, Any]
) -> None:
    body = {"agent_id": await make_agent(), "channel": "web", **fields}
    response = await http.post("/chats", content=json.dumps(body), headers=JSON)

    assert response.status_code == 422, response.text


async def test_an_empty_idempotency_key_is_422(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    session = await open_chat(http, await make_agent())

    response = await http.post(
        f"/chats/{session['id']}/messages", json={"content": "hi"}, headers={"Idempotency-Key": ""}
    )

    assert response.status_code == 422


@pytest.mark.parametrize("cursor", ["WyIyMDI0LTAxLTAxVDAwOjAwOjAwIiwieCJd", "!!!", "e30"])
async def test_malformed_cursors_are_422(http: httpx.AsyncClient, cursor: str) -> None:
    for path in ("/chats", "/agents"):
        response = await http.get(path, params={"cursor": cursor})
        assert response.status_code == 422, (path, response.text)


async def test_an_agent_ttl_outside_the_server_bounds_is_422(http: httpx.AsyncClient) -> None:
    response = await http.post("/agents", json={"name": "x", "default_ttl_seconds": 90_000})

    assert response.status_code == 422
    assert "default_ttl_seconds" in response.json()["error"]["message"]


async def test_a_session_finishing_by_ttl_then_rejects_messages(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    session = await open_chat(http, await make_agent(), ttl_seconds=1)
    await wait_until_final(http, session["id"])

    response = await http.post(f"/chats/{session['id']}/messages", json={"content": "late"})

    assert response.status_code == 409
