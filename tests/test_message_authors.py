"""Who wrote each assistant message: the agent's are marked `ai` with its id, live and once
the session is final (read back from the database)."""

from __future__ import annotations

import httpx

from tests.conftest import AgentFactory
from tests.sessions import open_chat, say


async def test_the_agents_messages_name_the_agent_live_and_when_final(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent(first_message="Hi, I am the agent.")
    session = await open_chat(http, agent_id)

    turn = await say(http, session["id"], "hello there")
    live = (await http.get(f"/chats/{session['id']}")).json()
    final = (await http.post(f"/chats/{session['id']}/end")).json()

    ai = {"kind": "ai", "agent_id": agent_id, "id": None, "name": None}
    assert turn["messages"][-1]["author"] == ai
    for view in (live, final):
        assert [(m["role"], m["author"]) for m in view["messages"]] == [
            ("assistant", ai),
            ("user", None),
            ("assistant", ai),
        ]
    assert live["mode"] == "ai" and live["help_requested"] is False
    assert live["active_human"] is None and live["context"] == []
