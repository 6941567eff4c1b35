"""A human operator takes a session over, writes to the user, whispers to the agent and hands
the session back: the agent is silent meanwhile, nothing the user sends is lost, and the audit
log says which operator did what."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.activities.llm import guidance_message
from tests.conftest import WEBHOOK_SECRET, AgentFactory, api_client
from tests.fakes.llm_server import FakeLLM
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.sessions import audit_data, open_chat, say
from tests.sse import follow, named
from tests.test_api_errors import assert_error
from tests.test_help_requests import REQUEST_HUMAN

ANA = {"id": "op-ana", "name": "Ana"}
BEN = {"id": "op-ben", "name": "Ben"}


async def take_over(
    http: httpx.AsyncClient, session_id: str, operator: dict[str, str] = ANA
) -> dict[str, Any]:
    response = await http.post(f"/chats/{session_id}/takeover", json={"operator": operator})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def operator_says(http: httpx.AsyncClient, session_id: str, content: str) -> dict[str, Any]:
    response = await http.post(f"/chats/{session_id}/operator-messages", json={"content": content})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def transcript_until(
    http: httpx.AsyncClient, session_id: str, count: int, attempts: int = 300
) -> list[dict[str, Any]]:
    """The session's messages once there are at least `count` (bounded polling)."""
    for _ in range(attempts):
        messages: list[dict[str, Any]] = (await http.get(f"/chats/{session_id}")).json()["messages"]
        if len(messages) >= count:
            return messages
        await asyncio.sleep(0.1)
    raise AssertionError(f"session {session_id} never had {count} messages")


async def test_takeover_silences_the_agent_and_the_operator_answers_as_a_human(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    fake_llm: tuple[FakeLLM, str],
    db: async_sessionmaker[AsyncSession],
) -> None:
    fake = fake_llm[0]
    session = await open_chat(
        http, await make_agent(model="tool-requestHuman", tools=[REQUEST_HUMAN])
    )
    sid = session["id"]
    await say(http, sid, json.dumps({"reason": "a refund"}))
    assert (await http.get(f"/chats/{sid}")).json()["help_requested"] is True

    held = await take_over(http, sid)
    marker = f"where is my parcel {uuid.uuid4().hex[:8]}"
    waiting = await http.post(f"/chats/{sid}/messages", json={"content": marker})
    asked_model = len(fake.requests_for(marker))
    written = await operator_says(http, sid, "Hi, Ana here: it ships today.")
    listed = (await http.get("/chats", params={"status": "active"})).json()["items"]
    view = (await http.get(f"/chats/{sid}")).json()

    assert held["mode"] == "human" and held["active_human"] == ANA
    assert held["help_requested"] is False
    assert waiting.status_code == 202
    assert waiting.json() == {"messages": [], "is_final": False, "mode": "human"}
    assert asked_model == 0
    assert written["message"]["author"] == {"kind": "human", "agent_id": None, **ANA}
    assert written["message"]["role"] == "assistant"
    assert [m["content"] for m in view["messages"][-2:]] == [
        marker,
        "Hi, Ana here: it ships today.",
    ]
    assert view["messages"][-1]["author"]["kind"] == "human"
    assert view["messages"][written["seq"]]["content"] == "Hi, Ana here: it ships today."
    [row] = [item for item in listed if item["id"] == sid]
    assert row["mode"] == "human" and row["active_human"] == ANA and not row["help_requested"]

    back = (await http.post(f"/chats/{sid}/handback")).json()
    turn = await say(http, sid, json.dumps({"reason": "again"}))
    seen = fake.requests_for("Hi, Ana here")
    await http.post(f"/chats/{sid}/end")

    assert back["mode"] == "ai" and back["active_human"] is None
    assert turn["messages"][-1]["author"]["kind"] == "ai"
    assert seen, "the agent reads the operator's message once it answers again"
    assert await audit_data(db, sid, "session.takeover") == [{"operator": ANA}]
    assert await audit_data(db, sid, "operator.message") == [
        {"operator": ANA, "seq": written["seq"]}
    ]
    assert await audit_data(db, sid, "session.handback") == [
        {"reason": "operator", "operator": ANA}
    ]


async def test_hand_back_answers_the_message_left_waiting(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    session = await open_chat(http, await make_agent())
    sid = session["id"]
    await take_over(http, sid)
    waiting = await http.post(f"/chats/{sid}/messages", json={"content": "anyone there?"})
    before = (await http.get(f"/chats/{sid}")).json()["messages"]

    back = await http.post(f"/chats/{sid}/handback", json={"operator": BEN})
    after = await transcript_until(http, sid, len(before) + 1)
    await http.post(f"/chats/{sid}/end")

    assert waiting.status_code == 202
    assert back.status_code == 200 and back.json()["mode"] == "ai"
    assert [m["content"] for m in after[-2:]] == ["anyone there?", "echo: anyone there?"]
    assert after[-1]["author"]["kind"] == "ai"


async def test_an_operator_message_re_sent_with_its_idempotency_key_is_written_once(
    http: httpx.AsyncClient, make_agent: AgentFactory, db: async_sessionmaker[AsyncSession]
) -> None:
    session = await open_chat(http, await make_agent())
    sid = session["id"]
    await take_over(http, sid)
    body, key = {"content": "Ana here, one moment."}, {"Idempotency-Key": f"op-{uuid.uuid4()}"}

    first = await http.post(f"/chats/{sid}/operator-messages", json=body, headers=key)
    again = await http.post(f"/chats/{sid}/operator-messages", json=body, headers=key)
    unkeyed = await http.post(f"/chats/{sid}/operator-messages", json=body)
    view = (await http.get(f"/chats/{sid}")).json()
    await http.post(f"/chats/{sid}/end")

    assert first.status_code == again.status_code == unkeyed.status_code == 201
    assert again.json() == first.json()
    assert unkeyed.json()["seq"] == first.json()["seq"] + 1
    assert [m["content"] for m in view["messages"]].count(body["content"]) == 2
    assert [event["seq"] for event in await audit_data(db, sid, "operator.message")] == [
        first.json()["seq"],
        unkeyed.json()["seq"],
    ]


async def test_a_turn_in_flight_finishes_before_the_takeover(
    http: httpx.AsyncClient, make_agent: AgentFactory, fake_llm: tuple[FakeLLM, str]
) -> None:
    fake, tag = fake_llm[0], f"takeover-{uuid.uuid4().hex[:8]}"
    session = await open_chat(http, await make_agent(model=f"hold-{tag}"))
    sid = session["id"]
    turn = asyncio.create_task(say(http, sid, f"mid turn {tag}"))
    await fake.wait_held(tag, 1)
    takeover = asyncio.create_task(take_over(http, sid))
    await asyncio.sleep(0.5)  # the takeover waits for the turn; it must not be answered yet
    answered_early = takeover.done()
    fake.release_held(tag)
    reply, held = await turn, await takeover
    later = await http.post(f"/chats/{sid}/messages", json={"content": "after the takeover"})
    await http.post(f"/chats/{sid}/end")

    assert not answered_early
    assert reply["messages"][-1]["content"] == f"echo: mid turn {tag}"
    assert held["mode"] == "human"
    assert [m["content"] for m in held["messages"][-2:]] == [
        f"mid turn {tag}",
        f"echo: mid turn {tag}",
    ]
    assert later.status_code == 202


async def test_a_whisper_guides_the_agent_and_never_reaches_the_user(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    fake_llm: tuple[FakeLLM, str],
    db: async_sessionmaker[AsyncSession],
) -> None:
    fake = fake_llm[0]
    session = await open_chat(http, await make_agent())
    sid = session["id"]
    secret = f"offer the 10% coupon {uuid.uuid4().hex[:8]}"

    quiet = await http.post(f"/chats/{sid}/whisper", json={"content": secret, "operator": BEN})
    turn = await say(http, sid, "can you do better on price?")
    told = await http.post(f"/chats/{sid}/whisper", json={"content": "now", "reply_now": True})
    after = await say(http, sid, "thanks")
    view = (await http.get(f"/chats/{sid}")).json()
    await http.post(f"/chats/{sid}/end")

    assert quiet.status_code == 200
    assert quiet.json() == {"messages": [], "is_final": False, "mode": "ai"}
    # The echo model repeats the last message it reads: the whisper, placed after the user's.
    assert turn["messages"][-1]["content"] == f"echo: {guidance_message([secret])}"
    assert told.status_code == 200, told.text
    assert told.json()["messages"][-1]["content"] == f"echo: {guidance_message(['now'])}"
    assert after["messages"][-1]["content"] == "echo: thanks"  # whispers are read once
    assert not [m for m in view["messages"] if m["content"] in (secret, "now")]
    assert not [m for m in view["messages"] if m["role"] == "system"]
    guided = [
        request
        for request in fake.requests_for(secret)
        if any(m["role"] == "system" and secret in m["content"] for m in request["messages"])
    ]
    assert len(guided) == 1
    assert await audit_data(db, sid, "operator.whisper") == [
        {"operator": BEN, "length": len(secret), "reply_now": False},
        {"operator": None, "length": 3, "reply_now": True},
    ]


async def test_operator_actions_the_mode_does_not_allow_are_409(
    http: httpx.AsyncClient, other_http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    session = await open_chat(http, await make_agent())
    sid = session["id"]
    unheld_reply = await http.post(f"/chats/{sid}/operator-messages", json={"content": "hi"})
    unheld_back = await http.post(f"/chats/{sid}/handback")
    await take_over(http, sid)
    again = await http.post(f"/chats/{sid}/takeover", json={"operator": ANA})
    stolen = await http.post(f"/chats/{sid}/takeover", json={"operator": BEN})
    reply_now = await http.post(f"/chats/{sid}/whisper", json={"content": "x", "reply_now": True})
    other = await other_http.post(f"/chats/{sid}/takeover", json={"operator": BEN})
    blank = await http.post(f"/chats/{sid}/operator-messages", json={"content": "  "})
    no_operator = await http.post(f"/chats/{sid}/takeover", json={})
    await http.post(f"/chats/{sid}/end")
    final = await http.post(f"/chats/{sid}/takeover", json={"operator": ANA})

    assert "take it over first" in assert_error(unheld_reply, 409, "conflict")["message"]
    assert_error(unheld_back, 409, "conflict")
    assert again.status_code == 200  # the same operator again: nothing changes
    assert "op-ana" in assert_error(stolen, 409, "conflict")["message"]
    assert "hand it back first" in assert_error(reply_now, 409, "conflict")["message"]
    assert_error(other, 404, "not_found")
    assert_error(blank, 422, "invalid_input")
    assert_error(no_operator, 422, "invalid_input")
    assert_error(final, 409, "conflict")


async def test_a_stateless_conversation_cannot_be_taken_over(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent()
    answer = await http.post(
        "/text-chat/completion",
        json={"agent": {"id": agent_id}, "messages": [{"role": "user", "content": "hi"}]},
    )
    conversation = answer.json()["call_id"]

    refused = await http.post(f"/chats/{conversation}/takeover", json={"operator": ANA})

    assert "stateless" in assert_error(refused, 409, "conflict")["message"]


async def test_takeover_and_handback_reach_the_stream_and_the_webhook(
    http: httpx.AsyncClient, make_agent: AgentFactory, receiver: tuple[WebhookReceiver, str]
) -> None:
    hooks, url = receiver
    events = ["session.takeover", "session.handback", "message"]
    agent_id = await make_agent(webhook={"url": url, "secret": WEBHOOK_SECRET, "events": events})
    session = await open_chat(http, agent_id)
    sid = session["id"]
    await take_over(http, sid)
    written = await operator_says(http, sid, "a human writes")
    await http.post(f"/chats/{sid}/handback")
    streamed = await follow(http, f"/chats/{sid}/stream?after=0", until="session.handback")
    [taken] = await hooks.wait_accepted(sid, "session.takeover", 1, within=30)
    [given] = await hooks.wait_accepted(sid, "session.handback", 1, within=30)
    messages = await hooks.wait_accepted(sid, "message", 1, within=30)
    await http.post(f"/chats/{sid}/end")

    assert [e.data for e in named(streamed, "session.takeover")] == [{"operator": ANA}]
    [human] = [e for e in named(streamed, "message") if e.data["seq"] == written["seq"]]
    assert human.data["message"]["author"]["name"] == "Ana"
    assert taken.body["data"] == {"operator": ANA}
    assert given.body["data"] == {"reason": "operator", "operator": ANA}
    assert [m.body["data"]["content"] for m in messages] == ["a human writes"]


async def test_an_unanswered_help_request_sends_the_holding_message_and_its_event(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    receiver: tuple[WebhookReceiver, str],
) -> None:
    hooks, url = receiver
    holding = "All our people are busy; one will write to you soon."
    agent_id = await make_agent(
        model="tool-requestHuman",
        tools=[REQUEST_HUMAN],
        human_handoff={"wait_seconds": 1, "holding_message": holding},
        webhook={"url": url, "secret": WEBHOOK_SECRET, "events": ["session.help_unanswered"]},
    )
    session = await open_chat(http, agent_id)
    sid = session["id"]
    await say(http, sid, json.dumps({"reason": "angry customer"}))
    [event] = await hooks.wait_accepted(sid, "session.help_unanswered", 1, within=30)
    messages = await transcript_until(http, sid, 4)
    await http.post(f"/chats/{sid}/end")

    assert event.body["data"] == {"reason": "angry customer"}
    assert messages[-1]["content"] == holding
    assert [m["content"] for m in messages].count(holding) == 1


async def test_handoff_durations_below_the_minimum_ttl_are_refused(
    make_settings: Any, serve_api: Any, api_key: str
) -> None:
    agent = {
        "name": "handoff",
        "system_prompt": "You help.",
        "model": {"provider": "openai", "name": "echo"},
        "human_handoff": {"operator_idle_seconds": 30},
    }
    async with (
        serve_api(make_settings(PARLEY_MIN_TTL_SECONDS=60)) as url,
        api_client(url, api_key) as client,
    ):
        refused = await client.post("/agents", json=agent)

    error = assert_error(refused, 422, "invalid_input")
    assert "human_handoff.operator_idle_seconds must be at least 60" in error["message"]


async def test_operators_and_notes_that_cannot_be_stored_are_422(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    session = await open_chat(http, await make_agent())
    sid = session["id"]

    nul = await http.post(
        f"/chats/{sid}/takeover", json={"operator": {"id": "a\u0000", "name": "A"}}
    )
    blank = await http.post(f"/chats/{sid}/takeover", json={"operator": {"id": "a", "name": " "}})
    note = await http.post(
        f"/chats/{sid}/approvals/call_1", json={"approved": False, "note": "\u0000"}
    )
    await http.post(f"/chats/{sid}/end")

    assert "NUL" in assert_error(nul, 422, "invalid_input")["message"]
    assert "blank" in assert_error(blank, 422, "invalid_input")["message"]
    assert_error(note, 422, "invalid_input")
