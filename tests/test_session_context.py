"""A session's context: given at open and added later, the 5 most recent kept, read by the
model on every later turn as a section of its system prompt."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.conftest import AgentFactory
from tests.fakes.llm_server import FakeLLM
from tests.sessions import audit_data, open_chat, say

PROMPT = "You help customers of Acme on web."


def system_prompt(fake_llm: tuple[FakeLLM, str], marker: str) -> Any:
    """The system prompt of the turn that answered `marker` (later turns carry it too)."""
    first = fake_llm[0].requests_for(marker)[0]
    return first["messages"][0]["content"]


async def test_context_given_at_open_and_added_later_reaches_the_model(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    fake_llm: tuple[FakeLLM, str],
    db: async_sessionmaker[AsyncSession],
) -> None:
    agent_id = await make_agent()
    session = await open_chat(
        http, agent_id, additional_data={"company": "Acme"}, context=["plan: gold"]
    )
    await say(http, session["id"], "marker-context-1")
    added = await http.post(f"/chats/{session['id']}/context", json={"context": "order 77"})
    await say(http, session["id"], "marker-context-2")
    live = (await http.get(f"/chats/{session['id']}")).json()

    assert session["context"] == ["plan: gold"]
    assert system_prompt(fake_llm, "marker-context-1") == f"{PROMPT}\n\n## Context\nplan: gold"
    assert added.status_code == 200 and added.json() == {"context": ["plan: gold", "order 77"]}
    assert system_prompt(fake_llm, "marker-context-2") == (
        f"{PROMPT}\n\n## Context\nplan: gold\norder 77"
    )
    final = (await http.post(f"/chats/{session['id']}/end")).json()

    assert live["context"] == ["plan: gold", "order 77"]
    assert final["is_final"] is True and final["context"] == ["plan: gold", "order 77"]
    audited = await audit_data(db, session["id"], "session.context_added")
    assert audited == [{"length": 8, "kept": 2}]  # its length, never its text


async def test_only_the_five_most_recent_are_kept(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    session = await open_chat(http, await make_agent(), context=["one", "two"])
    for text in ("three", "four", "five", "six"):
        answer = await http.post(f"/chats/{session['id']}/context", json={"context": text})
        assert answer.status_code == 200, answer.text

    assert answer.json() == {"context": ["two", "three", "four", "five", "six"]}


async def test_a_prompt_that_places_the_context_gets_it_there(
    http: httpx.AsyncClient, make_agent: AgentFactory, fake_llm: tuple[FakeLLM, str]
) -> None:
    agent_id = await make_agent(system_prompt="Facts: {{context}}. Be brief.")
    session = await open_chat(http, agent_id, context=["a", "b"])
    await say(http, session["id"], "marker-context-3")

    assert system_prompt(fake_llm, "marker-context-3") == "Facts: a\nb. Be brief."


async def test_bad_context_is_refused_with_a_message(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent()
    session = await open_chat(http, agent_id)
    url = f"/chats/{session['id']}/context"

    empty = await http.post(url, json={"context": "  "})
    missing = await http.post(url, json={})
    too_many = await http.post(
        "/chats", json={"agent_id": agent_id, "channel": "web", "context": ["x"] * 6}
    )
    reserved = await http.post(
        "/chats",
        json={"agent_id": agent_id, "channel": "web", "additional_data": {"context": "x"}},
    )

    for refused in (empty, missing, too_many, reserved):
        assert refused.status_code == 422, refused.text
    assert "may not be empty" in empty.text
    assert "reserved keys" in reserved.text


async def test_context_is_refused_for_a_final_session_or_a_stateless_one(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent()
    session = await open_chat(http, agent_id)
    await http.post(f"/chats/{session['id']}/end")
    stateless = await http.post(
        "/text-chat/completion",
        json={"agent": {"id": agent_id}, "messages": [{"role": "user", "content": "hi"}]},
    )
    call_id = stateless.json()["call_id"]

    final = await http.post(f"/chats/{session['id']}/context", json={"context": "late"})
    other = await http.post(f"/chats/{call_id}/context", json={"context": "x"})

    assert final.status_code == 409 and "final" in final.text
    assert other.status_code == 409 and "stateless" in other.text


async def test_another_accounts_session_is_404(
    http: httpx.AsyncClient, other_http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    session = await open_chat(http, await make_agent())

    answer = await other_http.post(f"/chats/{session['id']}/context", json={"context": "x"})

    assert answer.status_code == 404
    assert (await http.get(f"/chats/{session['id']}")).json()["context"] == []
