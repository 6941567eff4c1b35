"""A session's life through the HTTP API: open, talk, end; the record kept in the database."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from src.db.tables import AuditEvent, ChatMessage, ChatSession
from src.workflows.chat_session import ChatSessionWorkflow
from src.workflows.chat_session_models import UserMessage
from tests.conftest import AgentFactory
from tests.fakes.llm_server import FakeLLM
from tests.sessions import open_chat, say, stored_session, wait_until_final


async def test_open_message_reply_end(
    http: httpx.AsyncClient, make_agent: AgentFactory, db: async_sessionmaker[AsyncSession]
) -> None:
    agent_id = await make_agent(first_message="Hello, how can I help?")

    session = await open_chat(http, agent_id, additional_data={"company": "Acme"})
    turn = await say(http, session["id"], "where is my order?")
    ended = await http.post(f"/chats/{session['id']}/end", json={"note": "resolved"})

    assert session["status"] == "active" and session["is_final"] is False
    assert [m["content"] for m in session["messages"]] == ["Hello, how can I help?"]
    assert turn == {"messages": [turn["messages"][0]], "is_final": False, "mode": "ai"}
    assert turn["messages"][0]["role"] == "assistant"
    assert turn["messages"][0]["content"] == "echo: where is my order?"
    assert ended.status_code == 200
    final = ended.json()
    assert final["is_final"] is True and final["status"] == "final"
    assert final["final_reason"] == "user_end"
    assert [(m["role"], m["content"]) for m in final["messages"]] == [
        ("assistant", "Hello, how can I help?"),
        ("user", "where is my order?"),
        ("assistant", "echo: where is my order?"),
    ]
    async with db() as s:
        row = await s.get(ChatSession, session["id"])
        messages = (
            await s.scalars(select(ChatMessage).where(ChatMessage.session_id == session["id"]))
        ).all()
        kinds = (
            await s.scalars(select(AuditEvent.kind).where(AuditEvent.session_id == session["id"]))
        ).all()
    assert row is not None and row.status == "final" and row.final_reason == "user_end"
    assert row.note == "resolved" and row.finished_time is not None
    assert [m.content for m in sorted(messages, key=lambda m: m.seq)] == [
        "Hello, how can I help?",
        "where is my order?",
        "echo: where is my order?",
    ]
    assert sorted(kinds) == [
        "context.set", "message", "message", "message",
        "session.end_requested", "session.finished", "session.opened",
    ]  # fmt: skip


async def test_the_open_records_the_context_by_names_never_values(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent()
    endpoint = f"sip:caller-{uuid.uuid4().hex[:8]}@example.net"
    session = await open_chat(
        http,
        agent_id,
        channel="voice",
        external_id={"sip": endpoint},
        additional_data={"company": "Initech-5521", "customer": {"name": "Ada-5521"}},
    )

    events = (await http.get(f"/chats/{session['id']}/events")).json()["items"]

    assert [e["kind"] for e in events][:2] == ["session.opened", "context.set"]
    [context] = [e["data"] for e in events if e["kind"] == "context.set"]
    assert context == {
        "variables": ["company", "customer"],
        "channel": "voice",
        "sip_endpoint": True,
    }
    for value in ("Initech-5521", "Ada-5521", endpoint):
        assert value not in str(events)


async def test_system_prompt_is_rendered_with_additional_data_and_channel(
    http: httpx.AsyncClient, make_agent: AgentFactory, fake_llm: tuple[FakeLLM, str]
) -> None:
    agent_id = await make_agent()
    session = await open_chat(http, agent_id, additional_data={"company": "Globex"})

    await say(http, session["id"], "marker-prompt-7781")

    [request] = fake_llm[0].requests_for("marker-prompt-7781")
    assert request["messages"][0] == {
        "role": "system",
        "content": "You help customers of Globex on web.",
    }


async def test_ending_twice_is_harmless(http: httpx.AsyncClient, make_agent: AgentFactory) -> None:
    session = await open_chat(http, await make_agent())

    first = await http.post(f"/chats/{session['id']}/end", json={"note": "first"})
    second = await http.post(f"/chats/{session['id']}/end", json={"note": "second"})

    assert first.status_code == second.status_code == 200
    assert second.json()["final_reason"] == "user_end"
    assert first.json()["id"] == second.json()["id"]


async def test_agent_finish_ends_the_session_after_the_reply(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    session = await open_chat(http, await make_agent())

    turn = await say(http, session["id"], "thanks, please finish")
    final = await wait_until_final(http, session["id"])

    assert turn["is_final"] is True
    [tool_turn, reply] = turn["messages"]
    assert [c["name"] for c in tool_turn["tool_calls"]] == ["finishTheConversation"]
    assert tool_turn["tool_calls"][0]["response"]
    assert reply["content"] == "Goodbye from the fake model."
    assert final["final_reason"] == "agent_finish"


async def test_agent_without_the_finish_tool_cannot_end_the_session(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    session = await open_chat(http, await make_agent(tools=[]))

    turn = await say(http, session["id"], "please finish")

    assert turn["is_final"] is False
    assert turn["messages"][-1]["content"] == "echo: please finish"


async def test_inactivity_ttl_finishes_the_session(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    session = await open_chat(http, await make_agent(), ttl_seconds=1)

    final = await wait_until_final(http, session["id"])

    assert final["final_reason"] == "ttl"
    assert final["ttl_seconds"] == 1


async def test_a_session_talking_longer_than_its_ttl_keeps_one_inactivity_timer(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
) -> None:
    ttl = 3
    session = await open_chat(http, await make_agent(), ttl_seconds=ttl)
    loop = asyncio.get_running_loop()
    talking_since, turns = loop.time(), 0
    # Turns back to back for more than two TTL periods: the timer fires while the session
    # talks, is armed again for the rest, and never ends a session that is not idle.
    while loop.time() - talking_since < 2.5 * ttl:
        turn = await say(http, session["id"], f"message {turns}")
        assert turn["is_final"] is False
        turns += 1
    talked = loop.time() - talking_since

    final = await wait_until_final(http, session["id"])
    row = await stored_session(db, session["id"])
    history = await temporal_client.get_workflow_handle(row.workflow_id).fetch_history()
    types = [event.event_type for event in history.events]

    assert final["final_reason"] == "ttl"
    assert len([m for m in final["messages"] if m["role"] == "user"]) == turns
    started = types.count(EventType.EVENT_TYPE_TIMER_STARTED)
    assert types.count(EventType.EVENT_TYPE_TIMER_FIRED) == started  # the last one ended it
    assert types.count(EventType.EVENT_TYPE_TIMER_CANCELED) == 0
    assert 3 <= started <= talked / ttl + 2 < turns


async def wait_accepted(client: Client, workflow_id: str, count: int) -> None:
    """Until the session's workflow has accepted `count` send_message updates (bounded)."""
    for _ in range(1500):
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        accepted = [
            event.workflow_execution_update_accepted_event_attributes.accepted_request.input.name
            for event in history.events
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
        ]
        if accepted.count("send_message") >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{count} messages were not accepted by {workflow_id}")


async def test_messages_sent_while_a_turn_runs_are_answered_in_the_order_sent(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    fake_llm: tuple[FakeLLM, str],
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
) -> None:
    fake, tag = fake_llm[0], f"order-{uuid.uuid4().hex[:8]}"
    session = await open_chat(http, await make_agent(model=f"hold-{tag}"))
    workflow_id = (await stored_session(db, session["id"])).workflow_id
    texts = [f"double text {n} {tag}" for n in range(4)]

    # The first turn is held at the model; each next message goes once the last is accepted.
    sends = [asyncio.create_task(say(http, session["id"], texts[0]))]
    await fake.wait_held(tag, 1)
    for sent, text in enumerate(texts[1:], start=1):
        sends.append(asyncio.create_task(say(http, session["id"], text)))
        await wait_accepted(temporal_client, workflow_id, sent + 1)
    for _ in texts:  # every turn's model call is held once: let them through one by one
        await fake.wait_held(tag, 1)
        fake.release_held(tag)
    turns = await asyncio.gather(*sends)
    transcript = (await http.get(f"/chats/{session['id']}")).json()["messages"]

    assert [t["messages"][-1]["content"] for t in turns] == [f"echo: {t}" for t in texts]
    assert [m["content"] for m in transcript] == [
        line for text in texts for line in (text, f"echo: {text}")
    ]
    asked = [r["messages"][-1]["content"] for r in fake.requests_for(tag)]
    assert list(dict.fromkeys(asked)) == texts


async def test_retry_with_the_same_idempotency_key_returns_the_first_result(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    session = await open_chat(http, await make_agent())
    headers = {"Idempotency-Key": "client-msg-1"}

    first = await say(http, session["id"], "only once", headers=headers)
    again = await say(http, session["id"], "only once", headers=headers)
    transcript = (await http.get(f"/chats/{session['id']}")).json()["messages"]

    assert again == first
    assert [m["content"] for m in transcript] == ["only once", "echo: only once"]


async def test_signals_feed_the_same_inbox(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
) -> None:
    session = await open_chat(http, await make_agent())
    row = await stored_session(db, session["id"])
    handle = temporal_client.get_workflow_handle(row.workflow_id)

    await handle.signal(ChatSessionWorkflow.receive_message, UserMessage(content="by sms"))
    turn = await say(http, session["id"], "by api")
    transcript = (await http.get(f"/chats/{session['id']}")).json()["messages"]

    assert turn["messages"][-1]["content"] == "echo: by api"
    assert [m["content"] for m in transcript] == [
        "by sms",
        "echo: by sms",
        "by api",
        "echo: by api",
    ]


async def test_final_session_is_read_from_the_database_after_the_workflow_is_gone(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
) -> None:
    from temporalio.api.common.v1 import WorkflowExecution
    from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest

    session = await open_chat(http, await make_agent())
    await say(http, session["id"], "remember me")
    await http.post(f"/chats/{session['id']}/end")
    row = await stored_session(db, session["id"])

    await temporal_client.workflow_service.delete_workflow_execution(
        DeleteWorkflowExecutionRequest(
            namespace=temporal_client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=row.workflow_id),
        )
    )
    for _ in range(100):
        try:
            await temporal_client.get_workflow_handle(row.workflow_id).describe()
        except Exception:
            break
        await asyncio.sleep(0.1)
    fetched = await http.get(f"/chats/{session['id']}")

    assert fetched.status_code == 200
    assert [m["content"] for m in fetched.json()["messages"]] == [
        "remember me",
        "echo: remember me",
    ]
    assert fetched.json()["final_reason"] == "user_end"


async def test_list_filters_and_paginates(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent()
    opened = [await open_chat(http, agent_id, channel="sms") for _ in range(3)]
    await http.post(f"/chats/{opened[0]['id']}/end")

    first = (await http.get("/chats", params={"agent_id": agent_id, "limit": 2})).json()
    second = (
        await http.get(
            "/chats", params={"agent_id": agent_id, "limit": 2, "cursor": first["next_cursor"]}
        )
    ).json()
    active = (await http.get("/chats", params={"agent_id": agent_id, "status": "active"})).json()
    final = (await http.get("/chats", params={"agent_id": agent_id, "status": "final"})).json()
    web = (await http.get("/chats", params={"agent_id": agent_id, "channel": "web"})).json()

    listed = [s["id"] for s in first["items"] + second["items"]]
    assert sorted(listed) == sorted(s["id"] for s in opened)
    assert len(first["items"]) == 2 and second["next_cursor"] is None
    assert {s["id"] for s in active["items"]} == {opened[1]["id"], opened[2]["id"]}
    assert [s["id"] for s in final["items"]] == [opened[0]["id"]]
    assert web["items"] == []
