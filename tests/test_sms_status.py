"""Delivery status callbacks: Twilio's signed reports of how each text fared, recorded on the
message in order (a late status never moves a text back), shown in the transcript as
`delivery`, audited and raised as the agent's `message.delivery` webhook event, once each.

The texts are the parts of an outbound-first session's `first_message` (seq 0), written to
sms_parts as the send activity leaves them once Twilio has accepted them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from src.config import Settings
from src.db.tables import ApiKey, ChatMessage, ChatSession, PhoneNumber, SmsPart, SmsStatusEvent
from src.sealing.secret_box import SecretBox
from src.services.accounts import hash_api_key
from src.sms.signatures import SIGNATURE_HEADER, signature_of
from tests.conftest import WEBHOOK_SECRET, AgentFactory
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.sms import AUTH_TOKEN, account_sid, endpoint, message_sid, new_number

pytestmark = pytest.mark.asyncio(loop_scope="session")

STATUS_PATH = "/channels/twilio/status"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
REMINDER = "Reminder: your appointment is tomorrow at 9:00. Reply to reschedule."


@pytest.fixture
async def twilio(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client posting where Twilio posts: no Parley key."""
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:
        yield client


@dataclass
class SentTexts:
    """An SMS session whose first message went out as texts."""

    session_id: str
    number: str  # ours: the texts' From
    person: str  # theirs: the texts' To
    sids: list[str]  # Twilio's MessageSid of each part, in order


async def texted_first(
    http: httpx.AsyncClient,
    db: async_sessionmaker[AsyncSession],
    settings: Settings,
    api_key: str,
    agent_id: str,
    states: tuple[str, ...] = ("accepted",),
) -> SentTexts:
    """Opens an outbound-first SMS session on a new number and records its first message as
    sent in one text per entry of `states` (an "accepted" text has a MessageSid)."""
    number, person = new_number(), new_number()
    now = datetime.now(UTC)
    async with db.begin() as s:
        key = await s.get(ApiKey, hash_api_key(api_key))
        assert key is not None
        account_id = key.account_id
        s.add(
            PhoneNumber(
                id=str(uuid.uuid4()),
                account_id=account_id,
                number=number,
                provider="twilio",
                agent_id=agent_id,
                config={
                    "account_sid": account_sid(),
                    "auth_token": SecretBox(settings.secret_keys()).seal(AUTH_TOKEN),
                },
                created_time=now,
                updated_time=now,
            )
        )
    opened = await http.post(
        "/chats",
        json={
            "agent_id": agent_id,
            "channel": "twilio_sms",
            "external_id": endpoint(person, number),
        },
    )
    assert opened.status_code == 201, opened.text
    session_id = opened.json()["id"]
    sids = [message_sid() if state == "accepted" else "" for state in states]
    async with db.begin() as s:
        for part, (state, sid) in enumerate(zip(states, sids, strict=True)):
            s.add(
                SmsPart(
                    session_id=session_id,
                    seq=0,
                    part=part,
                    account_id=account_id,
                    sender=number,
                    recipient=person,
                    body=REMINDER,
                    state=state,
                    provider_message_id=sid or None,
                    error_message="the person opted out (STOP)" if state == "dropped" else None,
                    attempts=1,
                    created_time=now,
                    updated_time=now,
                )
            )
    return SentTexts(session_id, number, person, sids)


async def status_in(
    twilio: httpx.AsyncClient,
    settings: Settings,
    texts: SentTexts,
    sid: str,
    status: str,
    token: str = AUTH_TOKEN,
    signature: str | None = None,
    **extra: str,
) -> httpx.Response:
    """POST /channels/twilio/status as Twilio would, signed unless `signature` is given."""
    params = {
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": status,
        "SmsStatus": status,
        "AccountSid": "AC" + "0" * 32,
        "From": texts.number,
        "To": texts.person,
        "ApiVersion": "2010-04-01",
        **extra,
    }
    url = settings.public_url + STATUS_PATH
    headers = {SIGNATURE_HEADER: signature_of(token, url, params)}
    if signature is not None:
        headers[SIGNATURE_HEADER] = signature
    return await twilio.post(STATUS_PATH, data=params, headers=headers)


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
    api_key: str,
    make_agent: AgentFactory,
) -> None:
    texts = await texted_first(
        http, db, settings, api_key, await make_agent(first_message=REMINDER)
    )
    [sid] = texts.sids

    unsigned = await status_in(twilio, settings, texts, sid, "delivered", signature="")
    forged = await status_in(twilio, settings, texts, sid, "delivered", token="not-the-token")

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
    db: async_sessionmaker[AsyncSession],
    settings: Settings,
    api_key: str,
    make_agent: AgentFactory,
) -> None:
    texts = await texted_first(
        http, db, settings, api_key, await make_agent(first_message=REMINDER)
    )
    unknown = message_sid()

    signed = await status_in(twilio, settings, texts, unknown, "delivered")
    forged = await status_in(twilio, settings, texts, unknown, "delivered", token="not-the-token")
    stranger = SentTexts(texts.session_id, new_number(), texts.person, [])
    from_nowhere = await status_in(twilio, settings, stranger, unknown, "delivered")

    assert signed.status_code == 404, signed.text
    assert unknown in signed.json()["error"]["message"]
    # Checked with the From number's token all the same: a forgery learns nothing.
    assert forged.status_code == 403, forged.text
    assert from_nowhere.status_code == 404, from_nowhere.text
    async with db() as s:
        assert await s.get(SmsStatusEvent, (unknown, "delivered")) is None


async def test_a_status_twilio_does_not_have_is_refused_with_the_known_ones(
    http: httpx.AsyncClient,
    twilio: httpx.AsyncClient,
    db: async_sessionmaker[AsyncSession],
    settings: Settings,
    api_key: str,
    make_agent: AgentFactory,
) -> None:
    texts = await texted_first(
        http, db, settings, api_key, await make_agent(first_message=REMINDER)
    )

    answer = await status_in(twilio, settings, texts, texts.sids[0], "teleported")

    assert answer.status_code == 422, answer.text
    assert "delivered" in answer.json()["error"]["message"]


async def test_statuses_out_of_order_never_move_a_text_back(
    http: httpx.AsyncClient,
    twilio: httpx.AsyncClient,
    db: async_sessionmaker[AsyncSession],
    settings: Settings,
    api_key: str,
    make_agent: AgentFactory,
) -> None:
    texts = await texted_first(
        http, db, settings, api_key, await make_agent(first_message=REMINDER)
    )
    [sid] = texts.sids

    for status in ("delivered", "sent", "queued"):
        answer = await status_in(twilio, settings, texts, sid, status)
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
    twilio: httpx.AsyncClient,
    db: async_sessionmaker[AsyncSession],
    settings: Settings,
    api_key: str,
    make_agent: AgentFactory,
) -> None:
    agent_id = await make_agent(first_message=REMINDER)
    texts = await texted_first(http, db, settings, api_key, agent_id, ("accepted", "accepted"))
    first, second = texts.sids

    await status_in(twilio, settings, texts, first, "sent")
    await status_in(twilio, settings, texts, first, "delivered")
    await status_in(twilio, settings, texts, second, "sent")
    await status_in(twilio, settings, texts, second, "undelivered", ErrorCode="30003")
    late = await status_in(twilio, settings, texts, second, "delivered")

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
    twilio: httpx.AsyncClient,
    db: async_sessionmaker[AsyncSession],
    settings: Settings,
    api_key: str,
    make_agent: AgentFactory,
    receiver: tuple[WebhookReceiver, str],
    temporal_client: Client,
) -> None:
    hooks, hooks_url = receiver
    webhook = {"url": hooks_url, "secret": WEBHOOK_SECRET, "events": ["message.delivery"]}
    agent_id = await make_agent(first_message=REMINDER, webhook=webhook)
    texts = await texted_first(http, db, settings, api_key, agent_id)
    [sid] = texts.sids
    workflow = temporal_client.get_workflow_handle(
        f"webhook-{texts.session_id}:delivery:{sid}:delivered"
    )

    first = await status_in(twilio, settings, texts, sid, "delivered")
    [event] = await hooks.wait_accepted(texts.session_id, "message.delivery")
    assert await workflow.result() is True  # delivered, and its workflow closed
    run = (await workflow.describe()).run_id
    again = await status_in(twilio, settings, texts, sid, "delivered")
    await status_in(twilio, settings, texts, sid, "read")
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
    twilio: httpx.AsyncClient,
    db: async_sessionmaker[AsyncSession],
    settings: Settings,
    api_key: str,
    make_agent: AgentFactory,
    receiver: tuple[WebhookReceiver, str],
    temporal_client: Client,
) -> None:
    hooks, hooks_url = receiver
    webhook = {"url": hooks_url, "secret": WEBHOOK_SECRET, "events": ["session.finished"]}
    agent_id = await make_agent(first_message=REMINDER, webhook=webhook)
    texts = await texted_first(http, db, settings, api_key, agent_id)
    [sid] = texts.sids

    answer = await status_in(twilio, settings, texts, sid, "delivered")

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
    http: httpx.AsyncClient,
    db: async_sessionmaker[AsyncSession],
    settings: Settings,
    api_key: str,
    make_agent: AgentFactory,
) -> None:
    agent_id = await make_agent(first_message=REMINDER)
    texts = await texted_first(
        http, db, settings, api_key, agent_id, ("accepted", "sending", "dropped")
    )
    web = await http.post("/chats", json={"agent_id": agent_id, "channel": "web"})

    shown = await delivery(http, texts.session_id)

    assert shown == [
        {"part": 0, "status": "queued", "provider_message_id": texts.sids[0],
         "error_code": None, "error_message": None},
        {"part": 1, "status": "sending", "provider_message_id": None,
         "error_code": None, "error_message": None},
        {"part": 2, "status": "not_sent", "provider_message_id": None,
         "error_code": None, "error_message": "the person opted out (STOP)"},
    ]  # fmt: skip
    assert web.json()["messages"][0]["delivery"] is None


async def test_a_finished_sms_conversation_keeps_its_delivery_statuses(
    http: httpx.AsyncClient,
    twilio: httpx.AsyncClient,
    db: async_sessionmaker[AsyncSession],
    settings: Settings,
    api_key: str,
    make_agent: AgentFactory,
) -> None:
    """Read from the database (the workflow is gone): a callback often comes after the end."""
    texts = await texted_first(
        http, db, settings, api_key, await make_agent(first_message=REMINDER)
    )
    finished = await finished_copy(db, texts)

    answer = await status_in(twilio, settings, finished, finished.sids[0], "delivered")

    assert answer.status_code == 200, answer.text
    view = (await http.get(f"/chats/{finished.session_id}")).json()
    assert view["is_final"] is True
    assert [(p["status"], p["provider_message_id"]) for p in view["messages"][0]["delivery"]] == [
        ("delivered", finished.sids[0])
    ]


async def finished_copy(db: async_sessionmaker[AsyncSession], texts: SentTexts) -> SentTexts:
    """A final session on the same agent snapshot, stored as the finish pipeline leaves it,
    whose first message went out as one text."""
    sid, session_id = message_sid(), str(uuid.uuid4())
    now = datetime.now(UTC)
    async with db.begin() as s:
        row = await s.get(ChatSession, texts.session_id)
        assert row is not None
        s.add(
            ChatSession(
                id=session_id, account_id=row.account_id, agent_id=row.agent_id,
                agent_version=row.agent_version, snapshot_id=row.snapshot_id,
                channel="twilio_sms", external_id=None, endpoint_hash=None,
                workflow_id=f"chat-{session_id}", additional_data={}, ttl_seconds=row.ttl_seconds,
                status="final", final_reason="ttl", analysis_usage=[], created_time=now,
                last_activity=now, finished_time=now,
            )
        )  # fmt: skip
        await s.flush()
        s.add(
            ChatMessage(session_id=session_id, seq=0, role="assistant", content=REMINDER,
                        tool_calls=[], time=now)
        )  # fmt: skip
        s.add(
            SmsPart(session_id=session_id, seq=0, part=0, account_id=row.account_id,
                    sender=texts.number, recipient=texts.person, body=REMINDER, state="accepted",
                    provider_message_id=sid, attempts=1, created_time=now, updated_time=now)
        )  # fmt: skip
    return SentTexts(session_id, texts.number, texts.person, [sid])


async def test_a_text_status_is_kept_on_its_part_row(
    http: httpx.AsyncClient,
    twilio: httpx.AsyncClient,
    db: async_sessionmaker[AsyncSession],
    settings: Settings,
    api_key: str,
    make_agent: AgentFactory,
) -> None:
    texts = await texted_first(
        http, db, settings, api_key, await make_agent(first_message=REMINDER)
    )
    [sid] = texts.sids

    await status_in(twilio, settings, texts, sid, "failed", ErrorCode="30006")

    async with db() as s:
        part = await s.scalar(select(SmsPart).where(SmsPart.provider_message_id == sid))
    assert part is not None
    assert (part.state, part.status, part.error_code) == ("accepted", "failed", "30006")
