"""A webhook tool with `requires_approval`: its calls wait for an operator's decision, which
lets them run or tells the model no; without a decision in time they are refused by
themselves."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.conftest import WEBHOOK_SECRET, AgentFactory
from tests.fakes.tool_server import FakeToolServer
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.sessions import audit_data, open_chat, say
from tests.sse import follow, named
from tests.test_api_errors import assert_error
from tests.test_tools import webhook_tool

ANA = {"id": "op-ana", "name": "Ana"}


async def approval_agent(
    make_agent: AgentFactory, tools: tuple[FakeToolServer, str], **spec: Any
) -> str:
    return await make_agent(
        model="tool-lookup_order",
        tools=[webhook_tool(f"{tools[1]}/echo", requires_approval=True)],
        **spec,
    )


async def pending(http: httpx.AsyncClient, session_id: str) -> list[dict[str, Any]]:
    """The session's pending approvals once there is one (bounded polling)."""
    for _ in range(300):
        waiting: list[dict[str, Any]] = (await http.get(f"/chats/{session_id}")).json()[
            "pending_approvals"
        ]
        if waiting:
            return waiting
        await asyncio.sleep(0.1)
    raise AssertionError(f"no approval was asked in {session_id}")


async def test_an_approved_call_runs_and_the_model_reads_its_answer(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    tools: tuple[FakeToolServer, str],
    receiver: tuple[WebhookReceiver, str],
    db: async_sessionmaker[AsyncSession],
) -> None:
    hooks, url = receiver
    server, order = tools[0], f"A-{uuid.uuid4().hex[:6]}"
    agent_id = await approval_agent(
        make_agent,
        tools,
        webhook={"url": url, "secret": WEBHOOK_SECRET, "events": ["tool.approval_requested"]},
    )
    session = await open_chat(http, agent_id)
    sid = session["id"]
    turn = asyncio.create_task(say(http, sid, f'{{"id": "{order}"}}'))
    [waiting] = await pending(http, sid)
    called_before = [c for c in server.calls_to("/echo") if order in c.body.decode()]
    decided = await http.post(
        f"/chats/{sid}/approvals/{waiting['tool_call_id']}",
        json={"approved": True, "operator": ANA},
    )
    reply = await turn
    again = await http.post(
        f"/chats/{sid}/approvals/{waiting['tool_call_id']}", json={"approved": True}
    )
    [hook] = await hooks.wait_accepted(sid, "tool.approval_requested", 1, within=30)
    streamed = await follow(http, f"/chats/{sid}/stream?after=0", until="message")
    view = (await http.get(f"/chats/{sid}")).json()
    await http.post(f"/chats/{sid}/end")

    assert waiting["name"] == "lookup_order" and order in waiting["arguments"]
    assert called_before == []
    assert decided.status_code == 200, decided.text
    assert decided.json() == {
        "tool_call_id": waiting["tool_call_id"],
        "name": "lookup_order",
        "approved": True,
    }
    assert reply["messages"][-1]["content"] == f'tool said: {{"received":{{"id":"{order}"}}}}'
    assert [c for c in server.calls_to("/echo") if order in c.body.decode()]
    assert_error(again, 404, "not_found")
    assert view["pending_approvals"] == []
    assert hook.body["data"]["tool_call_id"] == waiting["tool_call_id"]
    [asked] = named(streamed, "tool.approval_requested")
    assert asked.data["name"] == "lookup_order"
    [audited] = await audit_data(db, sid, "tool.approval_decided")
    assert audited == {
        "tool_call_id": waiting["tool_call_id"],
        "approved": True,
        "timed_out": False,
        "operator": ANA,
        "note": None,
    }


async def test_a_refused_call_is_not_made_and_the_model_reads_the_note(
    http: httpx.AsyncClient, make_agent: AgentFactory, tools: tuple[FakeToolServer, str]
) -> None:
    server, order = tools[0], f"R-{uuid.uuid4().hex[:6]}"
    session = await open_chat(http, await approval_agent(make_agent, tools))
    sid = session["id"]
    turn = asyncio.create_task(say(http, sid, f'{{"id": "{order}"}}'))
    [waiting] = await pending(http, sid)
    decided = await http.post(
        f"/chats/{sid}/approvals/{waiting['tool_call_id']}",
        json={"approved": False, "note": "not for this customer"},
    )
    reply = await turn
    await http.post(f"/chats/{sid}/end")

    assert decided.status_code == 200 and decided.json()["approved"] is False
    [asked, answer] = reply["messages"]
    assert asked["tool_calls"][0]["response"] == (
        "error: an operator refused this call, so it was not made: not for this customer"
    )
    assert answer["content"].startswith("tool said: error: an operator refused")
    assert [c for c in server.calls_to("/echo") if order in c.body.decode()] == []


async def test_a_call_nobody_approves_in_time_is_refused_by_itself(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    tools: tuple[FakeToolServer, str],
    db: async_sessionmaker[AsyncSession],
) -> None:
    session = await open_chat(
        http, await approval_agent(make_agent, tools, approval_timeout_seconds=1)
    )
    sid = session["id"]

    reply = await say(http, sid, '{"id": "T-1"}')
    await http.post(f"/chats/{sid}/end")

    assert reply["messages"][0]["tool_calls"][0]["response"] == (
        "error: nobody approved this call in time, so it was not made"
    )
    [audited] = await audit_data(db, sid, "tool.approval_decided")
    assert audited["approved"] is False and audited["timed_out"] is True


async def test_decisions_on_unknown_calls_or_other_accounts_sessions_are_404(
    http: httpx.AsyncClient,
    other_http: httpx.AsyncClient,
    make_agent: AgentFactory,
    tools: tuple[FakeToolServer, str],
) -> None:
    session = await open_chat(http, await approval_agent(make_agent, tools))
    sid = session["id"]
    turn = asyncio.create_task(say(http, sid, '{"id": "X-1"}'))
    [waiting] = await pending(http, sid)
    unknown = await http.post(f"/chats/{sid}/approvals/call_nope", json={"approved": True})
    other = await other_http.post(
        f"/chats/{sid}/approvals/{waiting['tool_call_id']}", json={"approved": True}
    )
    no_body = await http.post(f"/chats/{sid}/approvals/{waiting['tool_call_id']}", json={})
    await http.post(f"/chats/{sid}/approvals/{waiting['tool_call_id']}", json={"approved": False})
    await turn
    await http.post(f"/chats/{sid}/end")

    assert "call_nope" in assert_error(unknown, 404, "not_found")["message"]
    assert_error(other, 404, "not_found")
    assert_error(no_body, 422, "invalid_input")


async def test_a_stateless_conversation_does_not_make_calls_that_need_approval(
    http: httpx.AsyncClient, make_agent: AgentFactory, tools: tuple[FakeToolServer, str]
) -> None:
    server = tools[0]
    answer = await http.post(
        "/text-chat/completion",
        json={
            "agent": {"id": await approval_agent(make_agent, tools)},
            "messages": [{"role": "user", "content": '{"id": "S-404"}'}],
        },
    )

    assert answer.status_code == 200, answer.text
    [asked, _] = answer.json()["messages"]
    assert asked["tool_calls"][0]["response"].startswith("error: this tool needs an operator's")
    assert [c for c in server.calls_to("/echo") if "S-404" in c.body.decode()] == []


async def test_a_takeover_waits_for_no_approval_and_an_end_refuses_them(
    http: httpx.AsyncClient, make_agent: AgentFactory, tools: tuple[FakeToolServer, str]
) -> None:
    session = await open_chat(http, await approval_agent(make_agent, tools))
    sid = session["id"]
    turn = asyncio.create_task(say(http, sid, '{"id": "E-1"}'))
    await pending(http, sid)
    takeover = await http.post(f"/chats/{sid}/takeover", json={"operator": ANA})
    ended = await http.post(f"/chats/{sid}/end")
    reply = await turn

    assert "decide it first" in assert_error(takeover, 409, "conflict")["message"]
    assert ended.status_code == 200 and ended.json()["is_final"]
    assert reply["messages"][0]["tool_calls"][0]["response"] == (
        "error: an operator refused this call, so it was not made: the session is ending"
    )
