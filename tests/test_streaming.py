"""Streaming replies over server-sent events: a turn's events on the message route, a session
followed live and resumed, idempotent retries joining their turn, errors before and after the
stream began. The fake model streams when asked (`stream-<ms>`: <ms> between words)."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from tests.conftest import AgentFactory
from tests.fakes.llm_server import FakeLLM
from tests.sessions import open_chat, say
from tests.sse import STREAM, follow, named, stream_post, text_of

LONG = "tell me about the shipping options for a parcel to Lisbon next week please"


async def test_a_streamed_turn_sends_the_text_as_it_comes_then_done(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    session = await open_chat(http, await make_agent("stream-30"))

    events = await stream_post(http, f"/chats/{session['id']}/messages", {"content": LONG})

    deltas = named(events, "message.delta")
    [message] = named(events, "message")
    [done] = named(events, "done")
    assert events[-1] is done
    assert len(deltas) >= 3  # words 30 ms apart, written in batches of 50 ms
    assert deltas[0].at < message.at and deltas[-1].at <= done.at
    # The text grew over time before the turn was done.
    assert done.at - deltas[0].at > 0.1
    assert text_of(events) == f"echo: {LONG}" == message.data["message"]["content"]
    assert message.data["message_index"] == 0
    plain_shape = {"messages": [message.data["message"]], "is_final": False, "mode": "ai"}
    assert done.data == plain_shape
    positions = [event.position for event in events]
    assert positions == sorted(positions) and len(set(positions[:-1])) == len(positions) - 1
    # The user's message is on the stream too, before the reply.
    [user] = named(events, "user_message")
    assert user.data["message"]["content"] == LONG and user.position < deltas[0].position


async def test_the_plain_call_answers_as_before_while_the_model_streams(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    session = await open_chat(http, await make_agent("stream-5"))

    turn = await say(http, session["id"], "hello")

    assert [m["content"] for m in turn["messages"]] == ["echo: hello"]


async def test_a_session_is_followed_live_and_resumed_without_loss_or_repeat(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    session = await open_chat(http, await make_agent("stream-10"))
    url = f"/chats/{session['id']}/stream"
    following = asyncio.create_task(follow(http, url, until="session.final"))
    await asyncio.sleep(0.3)

    await say(http, session["id"], "first question")
    await say(http, session["id"], "second question")
    await http.post(f"/chats/{session['id']}/end", json={"note": "done"})
    live = await asyncio.wait_for(following, 30)

    assert [e.data["message"]["content"] for e in named(live, "user_message")] == [
        "first question",
        "second question",
    ]
    assert [e.data["message"]["content"] for e in named(live, "message")] == [
        "echo: first question",
        "echo: second question",
    ]
    assert live[-1].name == "session.final" and live[-1].data["reason"] == "user_end"
    positions = [e.position for e in live]
    assert positions == list(range(positions[0], positions[0] + len(positions)))
    # Resume from the middle, by header and by query: exactly the rest, once.
    middle = live[len(live) // 2]
    rest = await follow(http, url, until="session.final", **{"Last-Event-ID": middle.id})
    by_query = await follow(http, f"{url}?after={middle.id}", until="session.final")
    expected = [(e.id, e.name, e.data) for e in live if e.position > middle.position]
    # A final session keeps its messages; the partial text is dropped once they are recorded.
    kept = [entry for entry in expected if entry[1] not in ("message.delta", "discard")]
    assert [(e.id, e.name, e.data) for e in rest] == kept
    assert [(e.id, e.name, e.data) for e in by_query] == kept


async def test_a_retry_with_the_same_key_joins_the_turn_and_runs_nothing_twice(
    http: httpx.AsyncClient, make_agent: AgentFactory, fake_llm: tuple[FakeLLM, str]
) -> None:
    session = await open_chat(http, await make_agent("stream-20"))
    marker = f"once {uuid.uuid4().hex[:8]}"
    url = f"/chats/{session['id']}/messages"
    key = {"Idempotency-Key": f"k-{uuid.uuid4().hex}"}

    first_call = asyncio.create_task(stream_post(http, url, {"content": f"{LONG} {marker}"}, **key))
    await asyncio.sleep(0.4)  # the first call's turn is streaming
    joined = await stream_post(http, url, {"content": f"{LONG} {marker}"}, **key)
    first = await first_call
    again = await stream_post(http, url, {"content": f"{LONG} {marker}"}, **key)

    assert named(first, "done")[0].data == named(joined, "done")[0].data
    assert named(again, "done")[0].data == named(first, "done")[0].data
    assert text_of(joined) == text_of(first) == f"echo: {LONG} {marker}"
    assert len(fake_llm[0].requests_for(marker)) == 1
    transcript = (await http.get(f"/chats/{session['id']}")).json()["messages"]
    assert [m["content"] for m in transcript].count(f"echo: {LONG} {marker}") == 1


async def test_tool_calls_and_their_results_stream_and_the_end_closes_the_stream(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    session = await open_chat(http, await make_agent("stream-5"))
    following = asyncio.create_task(
        follow(http, f"/chats/{session['id']}/stream", until="session.final")
    )
    await asyncio.sleep(0.3)

    events = await stream_post(
        http, f"/chats/{session['id']}/messages", {"content": "please finish"}
    )
    live = await asyncio.wait_for(following, 30)

    [call] = named(events, "tool_call")
    [result] = named(events, "tool_result")
    assert call.data["name"] == result.data["name"] == "finishTheConversation"
    assert call.data["id"] == result.data["id"] and call.data["message_index"] == 0
    assert call.position < result.position
    assert [e.data["message_index"] for e in named(events, "message")] == [0, 1]
    assert named(events, "done")[0].data["is_final"] is True
    assert live[-1].name == "session.final" and live[-1].data["reason"] == "agent_finish"


async def test_a_turn_that_fails_after_the_stream_began_ends_with_the_error_shape(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    session = await open_chat(http, await make_agent("reject"))
    url = f"/chats/{session['id']}/messages"

    plain = await http.post(url, json={"content": "hello"})
    events = await stream_post(http, url, {"content": "hello again"})

    [error] = named(events, "error")
    assert events[-1] is error and not named(events, "done")
    assert error.data["error"]["code"] == plain.json()["error"]["code"]
    assert error.data["error"]["message"] == plain.json()["error"]["message"]


async def test_errors_before_the_stream_are_plain_json(
    http: httpx.AsyncClient, other_http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    session = await open_chat(http, await make_agent("echo"))
    missing = await http.post("/chats/nope/messages", json={"content": "x"}, headers=STREAM)
    foreign = await other_http.get(f"/chats/{session['id']}/stream", headers=STREAM)
    bad_resume = await http.get(
        f"/chats/{session['id']}/stream", headers={**STREAM, "Last-Event-ID": "abc"}
    )
    empty = await http.post(
        f"/chats/{session['id']}/messages", json={"content": ""}, headers=STREAM
    )
    await http.post(f"/chats/{session['id']}/end", json={})
    final = await http.post(
        f"/chats/{session['id']}/messages", json={"content": "x"}, headers=STREAM
    )

    for response, status in [
        (missing, 404),
        (foreign, 404),
        (bad_resume, 422),
        (empty, 422),
        (final, 409),
    ]:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"]["message"]


@pytest.mark.parametrize("after", ["-1", "1e3"])
async def test_a_bad_resume_position_in_the_query_is_refused(
    http: httpx.AsyncClient, make_agent: AgentFactory, after: str
) -> None:
    session = await open_chat(http, await make_agent("echo"))

    response = await http.get(f"/chats/{session['id']}/stream?after={after}", headers=STREAM)

    assert response.status_code == 422 and "after" in response.json()["error"]["message"]


async def test_a_stateless_turn_streams_and_done_carries_the_new_state(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent("stream-20")
    first_body = {"agent": {"id": agent_id}, "messages": [{"role": "user", "content": LONG}]}

    events = await stream_post(http, "/text-chat/completion", first_body)
    [done] = named(events, "done")
    body = done.data
    reply = body["messages"][0]["content"]
    second_body = {
        "agent": {"id": agent_id},
        "state": body["state"],
        "messages": [
            {"role": "user", "content": LONG},
            {"role": "assistant", "content": reply},
            {"role": "user", "content": "and the price?"},
        ],
    }
    plain = await http.post("/text-chat/completion", json=second_body)

    assert events[-1] is done and len(named(events, "message.delta")) >= 2
    assert text_of(events) == reply == f"echo: {LONG}"
    assert [e.data["message"]["content"] for e in named(events, "message")] == [reply]
    assert set(body) == {"messages", "state", "is_finished", "correlation_id", "call_id"}
    assert plain.status_code == 200, plain.text
    assert plain.json()["messages"][0]["content"] == "echo: and the price?"
