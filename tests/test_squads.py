"""Squads: agents that hand a conversation to each other. The API keeps them versioned like
agents; a session opened with a squad starts with its first member, and a handoff call makes
the next model call the destination's, with its prompt, model and tools, reading the part of
the transcript the handoff chose."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.conftest import AgentFactory
from tests.fakes.llm_server import FakeLLM
from tests.sessions import audit_data, open_chat, say, wait_until_final
from tests.sse import named, stream_post, text_of
from tests.test_api_errors import assert_error

BILLING_PROMPT = "You are Billing: refunds and invoices."


def handoff(context: Any = "all", member: str = "billing") -> dict[str, Any]:
    return {
        "type": "handoff",
        "destinations": [{"member": member, "description": "Money matters", "context": context}],
    }


async def make_squad(
    http: httpx.AsyncClient, make_agent: AgentFactory, context: Any = "all", **billing: Any
) -> tuple[str, str, str]:
    """Triage (hands off for a message that is a JSON object, echoes others) and Billing
    (model served-billing); the squad's id and both agents' ids."""
    triage = await make_agent(model="maybe-handoff_to_billing", tools=[handoff(context)])
    billing_id = await make_agent(
        model=billing.pop("model", "served-billing"), system_prompt=BILLING_PROMPT, **billing
    )
    response = await http.post(
        "/squads",
        json={
            "name": "support",
            "members": [
                {"name": "triage", "agent_id": triage},
                {"name": "billing", "agent_id": billing_id},
            ],
        },
    )
    assert response.status_code == 201, response.text
    return response.json()["id"], triage, billing_id


def billing_requests(fake: FakeLLM, marker: str) -> list[dict[str, Any]]:
    return [r for r in fake.requests_for(marker) if r["messages"][0]["content"] == BILLING_PROMPT]


async def test_a_squad_is_created_read_listed_updated_and_deleted(
    http: httpx.AsyncClient, other_http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    squad_id, triage, _ = await make_squad(http, make_agent)
    inline = {
        "name": "inline",
        "system_prompt": "Inline.",
        "webhook": {"url": "http://127.0.0.1:9/hook", "secret": "whsec-0123456789abcdef"},
    }

    read = (await http.get(f"/squads/{squad_id}")).json()
    patched = await http.patch(
        f"/squads/{squad_id}",
        json={"members": [*read["members"], {"name": "extra", "agent": inline}]},
    )
    listed = (await http.get("/squads", params={"limit": 100})).json()["items"]
    first = await http.get(f"/squads/{squad_id}", params={"version": 1})
    others = await other_http.get(f"/squads/{squad_id}")
    others_patch = await other_http.patch(f"/squads/{squad_id}", json={"name": "mine"})
    others_list = (await other_http.get("/squads", params={"limit": 100})).json()["items"]
    others_open = await other_http.post("/chats", json={"squad_id": squad_id, "channel": "web"})
    others_delete = await other_http.delete(f"/squads/{squad_id}")
    deleted = await http.delete(f"/squads/{squad_id}")
    gone = await http.get(f"/squads/{squad_id}")

    assert read["version"] == 1 and [m["name"] for m in read["members"]] == ["triage", "billing"]
    assert read["members"][0]["agent_id"] == triage
    assert patched.status_code == 200, patched.text
    assert patched.json()["version"] == 2
    assert patched.json()["members"][2]["agent"]["webhook"]["secret"] == "********"
    assert [s["version"] for s in listed if s["id"] == squad_id] == [2]
    assert len(first.json()["members"]) == 2
    assert_error(others, 404, "not_found")
    assert_error(others_patch, 404, "not_found")
    assert squad_id not in [item["id"] for item in others_list]
    assert_error(others_open, 404, "not_found")
    assert_error(others_delete, 404, "not_found")
    assert deleted.status_code == 204
    assert_error(gone, 404, "not_found")


async def test_squads_that_cannot_work_are_422_naming_the_member(
    http: httpx.AsyncClient, other_http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent = await make_agent()
    lost = await make_agent(tools=[handoff(member="nobody")])
    others_agent = await make_agent(client=other_http)

    def squad(*members: dict[str, Any]) -> dict[str, Any]:
        return {"name": "s", "members": list(members)}

    unknown = await http.post("/squads", json=squad({"name": "a", "agent_id": "agent-nope"}))
    foreign = await http.post("/squads", json=squad({"name": "a", "agent_id": others_agent}))
    dangling = await http.post(
        "/squads", json=squad({"name": "a", "agent_id": lost}, {"name": "b", "agent_id": agent})
    )
    twice = await http.post(
        "/squads", json=squad({"name": "a", "agent_id": agent}, {"name": "a", "agent_id": agent})
    )
    both = await http.post("/squads", json=squad({"name": "a", "agent_id": agent, "agent": {}}))
    alone = await http.post("/chats", json={"agent_id": lost, "channel": "web"})
    overrides = await http.post(
        "/chats",
        json={"squad_id": "squad-x", "agent_overrides": {"name": "x"}, "channel": "web"},
    )
    no_squad = await http.post("/chats", json={"squad_id": "squad-nope", "channel": "web"})

    assert "members[0] ('a')" in assert_error(unknown, 422, "invalid_input")["message"]
    assert_error(foreign, 422, "invalid_input")
    assert (
        "'nobody' names no other member" in assert_error(dangling, 422, "invalid_input")["message"]
    )
    assert "duplicate member names" in assert_error(twice, 422, "invalid_input")["message"]
    assert_error(both, 422, "invalid_input")
    assert "only as a member of a squad" in assert_error(alone, 422, "invalid_input")["message"]
    assert_error(overrides, 422, "invalid_input")
    assert_error(no_squad, 404, "not_found")


async def test_a_handoff_passes_the_conversation_to_the_next_member(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    fake_llm: tuple[FakeLLM, str],
    db: async_sessionmaker[AsyncSession],
) -> None:
    fake = fake_llm[0]
    squad_id, triage, billing = await make_squad(http, make_agent)
    session = await open_chat(http, None, squad_id=squad_id)
    sid = session["id"]
    first = await say(http, sid, "hello there")
    turn = await say(http, sid, json.dumps({"reason": "a refund, squad test"}))
    view = (await http.get(f"/chats/{sid}")).json()
    later = await say(http, sid, "and my invoice?")
    await http.post(f"/chats/{sid}/end")
    final = await wait_until_final(http, sid)

    assert session["squad_id"] == squad_id and session["agent_id"] == triage
    assert first["messages"][-1]["author"]["agent_id"] == triage
    [asked, answered] = turn["messages"]
    assert asked["tool_calls"][0]["name"] == "handoff_to_billing"
    assert asked["author"]["agent_id"] == triage
    assert answered["author"]["agent_id"] == billing
    assert answered["usage"]["model"] == "served-billing"
    assert later["messages"][-1]["author"]["agent_id"] == billing
    assert view["agent_id"] == billing and view["squad_id"] == squad_id
    [billing_turn, *_] = billing_requests(fake, "a refund, squad test")
    # Billing's own tools, not triage's handoff.
    assert [t["function"]["name"] for t in billing_turn["tools"]] == ["finishTheConversation"]
    assert billing_turn["messages"][1]["content"] == "hello there"  # context "all"
    assert await audit_data(db, sid, "agent.handoff") == [
        {"from": "triage", "to": "billing", "reason": "a refund, squad test"}
    ]
    [transfer] = final["artifact"]["transfers"]
    assert (transfer["from_member"], transfer["to_member"]) == ("triage", "billing")
    assert (transfer["from_agent_id"], transfer["to_agent_id"]) == (triage, billing)
    listed = (await http.get("/chats", params={"agent_id": billing})).json()["items"]
    assert [s["squad_id"] for s in listed if s["id"] == sid] == [squad_id]


@pytest.mark.parametrize(
    ("context", "seen"),
    [
        ("all", ["user", "assistant", "user", "assistant", "tool"]),
        ("none", ["user", "assistant", "tool"]),
        ({"last_messages": 2}, ["assistant", "user", "assistant", "tool"]),
    ],
)
async def test_the_next_member_reads_the_context_the_handoff_chose(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    fake_llm: tuple[FakeLLM, str],
    context: Any,
    seen: list[str],
) -> None:
    fake = fake_llm[0]
    squad_id, _, _ = await make_squad(http, make_agent, context)
    session = await open_chat(http, None, squad_id=squad_id)
    marker = f"context test {session['id']}"
    await say(http, session["id"], "before the handoff")
    await say(http, session["id"], json.dumps({"reason": marker}))
    await http.post(f"/chats/{session['id']}/end")

    [request] = billing_requests(fake, marker)
    assert [m["role"] for m in request["messages"][1:]] == seen


async def test_a_handoff_while_the_reply_streams(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    squad_id, triage, billing = await make_squad(http, make_agent, model="stream-80")
    session = await open_chat(http, None, squad_id=squad_id)

    events = await stream_post(
        http,
        f"/chats/{session['id']}/messages",
        {"content": json.dumps({"reason": "streamed handoff"})},
    )
    await http.post(f"/chats/{session['id']}/end")

    [done] = named(events, "done")
    assert [m["author"]["agent_id"] for m in done.data["messages"]] == [triage, billing]
    assert text_of(events, 1) == "Goodbye from the fake model."
    assert len(named(events, "message.delta")) > 1
