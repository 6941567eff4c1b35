"""Texts in: Twilio's signed webhook opens or joins the pair's session, keywords, media."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.config import Settings
from src.db.tables import SmsOptOut
from tests.conftest import AgentFactory
from tests.fakes.twilio_server import FakeTwilio
from tests.sessions import wait_until_final
from tests.sms import (
    AUTH_TOKEN,
    add_number,
    endpoint,
    message_sid,
    new_number,
    pair_sessions,
    text_in,
    transcript_when,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


NumberFor = Callable[..., Awaitable[str]]


@pytest.fixture
def number_for(http: httpx.AsyncClient, fake_twilio: tuple[FakeTwilio, str]) -> NumberFor:
    """Registers a number for an agent (on an account the fake Twilio knows): its E.164."""

    async def register(agent_id: str, **fields: Any) -> str:
        return str((await add_number(http, fake_twilio[0], agent_id, **fields))["number"])

    return register


@pytest.fixture
async def twilio(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client posting where Twilio posts: no Parley key."""
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:
        yield client


async def test_a_text_opens_a_session_and_the_agent_answers_it(
    number_for: NumberFor,
    http: httpx.AsyncClient,
    twilio: httpx.AsyncClient,
    settings: Settings,
    make_agent: AgentFactory,
) -> None:
    agent_id = await make_agent()
    number = await number_for(agent_id)
    sender = new_number()

    answer = await text_in(twilio, settings, sender, number, "hello over sms")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/xml")
    assert answer.text == EMPTY_TWIML

    [session] = await pair_sessions(http, agent_id)
    messages = await transcript_when(http, session["id"], 2)
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "hello over sms"),
        ("assistant", "echo: hello over sms"),
    ]
    view = (await http.get(f"/chats/{session['id']}")).json()
    assert view["channel"] == "twilio_sms"

    await text_in(twilio, settings, sender, number, "second text")
    assert [s["id"] for s in await pair_sessions(http, agent_id)] == [session["id"]]
    messages = await transcript_when(http, session["id"], 4)
    assert messages[3]["content"] == "echo: second text"


async def test_a_missing_or_wrong_signature_is_refused_and_nothing_is_recorded(
    number_for: NumberFor,
    http: httpx.AsyncClient,
    twilio: httpx.AsyncClient,
    settings: Settings,
    make_agent: AgentFactory,
) -> None:
    agent_id = await make_agent()
    number = await number_for(agent_id)
    sender = new_number()

    wrong_token = await text_in(twilio, settings, sender, number, "hi", token="not-the-token")
    unsigned = await twilio.post(
        "/channels/twilio/sms",
        data={"MessageSid": message_sid(), "From": sender, "To": number, "Body": "hi"},
    )
    forged = await text_in(twilio, settings, sender, number, "hi", signature="c2lnbmF0dXJl")

    for refused in (wrong_token, unsigned, forged):
        assert refused.status_code == 403, refused.text
        assert "X-Twilio-Signature" in refused.json()["error"]["message"]
    assert await pair_sessions(http, agent_id) == []


async def test_the_signature_covers_the_public_url(
    number_for: NumberFor,
    http: httpx.AsyncClient,
    twilio: httpx.AsyncClient,
    settings: Settings,
    make_agent: AgentFactory,
) -> None:
    agent_id = await make_agent()
    number = await number_for(agent_id)
    # Signed over another URL than PARLEY_PUBLIC_URL: what a proxy misconfiguration looks like.
    elsewhere = settings.model_copy(update={"public_url_setting": "https://elsewhere.example"})
    refused = await text_in(twilio, elsewhere, new_number(), number, "hi")
    assert refused.status_code == 403
    assert settings.public_url in refused.json()["error"]["message"]


async def test_an_unknown_number_is_not_found(
    twilio: httpx.AsyncClient, settings: Settings
) -> None:
    answer = await text_in(twilio, settings, new_number(), new_number(), "hi")
    assert answer.status_code == 404
    assert "not registered" in answer.json()["error"]["message"]


async def test_a_form_without_a_message_sid_or_not_a_form_is_refused(
    number_for: NumberFor,
    http: httpx.AsyncClient,
    twilio: httpx.AsyncClient,
    settings: Settings,
    make_agent: AgentFactory,
) -> None:
    agent_id = await make_agent()
    number = await number_for(agent_id)
    json_body = await twilio.post("/channels/twilio/sms", json={"To": number})
    assert json_body.status_code == 422
    assert "x-www-form-urlencoded" in json_body.json()["error"]["message"]
    no_sid = await text_in(twilio, settings, new_number(), number, "hi", MessageSid="")
    assert no_sid.status_code == 422
    assert "MessageSid" in no_sid.json()["error"]["message"]


async def test_a_redelivered_message_sid_adds_nothing(
    number_for: NumberFor,
    http: httpx.AsyncClient,
    twilio: httpx.AsyncClient,
    settings: Settings,
    make_agent: AgentFactory,
) -> None:
    agent_id = await make_agent()
    number = await number_for(agent_id)
    sender, sid = new_number(), message_sid()

    for _ in range(3):
        answer = await text_in(twilio, settings, sender, number, "only once", MessageSid=sid)
        assert answer.status_code == 200
    [session] = await pair_sessions(http, agent_id)
    await transcript_when(http, session["id"], 2)
    # Once answered, a late redelivery is found in the database.
    await text_in(twilio, settings, sender, number, "only once", MessageSid=sid)
    await text_in(twilio, settings, sender, number, "next one")
    messages = await transcript_when(http, session["id"], 4)
    assert [m["content"] for m in messages if m["role"] == "user"] == ["only once", "next one"]


async def test_media_are_kept_on_the_message_as_urls(
    number_for: NumberFor,
    http: httpx.AsyncClient,
    twilio: httpx.AsyncClient,
    settings: Settings,
    make_agent: AgentFactory,
) -> None:
    agent_id = await make_agent()
    number = await number_for(agent_id)
    photo = "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1"
    answer = await text_in(
        twilio,
        settings,
        new_number(),
        number,
        "",
        NumMedia="1",
        MediaUrl0=photo,
        MediaContentType0="image/jpeg",
    )
    assert answer.status_code == 200
    [session] = await pair_sessions(http, agent_id)
    messages = await transcript_when(http, session["id"], 2)
    assert messages[0]["attachments"] == [{"url": photo, "content_type": "image/jpeg"}]
    assert photo in messages[1]["content"]  # the model was told of it


async def test_help_answers_with_the_numbers_help_text_without_the_model(
    number_for: NumberFor,
    http: httpx.AsyncClient,
    twilio: httpx.AsyncClient,
    settings: Settings,
    make_agent: AgentFactory,
) -> None:
    agent_id = await make_agent()
    number = await number_for(agent_id, help_text="Acme & Co: call 555-0100")
    answer = await text_in(twilio, settings, new_number(), number, " help ")
    assert answer.status_code == 200
    assert answer.text == (
        '<?xml version="1.0" encoding="UTF-8"?>'
        "<Response><Message>Acme &amp; Co: call 555-0100</Message></Response>"
    )
    assert await pair_sessions(http, agent_id) == []


async def test_stop_ends_the_session_as_an_opt_out_and_start_opts_back_in(
    number_for: NumberFor,
    http: httpx.AsyncClient,
    twilio: httpx.AsyncClient,
    settings: Settings,
    make_agent: AgentFactory,
    db: async_sessionmaker[AsyncSession],
) -> None:
    agent_id = await make_agent()
    number = await number_for(agent_id)
    sender = new_number()
    await text_in(twilio, settings, sender, number, "hello")
    [session] = await pair_sessions(http, agent_id)
    await transcript_when(http, session["id"], 2)

    stop = await text_in(twilio, settings, sender, number, "Stop")
    assert stop.status_code == 200 and stop.text == EMPTY_TWIML
    final = await wait_until_final(http, session["id"])
    assert final["final_reason"] == "opt_out"
    async with db() as s:
        row = await s.get(SmsOptOut, (number, sender))
    assert row is not None and row.opted_out

    # Opted out: a text is not taken, and the API may not text the person first.
    await text_in(twilio, settings, sender, number, "are you there?")
    assert len(await pair_sessions(http, agent_id)) == 1
    first = await http.post(
        "/chats",
        json={
            "agent_id": agent_id,
            "channel": "twilio_sms",
            "external_id": endpoint(sender, number),
        },
    )
    assert first.status_code == 409
    assert "START" in first.json()["error"]["message"]

    await text_in(twilio, settings, sender, number, "START")
    async with db() as s:
        row = await s.get(SmsOptOut, (number, sender), populate_existing=True)
    assert row is not None and not row.opted_out
    await text_in(twilio, settings, sender, number, "back again")
    sessions = await pair_sessions(http, agent_id)
    assert len(sessions) == 2 and sessions[0]["id"] != session["id"]


async def test_opening_an_sms_session_checks_its_endpoint(
    number_for: NumberFor,
    http: httpx.AsyncClient,
    other_http: httpx.AsyncClient,
    make_agent: AgentFactory,
) -> None:
    agent_id = await make_agent()
    number = await number_for(agent_id)
    other_agent = await make_agent(client=other_http)

    async def open_with(
        client: httpx.AsyncClient, agent: str, external_id: object
    ) -> httpx.Response:
        return await client.post(
            "/chats", json={"agent_id": agent, "channel": "twilio_sms", "external_id": external_id}
        )

    no_provider = await open_with(http, agent_id, {"from": new_number(), "to": number})
    assert no_provider.status_code == 422
    not_e164 = await open_with(http, agent_id, endpoint("5550001111", number))
    assert not_e164.status_code == 422 and "E.164" in not_e164.json()["error"]["message"]
    unknown = await open_with(http, agent_id, endpoint(new_number(), new_number()))
    assert unknown.status_code == 404
    # Another account cannot text from this account's number.
    foreign = await open_with(other_http, other_agent, endpoint(new_number(), number))
    assert foreign.status_code == 404
    assert AUTH_TOKEN not in foreign.text
