"""The agent asks for a human (the built-in requestHuman): the session says so in its view,
its audit log and a `session.help_requested` webhook event, and the reply still goes out."""

from __future__ import annotations

import json

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.workflows.help_requests import HELP_REQUESTED
from tests.conftest import WEBHOOK_SECRET, AgentFactory
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.sessions import audit_data, open_chat, say

REQUEST_HUMAN = {"type": "builtin", "name": "requestHuman"}


async def test_a_help_request_is_seen_in_the_view_the_audit_log_and_the_webhook(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    receiver: tuple[WebhookReceiver, str],
    db: async_sessionmaker[AsyncSession],
) -> None:
    hooks, url = receiver
    agent_id = await make_agent(
        model="tool-requestHuman",
        tools=[REQUEST_HUMAN],
        webhook={"url": url, "secret": WEBHOOK_SECRET, "events": ["session.help_requested"]},
    )
    session = await open_chat(http, agent_id)
    assert session["help_requested"] is False

    turn = await say(http, session["id"], json.dumps({"reason": "wants a refund over $500"}))
    view = (await http.get(f"/chats/{session['id']}")).json()
    [delivery] = await hooks.wait_accepted(session["id"], "session.help_requested", 1, within=30)

    [asked, reply] = turn["messages"]
    assert asked["tool_calls"][0]["name"] == "requestHuman"
    assert asked["tool_calls"][0]["response"] == HELP_REQUESTED
    assert reply["content"] == f"tool said: {HELP_REQUESTED}"
    assert view["help_requested"] is True and view["mode"] == "ai"
    assert delivery.body["data"] == {"reason": "wants a refund over $500"}
    await http.post(f"/chats/{session['id']}/end")
    audited = await audit_data(db, session["id"], "session.help_requested")
    assert audited == [{"reason": "wants a refund over $500"}]


async def test_a_stateless_conversation_tells_the_model_no_human_can_join(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent(model="tool-requestHuman", tools=[REQUEST_HUMAN])

    answer = await http.post(
        "/text-chat/completion",
        json={
            "agent": {"id": agent_id},
            "messages": [{"role": "user", "content": json.dumps({"reason": "a person"})}],
        },
    )

    assert answer.status_code == 200, answer.text
    [asked, reply] = answer.json()["messages"]
    assert asked["tool_calls"][0]["response"].startswith("error: no human can join")
    assert reply["content"].startswith("tool said: error: no human can join")
