"""Delivery status callbacks: Twilio's signed reports of how each text fared, recorded on the
message in order (a late status never moves a text back), shown in the transcript as
`delivery`, audited and raised as the agent's `message.delivery` webhook event, once each.

The texts are an outbound-first session's `first_message` (seq 0), sent by the send activity
through the fake Twilio, which posts the callbacks signed as Twilio does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from src.config import Settings
from src.db.tables import SmsPart, SmsStatusEvent
from src.sms.signatures import SIGNATURE_HEADER, signature_of
from tests.conftest import WEBHOOK_SECRET, AgentFactory
from tests.fakes.twilio_server import FakeTwilio, TwilioAccount
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.sessions import wait_until_final
from tests.sms import add_number, endpoint, message_sid, new_number

pytestmark = pytest.mark.asyncio(loop_scope="session")

STATUS_PATH = "/channels/twilio/status"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
REMINDER = "Reminder: your appointment is tomorrow at 9:00. Reply to reschedule."
# Two texts: over the 1,600 characters of one.
LONG_REMINDER = " ".join(f"line{i:04d}" for i in range(200))


@pytest.fixture
async def twilio(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client posting where Twilio posts: no Parley key."""
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:
        yield client


@pytest.fixture
def fake(fake_twilio: tuple[FakeTwilio, str]) -> FakeTwilio:
    return fake_twilio[0]


@dataclass
class SentTexts:
    """An SMS session whose first message went out as texts."""

    session_id: str
    number: str  # ours: the texts' From
    person: str  # theirs: the texts' To
    sids: list[str]  # Twilio's MessageSid of each part, in order
    account: TwilioAccount


async def sms_session(
    http: httpx.AsyncClient, fake: FakeTwilio, agent_id: str, person: str | None = None
) -> tuple[str, str, str, TwilioAccount]:
    """Opens an outbound-first SMS session on a new number, to `person` (a new number if
    None): (session id, number, person, the number's Twilio account)."""
    registered = await add_number(http, fake, agent_id)
    number = registered["number"]
    account = fake.accounts[registered["twilio"]["account_sid"]]
    person = person or new_number()
    opened = await http.post(
        "/chats",
        json={
            "agent_id": agent_id,
            "channel": "twilio_sms",
            "external_id": endpoint(person, number),
        },
    )
    assert opened.status_code == 201, opened.text
    return opened.json()["id"], number, person, account


async def texted_first(
    http: httpx.AsyncClient, fake: FakeTwilio, agent_id: str, parts: int = 1
) -> SentTexts:
    """An SMS session whose first message (of `parts` texts) Twilio has accepted."""
    session_id, number, person, account = await sms_session(http, fake, agent_id)
    shown = await delivery_when(http, session_id, lambda d: len(d) == parts and all(
        p["provider_message_id"] for p in d))  # fmt: skip
    return SentTexts(session_id, number, person, [p["provider_message_id"] for p in shown], account)


async def delivery_when(
    http: httpx.AsyncClient, session_id: str, condition: Any, attempts: int = 300
) -> list[dict[str, Any]]:
    """The first message's `delivery` once `condition` holds for it (bounded polling)."""
    for _ in range(attempts):
        shown = await delivery(http, session_id)
        if shown is not None and condition(shown):
            return shown
        await asyncio.sleep(0.05)
    raise AssertionError(f"session {session_id}: delivery {shown} never as expected")


async def status_in(
    twilio: httpx.AsyncClient,
    settings: Settings,
    texts: SentTexts,
    sid: str,
    status: str,
    signature: str | None = None,
    **extra: str,
) -> httpx.Response:
    """POST /channels/twilio/status as Twilio would, signed unless `signature` is given."""
    params = {
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": status,
        "SmsStatus": status,
        "AccountSid": texts.account.sid,
        "From": texts.number,
        "To": texts.person,
        "ApiVersion": "2010-04-01",
        **extra,
    }
    url = settings.public_url + STATUS_PATH
    headers = {SIGNATURE_HEADER: signature_of(texts.account.auth_token, url, params)}
    if signature is not None:
        headers[SIGNATURE_HEADER] = signature
    return await twilio.post(STATUS_PATH, data=params, headers=headers)


async def callback(
    fake: FakeTwilio,
    api_url: str,
    sid: str,
    status: str,
    error_code: int | None = None,
    auth_token: str | None = None,
) -> httpx.Response:
    """The fake Twilio's callback, signed over PARLEY_PUBLIC_URL, posted to the API's
    address (as through a proxy)."""
    return await fake.send_status(
        sid, status, error_code, post_to=api_url + STATUS_PATH, auth_token=auth_token
    )  # fmt: skip


async def delivery(http: httpx.AsyncClient, session_id: str) -> list[dict[str, Any]] | None:
    """The first message's `delivery`, as GET /chats/{id} shows it."""
    view = await http.get(f"/chats/{session_id}")
    assert view.status_code == 200, view.text
    found: list[dict[str, Any]] | None = view.json()["messages"][0]["delivery"]
    return found


async def delivery_events(http: httpx.AsyncClient, session_id: str) -> list[dict[str, Any]]:
    events = (await http.get(f"/chats/{session_id}/events", params={"limit": 100})).json()
    return [event["data"] for event in events["items"] if event["kind"] == "message.delivery"]


async def test_a_status_callback_without_twilios_signature_is_refused_and_not_recorded(
    http: httpx.AsyncClient,
    twilio: httpx.AsyncClient,
    db: async_sessionmaker[AsyncSession],
    settings: Settings,
    api_url: str,
    fake: FakeTwilio,
    make_agent: AgentFactory,
) -> None:
    texts = await texted_first(http, fake, await make_agent(first_message=REMINDER))
    [sid] = texts.sids

    unsigned = await status_in(twilio, settings, texts, sid, "delivered", signature="")
    forged = await callback(fake, api_url, sid, "delivered", auth_token="not-the-token")

    for answer in (unsigned, forged):
        assert answer.status_code == 403, answer.text
        assert SIGNATURE_HEADER in answer.json()["error"]["message"]
    async with db() as s:
        assert await s.get(SmsStatusEvent, (sid, "delivered")) is None
    assert await delivery_events(http, texts.session_id) == []
    [part] = await delivery(http, texts.session_id) or []
    assert part["status"] == "queued"


async def test_a_callback_for_a_text_parley_did_not_send_is_404(
    http: httpx.AsyncClient,
    twilio: httpx.AsyncClient,
    settings: Settings,
    fake: FakeTwilio,
    make_agent: AgentFactory,
) -> None:
    texts = await texted_first(http, fake, await make_agent(first_message=REMINDER))
    unknown = message_sid()

    signed = await status_in(twilio, settings, texts, unknown, "delivered")
    forged = await status_in(twilio, settings, texts, unknown, "delivered", signature="x")
    stranger = SentTexts(texts.session_id, new_number(), texts.person, [], texts.account)
    from_nowhere = await status_in(twilio, settings, stranger, unknown, "delivered")

    assert signed.status_code == 404, signed.text
    assert unknown in signed.json()["error"]["message"]
    # Checked with the From number's token all the same: a forgery learns nothing.
    assert forged.status_code == 403, forged.text
    assert from_nowhere.status_code == 404, from_nowhere.text


async def test_a_status_twilio_does_not_have_is_refused_with_the_known_ones(
    http: httpx.AsyncClient,
    twilio: httpx.AsyncClient,
    settings: Settings,
    fake: FakeTwilio,
    make_agent: AgentFactory,
) -> None:
    texts = await texted_first(http, fake, await make_agent(first_message=REMINDER))

    answer = await status_in(twilio, settings, texts, texts.sids[0], "teleported")

    assert answer.status_code == 422, answer.text
    assert "delivered" in answer.json()["error"]["message"]


async def test_statuses_out_of_order_never_move_a_text_back(
    http: httpx.AsyncClient,
    api_url: str,
    fake: FakeTwilio,
    make_agent: AgentFactory,
) -> None:
    texts = await texted_first(http, fake, await make_agent(first_message=REMINDER))
    [sid] = texts.sids

    for status in ("delivered", "sent", "queued"):
        answer = await callback(fake, api_url, sid, status)
        assert answer.status_code == 200, answer.text
        assert answer.text == EMPTY_TWIML

    [part] = await delivery(http, texts.session_id) or []
    assert (part["status"], part["provider_message_id"]) == ("delivered", sid)
    # Every status Twilio reported is in the audit log; the late ones changed nothing.
    assert [(e["status"], e["applied"]) for e in await delivery_events(http, texts.session_id)] == [
        ("delivered", True),
        ("sent", False),
        ("queued", False),
    ]


async def test_an_undelivered_text_shows_its_error_code_in_the_transcript(
    http: httpx.AsyncClient,
    api_url: str,
    fake: FakeTwilio,
    make_agent: AgentFactory,
) -> None:
    agent_id = await make_agent(first_message=LONG_REMINDER)
    texts = await texted_first(http, fake, agent_id, parts=2)
    first, second = texts.sids

    await callback(fake, api_url, first, "sent")
    await callback(fake, api_url, first, "delivered")
    await callback(fake, api_url, second, "sent")
    await callback(fake, api_url, second, "undelivered", error_code=30003)
    late = await callback(fake, api_url, second, "delivered")

    assert late.status_code == 200, late.text
    assert [
        (p["part"], p["status"], p["error_code"])
        for p in await delivery(http, texts.session_id) or []
    ] == [(0, "delivered", None), (1, "undelivered", "30003")]
    [undelivered] = [
        e for e in await delivery_events(http, texts.session_id) if e["status"] == "undelivered"
    ]
    assert undelivered == {
        "seq": 0,
        "part": 1,
        "status": "undelivered",
        "provider_message_id": second,
        "error_code": "30003",
        "applied": True,
    }


async def test_the_same_callback_twice_is_one_audit_event_and_one_webhook_event(
    http: httpx.AsyncClient,
    api_url: str,
    fake: FakeTwilio,
    make_agent: AgentFactory,
    receiver: tuple[WebhookReceiver, str],
    temporal_client: Client,
) -> None:
    hooks, hooks_url = receiver
    webhook = {"url": hooks_url, "secret": WEBHOOK_SECRET, "events": ["message.delivery"]}
    agent_id = await make_agent(first_message=REMINDER, webhook=webhook)
    texts = await texted_first(http, fake, agent_id)
    [sid] = texts.sids
    workflow = temporal_client.get_workflow_handle(
        f"webhook-{texts.session_id}:delivery:{sid}:delivered"
    )

    first = await callback(fake, api_url, sid, "delivered")
    [event] = await hooks.wait_accepted(texts.session_id, "message.delivery")
    assert await workflow.result() is True  # delivered, and its workflow closed
    run = (await workflow.describe()).run_id
    again = await callback(fake, api_url, sid, "delivered")
    await callback(fake, api_url, sid, "read")
    await hooks.wait_accepted(texts.session_id, "message.delivery", count=2)

    assert (first.status_code, again.status_code) == (200, 200)
    assert (await workflow.describe()).run_id == run  # not started again
    assert [
        e.body["data"]["status"] for e in hooks.attempts(texts.session_id, "message.delivery")
    ] == [
        "delivered",
        "read",
    ]
    assert event.body["data"] == {
        "seq": 0,
        "part": 0,
        "status": "delivered",
        "provider_message_id": sid,
        "error_code": None,
        "applied": True,
    }
    assert event.idempotency_key == f"{texts.session_id}:delivery:{sid}:delivered"
    assert [e["status"] for e in await delivery_events(http, texts.session_id)] == [
        "delivered",
        "read",
    ]


async def test_an_agent_not_subscribed_gets_no_delivery_webhook(
    http: httpx.AsyncClient,
    api_url: str,
    fake: FakeTwilio,
    make_agent: AgentFactory,
    receiver: tuple[WebhookReceiver, str],
    temporal_client: Client,
) -> None:
    hooks, hooks_url = receiver
    webhook = {"url": hooks_url, "secret": WEBHOOK_SECRET, "events": ["session.finished"]}
    agent_id = await make_agent(first_message=REMINDER, webhook=webhook)
    texts = await texted_first(http, fake, agent_id)
    [sid] = texts.sids

    answer = await callback(fake, api_url, sid, "delivered")

    assert answer.status_code == 200, answer.text
    assert len(await delivery_events(http, texts.session_id)) == 1
    workflows = [
        w
        async for w in temporal_client.list_workflows(
            f"WorkflowId = 'webhook-{texts.session_id}:delivery:{sid}:delivered'"
        )
    ]
    assert workflows == []
    assert hooks.attempts(texts.session_id, "message.delivery") == []


async def test_the_transcript_shows_each_texts_delivery_in_order_of_parts(
    http: httpx.AsyncClient, fake: FakeTwilio, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent(first_message=LONG_REMINDER)
    texts = await texted_first(http, fake, agent_id, parts=2)
    web = await http.post("/chats", json={"agent_id": agent_id, "channel": "web"})

    shown = await delivery(http, texts.session_id)

    assert shown == [
        {"part": 0, "status": "queued", "provider_message_id": texts.sids[0],
         "error_code": None, "error_message": None},
        {"part": 1, "status": "queued", "provider_message_id": texts.sids[1],
         "error_code": None, "error_message": None},
    ]  # fmt: skip
    assert web.json()["messages"][0]["delivery"] is None


async def test_a_text_twilio_refused_shows_as_not_sent_with_its_error(
    http: httpx.AsyncClient, fake: FakeTwilio, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent(first_message=REMINDER)
    person = new_number()
    fake.refuse(person, code=21610)
    session_id, *_ = await sms_session(http, fake, agent_id, person)

    [part] = await delivery_when(http, session_id, lambda d: len(d) == 1)

    assert (part["status"], part["provider_message_id"], part["error_code"]) == (
        "not_sent",
        None,
        "21610",
    )
    assert part["error_message"]


async def test_a_callback_before_the_send_is_recorded_still_counts(
    http: httpx.AsyncClient,
    twilio: httpx.AsyncClient,
    settings: Settings,
    fake: FakeTwilio,
    make_agent: AgentFactory,
) -> None:
    """Twilio's callback can beat the send activity's record of Twilio's answer."""
    agent_id = await make_agent(first_message=REMINDER)
    fake.hang_next(to=(person := new_number()))
    session_id, number, _, account = await sms_session(http, fake, agent_id, person)
    held = await fake.wait_hanging()
    assert held.to == person
    [sending] = await delivery_when(http, session_id, lambda d: len(d) == 1)

    # Posted by hand: the fake's own callback would change the status its held answer gives.
    texts = SentTexts(session_id, number, person, [held.sid], account)
    early = await status_in(twilio, settings, texts, held.sid, "sent")
    fake.release(held.sid)
    [part] = await delivery_when(http, session_id, lambda d: d[0]["provider_message_id"])

    assert sending["status"] == "sending"
    assert early.status_code == 404, early.text
    assert (part["status"], part["provider_message_id"]) == ("sent", held.sid)


async def test_a_finished_sms_conversation_keeps_its_delivery_statuses(
    http: httpx.AsyncClient,
    db: async_sessionmaker[AsyncSession],
    api_url: str,
    fake: FakeTwilio,
    make_agent: AgentFactory,
) -> None:
    """Read from the database once final: a callback often comes after the session ended."""
    texts = await texted_first(http, fake, await make_agent(first_message=REMINDER))
    [sid] = texts.sids
    ended = await http.post(f"/chats/{texts.session_id}/end", json={})
    assert ended.status_code == 200, ended.text
    await wait_until_final(http, texts.session_id)

    answer = await callback(fake, api_url, sid, "failed", error_code=30006)

    assert answer.status_code == 200, answer.text
    view = (await http.get(f"/chats/{texts.session_id}")).json()
    assert view["is_final"] is True
    assert [(p["status"], p["error_code"]) for p in view["messages"][0]["delivery"]] == [
        ("failed", "30006")
    ]
    async with db() as s:
        row = await s.scalar(select(SmsPart).where(SmsPart.provider_message_id == sid))
    assert row is not None
    assert (row.state, row.status, row.error_code) == ("accepted", "failed", "30006")
