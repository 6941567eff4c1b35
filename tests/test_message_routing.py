"""The API remembers which workflow a session lives in after its first message; a session that
ends later still refuses messages, and they never reach the next session on its endpoint."""

from __future__ import annotations

import httpx

from tests.conftest import AgentFactory
from tests.sessions import endpoint_open_body, open_chat, say


async def test_a_session_that_talked_then_ended_refuses_messages(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    session = await open_chat(http, await make_agent())
    await say(http, session["id"], "hello")
    await http.post(f"/chats/{session['id']}/end")

    late = await http.post(f"/chats/{session['id']}/messages", json={"content": "still there?"})
    again = await http.post(f"/chats/{session['id']}/messages", json={"content": "hello??"})

    assert late.status_code == 409 and "final" in late.json()["error"]["message"]
    assert again.status_code == 409


async def test_a_message_to_an_ended_endpoint_session_never_reaches_the_next_one(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    body = endpoint_open_body(await make_agent())
    first = (await http.post("/chats", json=body)).json()
    await say(http, first["id"], "first session")
    await http.post(f"/chats/{first['id']}/end")
    second = (await http.post("/chats", json=body)).json()

    late = await http.post(f"/chats/{first['id']}/messages", json={"content": "for the first"})
    still = (await http.get(f"/chats/{second['id']}")).json()

    assert second["id"] != first["id"]
    assert late.status_code == 409
    assert still["status"] == "active" and still["messages"] == []
