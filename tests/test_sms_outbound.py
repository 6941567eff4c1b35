"""Texts out: each assistant message of an SMS session goes to the person through Twilio's
Messages API (the fake Twilio on loopback), once per part, and its delivery shows in the
transcript."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from src.config import Settings
from tests.conftest import AgentFactory
from tests.fakes.twilio_server import FakeTwilio
from tests.sessions import wait_until_final
from tests.sms import add_number, endpoint, new_number, pair_sessions, text_in
from tests.test_squads import make_squad

pytestmark = pytest.mark.asyncio(loop_scope="session")

NumberFor = Callable[..., Awaitable[str]]


@pytest.fixture
def fake(fake_twilio: tuple[FakeTwilio, str]) -> FakeTwilio:
    return fake_twilio[0]


@pytest.fixture
def number_for(http: httpx.AsyncClient, fake: FakeTwilio) -> NumberFor:
    async def register(agent_id: str, **fields: Any) -> str:
        return str((await add_number(http, fake, agent_id, **fields))["number"])

    return register


@pytest.fixture
async def twilio(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:
        yield client


async def delivered(
    http: httpx.AsyncClient,
    session_id: str,
    seq: int,
    status: str | None = None,
    parts_sent: int = 1,
) -> list[dict[str, Any]]:
    """Message `seq`'s delivery once it has `parts_sent` parts (with `status` on every part,
    if given): the parts of a long text are recorded one by one."""
    for _ in range(300):
        messages = (await http.get(f"/chats/{session_id}")).json()["messages"]
        if len(messages) > seq and len(messages[seq]["delivery"] or []) >= parts_sent:
            parts: list[dict[str, Any]] = messages[seq]["delivery"]
            if status is None or all(p["status"] == status for p in parts):
                return parts
        await asyncio.sleep(0.1)
    raise AssertionError(f"message {seq} of {session_id} never had delivery {status}")


async def test_a_conversation_over_sms_end_to_end(
    http: httpx.AsyncClient,
    twilio: httpx.AsyncClient,
    settings: Settings,
    make_agent: AgentFactory,
    number_for: NumberFor,
    fake: FakeTwilio,
) -> None:
    agent_id = await make_agent()
    number, person = await number_for(agent_id), new_number()

    await text_in(twilio, settings, person, number, "what time do you open?")
    await fake.wait_sent(1, to=person)
    [text] = fake.sent(person)
    assert (text.from_, text.body) == (number, "echo: what time do you open?")
    assert text.status_callback == settings.public_url + "/channels/twilio/status"

    [session] = await pair_sessions(http, agent_id)
    [part] = await delivered(http, session["id"], 1)
    assert part == {
        "part": 0,
        "status": "queued",
        "provider_message_id": text.sid,
        "error_code": None,
        "error_message": None,
    }
    messages = (await http.get(f"/chats/{session['id']}")).json()["messages"]
    assert messages[0]["delivery"] is None  # the person's own text

    await text_in(twilio, settings, person, number, "thanks, bye")
    await fake.wait_sent(2, to=person)
    assert [t.body for t in fake.sent(person)] == [
        "echo: what time do you open?",
        "echo: thanks, bye",
    ]
    assert len(fake.sends(person)) == 2  # one request per text, no retry


async def test_a_long_reply_goes_as_several_texts_in_order(
    http: httpx.AsyncClient,
    twilio: httpx.AsyncClient,
    settings: Settings,
    make_agent: AgentFactory,
    number_for: NumberFor,
    fake: FakeTwilio,
) -> None:
    agent_id = await make_agent()
    number, person = await number_for(agent_id), new_number()
    question = " ".join(f"word{i}" for i in range(500))  # ~4,400 characters

    await text_in(twilio, settings, person, number, question)
    [session] = await pair_sessions(http, agent_id)
    parts = await delivered(http, session["id"], 1, "queued", parts_sent=3)

    texts = fake.sent(person)
    assert len(texts) == len(parts) == 3
    assert all(len(t.body) <= 1600 for t in texts)
    assert "".join(t.body for t in texts) == "echo: " + question
    assert [p["provider_message_id"] for p in parts] == [t.sid for t in texts]


async def test_twilio_429_is_retried_until_it_is_sent_once(
    http: httpx.AsyncClient,
    twilio: httpx.AsyncClient,
    settings: Settings,
    make_agent: AgentFactory,
    number_for: NumberFor,
    fake: FakeTwilio,
) -> None:
    agent_id = await make_agent()
    number, person = await number_for(agent_id), new_number()
    fake.fail_next(1, 429, to=person)

    await text_in(twilio, settings, person, number, "busy line")
    [session] = await pair_sessions(http, agent_id)
    [part] = await delivered(http, session["id"], 1, "queued")

    assert [t.body for t in fake.sent(person)] == ["echo: busy line"]
    assert len(fake.sends(person)) == 2  # the 429, then the send
    assert part["provider_message_id"] == fake.sent(person)[0].sid


async def test_a_recipient_who_opted_out_at_twilio_is_recorded_not_retried(
    http: httpx.AsyncClient,
    twilio: httpx.AsyncClient,
    settings: Settings,
    make_agent: AgentFactory,
    number_for: NumberFor,
    fake: FakeTwilio,
) -> None:
    agent_id = await make_agent()
    number, person = await number_for(agent_id), new_number()
    fake.refuse(person, code=21610)

    await text_in(twilio, settings, person, number, "hello?")
    [session] = await pair_sessions(http, agent_id)
    [part] = await delivered(http, session["id"], 1, "not_sent")

    assert part["error_code"] == "21610"
    assert part["provider_message_id"] is None
    assert fake.sent(person) == []
    assert len(fake.sends(person)) == 1


async def test_a_session_opened_by_the_api_texts_its_first_message(
    http: httpx.AsyncClient,
    twilio: httpx.AsyncClient,
    settings: Settings,
    make_agent: AgentFactory,
    number_for: NumberFor,
    fake: FakeTwilio,
) -> None:
    agent_id = await make_agent(first_message="Reminder: your appointment is tomorrow at 10.")
    number, person = await number_for(agent_id), new_number()

    opened = await http.post(
        "/chats",
        json={
            "agent_id": agent_id,
            "channel": "twilio_sms",
            "external_id": endpoint(person, number),
        },
    )
    assert opened.status_code == 201, opened.text
    await fake.wait_sent(1, to=person)
    assert fake.sent(person)[0].body == "Reminder: your appointment is tomorrow at 10."
    await delivered(http, opened.json()["id"], 0, "queued")

    # The person's answer joins that session.
    await text_in(twilio, settings, person, number, "see you then")
    await fake.wait_sent(2, to=person)
    assert [s["id"] for s in await pair_sessions(http, agent_id)] == [opened.json()["id"]]
    assert fake.sent(person)[1].body == "echo: see you then"


async def test_a_reply_queued_when_stop_comes_in_is_dropped(
    http: httpx.AsyncClient,
    twilio: httpx.AsyncClient,
    settings: Settings,
    make_agent: AgentFactory,
    number_for: NumberFor,
    fake: FakeTwilio,
) -> None:
    agent_id = await make_agent(model="slow-2000")
    number, person = await number_for(agent_id), new_number()

    await text_in(twilio, settings, person, number, "tell me more")
    [session] = await pair_sessions(http, agent_id)
    stop = await text_in(twilio, settings, person, number, "STOP")  # while the model thinks
    assert stop.status_code == 200

    final = await wait_until_final(http, session["id"])
    assert final["final_reason"] == "opt_out"
    assert final["messages"][1]["content"] == "echo: tell me more"
    # The session reads final as its finish begins; the dropped text is recorded a moment
    # later, before the final record is written.
    assert await delivered(http, session["id"], 1) == [
        {
            "part": 0,
            "status": "not_sent",
            "provider_message_id": None,
            "error_code": None,
            "error_message": "the recipient opted out",
        }
    ]
    assert fake.sends(person) == []


async def test_an_operator_who_took_over_answers_by_text(
    http: httpx.AsyncClient,
    twilio: httpx.AsyncClient,
    settings: Settings,
    make_agent: AgentFactory,
    number_for: NumberFor,
    fake: FakeTwilio,
) -> None:
    agent_id = await make_agent()
    number, person = await number_for(agent_id), new_number()
    await text_in(twilio, settings, person, number, "hello")
    await fake.wait_sent(1, to=person)
    [session] = await pair_sessions(http, agent_id)
    sid = session["id"]

    taken = await http.post(
        f"/chats/{sid}/takeover", json={"operator": {"id": "o1", "name": "Ana"}}
    )
    await text_in(twilio, settings, person, number, "I need a person")
    for _ in range(300):  # the text is recorded, not answered by the agent
        if len((await http.get(f"/chats/{sid}")).json()["messages"]) == 3:
            break
        await asyncio.sleep(0.1)
    written = await http.post(f"/chats/{sid}/operator-messages", json={"content": "Ana here."})
    await fake.wait_sent(2, to=person)
    [part] = await delivered(http, sid, written.json()["seq"])
    texts = [text.body for text in fake.sent(person)]
    await http.post(f"/chats/{sid}/end")

    assert taken.status_code == 200 and written.status_code == 201, written.text
    assert texts == ["echo: hello", "Ana here."]
    assert part["status"] == "queued"


async def test_a_squads_number_answers_texts_and_hands_the_person_over(
    http: httpx.AsyncClient,
    twilio: httpx.AsyncClient,
    settings: Settings,
    make_agent: AgentFactory,
    fake: FakeTwilio,
) -> None:
    squad_id, triage, billing = await make_squad(http, make_agent)
    added = await add_number(http, fake, "", squad_id=squad_id)
    number, person = str(added["number"]), new_number()

    await text_in(twilio, settings, person, number, "hi")
    await fake.wait_sent(1, to=person)
    [session] = await pair_sessions(http, triage)
    await text_in(twilio, settings, person, number, json.dumps({"reason": "sms refund"}))
    await fake.wait_sent(2, to=person)
    view = (await http.get(f"/chats/{session['id']}")).json()
    await http.post(f"/chats/{session['id']}/end")

    assert added["squad_id"] == squad_id and added["agent_id"] is None
    assert [text.body for text in fake.sent(person)] == [
        "echo: hi",
        "Goodbye from the fake model.",  # billing's answer, after the handoff
    ]
    assert view["agent_id"] == billing and view["squad_id"] == squad_id
