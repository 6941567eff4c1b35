"""The `send_text` activity against a fake Twilio on loopback (tests/fakes/twilio_server.py):
every part of a message is texted exactly once, whatever failed on the way."""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from temporalio import workflow
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from src.activities.sms import SmsActivities, SmsSent, SmsText
from src.config import Settings
from src.db.tables import Account, PhoneNumber, SmsPart, SmsStatusEvent
from src.db.upsert import insert_missing
from src.sealing.secret_box import SecretBox
from src.sms.phone_numbers import set_opted_out
from src.sms.signatures import SIGNATURE_HEADER, is_signed
from src.sms.texts import text_parts
from src.temporal.failures import FailureType
from src.workflows.activity_options import SMS_SEND
from tests.conftest import SettingsFactory
from tests.fakes.twilio_server import FakeTwilio, TwilioAccount, TwilioMessage
from tests.servers import served

STATUS_PATH = "/channels/twilio/status"


@dataclass
class Callbacks:
    """Parley's side of the status callbacks, standing in for its route: what was posted."""

    posts: list[tuple[dict[str, str], str]]

    def __post_init__(self) -> None:
        self.app = Starlette(routes=[Route(STATUS_PATH, self._take, methods=["POST"])])

    async def _take(self, request: Request) -> Response:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        self.posts.append((form, request.headers.get(SIGNATURE_HEADER, "")))
        return Response(status_code=204)


@pytest.fixture(scope="module")
async def callbacks() -> AsyncIterator[tuple[Callbacks, str]]:
    receiver = Callbacks([])
    async with served(receiver.app) as url:
        yield receiver, url


@pytest.fixture(scope="module")
def twilio(fake_twilio: tuple[FakeTwilio, str]) -> tuple[FakeTwilio, str]:
    return fake_twilio


@pytest.fixture(scope="module")
def sms_settings(
    make_settings: SettingsFactory,
    twilio: tuple[FakeTwilio, str],
    callbacks: tuple[Callbacks, str],
) -> Settings:
    return make_settings(PARLEY_TWILIO_API_URL=twilio[1], PARLEY_PUBLIC_URL=callbacks[1])


@pytest.fixture(scope="module")
def box(sms_settings: Settings) -> SecretBox:
    return SecretBox(sms_settings.secret_keys())


@pytest.fixture
async def activities(
    sms_settings: Settings, db: async_sessionmaker[AsyncSession], box: SecretBox
) -> AsyncIterator[SmsActivities]:
    sms = SmsActivities(sms_settings, db, box)
    yield sms
    await sms.close()


@dataclass
class Line:
    """A configured number and a person texting it, fresh for each test."""

    account_id: str
    number: str
    recipient: str
    twilio: TwilioAccount
    fake: FakeTwilio

    def text(self, body: str, seq: int = 1, session_id: str | None = None) -> SmsText:
        return SmsText(
            session_id=session_id or f"sms-{uuid.uuid4().hex[:12]}",
            account_id=self.account_id,
            seq=seq,
            body=body,
            number=self.number,
            recipient=self.recipient,
        )

    def sent(self) -> list[TwilioMessage]:
        return self.fake.sent(to=self.recipient)


def phone_number() -> str:
    return "+1555" + "".join(secrets.choice("0123456789") for _ in range(7))


async def configured_line(
    db: async_sessionmaker[AsyncSession],
    box: SecretBox,
    fake: FakeTwilio,
    messaging_service_sid: str | None = None,
) -> Line:
    account_id = f"acct-sms-{uuid.uuid4().hex[:8]}"
    twilio = fake.add_account()
    number = phone_number()
    now = datetime.now(UTC)
    config = {"account_sid": twilio.sid, "auth_token": box.seal(twilio.auth_token)}
    if messaging_service_sid:
        config["messaging_service_sid"] = messaging_service_sid
    async with db.begin() as session:
        await insert_missing(
            session, Account, [{"id": account_id, "name": account_id, "created_time": now}], ["id"]
        )
        session.add(
            PhoneNumber(
                id=f"pn-{uuid.uuid4().hex[:12]}",
                account_id=account_id,
                number=number,
                provider="twilio",
                agent_id="agent-sms",
                config=config,
                created_time=now,
                updated_time=now,
            )
        )
    return Line(account_id, number, phone_number(), twilio, fake)


@pytest.fixture
async def line(
    db: async_sessionmaker[AsyncSession], box: SecretBox, twilio: tuple[FakeTwilio, str]
) -> Line:
    return await configured_line(db, box, twilio[0])


async def send(activities: SmsActivities, text: SmsText) -> SmsSent:
    return await ActivityEnvironment().run(activities.send_text, text)


async def parts_of(db: async_sessionmaker[AsyncSession], text: SmsText) -> list[SmsPart]:
    async with db() as session:
        rows = await session.scalars(
            select(SmsPart)
            .where(SmsPart.session_id == text.session_id, SmsPart.seq == text.seq)
            .order_by(SmsPart.part)
        )
        return list(rows)


async def left_sending(db: async_sessionmaker[AsyncSession], text: SmsText, part: int) -> None:
    """The row an attempt writes before asking Twilio, as if it died right after."""
    now = datetime.now(UTC)
    async with db.begin() as session:
        session.add(
            SmsPart(
                session_id=text.session_id, seq=text.seq, part=part, account_id=text.account_id,
                sender=text.number, recipient=text.recipient, body=text_parts(text.body)[part],
                state="sending", attempts=1, created_time=now, updated_time=now,
            )
        )  # fmt: skip


def long_body(words: int = 600) -> str:
    return " ".join(f"word{i:04d}" for i in range(words))  # 9 characters each with the space


async def test_a_short_reply_goes_out_as_one_text(
    activities: SmsActivities,
    line: Line,
    db: async_sessionmaker[AsyncSession],
    sms_settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    text = line.text("Your table for two is booked at 7 pm.")

    with caplog.at_level(logging.DEBUG, logger="src"):
        sent = await send(activities, text)

    assert sent == SmsSent(parts=1, accepted=1)
    [message] = line.sent()
    assert (message.from_, message.body) == (line.number, text.body)
    assert message.messaging_service_sid is None
    assert message.status_callback == sms_settings.public_url + STATUS_PATH
    [part] = await parts_of(db, text)
    assert (part.state, part.status, part.attempts) == ("accepted", "queued", 1)
    assert part.provider_message_id == message.sid
    assert (part.sender, part.recipient, part.body) == (line.number, line.recipient, text.body)
    parley_logs = " ".join(r.getMessage() for r in caplog.records if r.name.startswith("src."))
    assert message.sid in parley_logs
    for private in (line.twilio.auth_token, text.body, line.recipient, line.number):
        assert private not in parley_logs


async def test_a_long_reply_goes_out_as_several_texts_in_order(
    activities: SmsActivities, line: Line, db: async_sessionmaker[AsyncSession]
) -> None:
    text = line.text(long_body())  # 5,399 characters

    sent = await send(activities, text)

    assert sent == SmsSent(parts=4, accepted=4)
    bodies = [m.body for m in line.sent()]
    assert bodies == text_parts(text.body)
    assert all(len(b) <= 1600 for b in bodies) and "".join(bodies) == text.body
    rows = await parts_of(db, text)
    assert [(r.part, r.state, r.provider_message_id) for r in rows] == [
        (i, "accepted", m.sid) for i, m in enumerate(line.sent())
    ]


async def test_a_messaging_service_number_sends_through_the_service(
    activities: SmsActivities,
    db: async_sessionmaker[AsyncSession],
    box: SecretBox,
    twilio: tuple[FakeTwilio, str],
) -> None:
    line = await configured_line(db, box, twilio[0], messaging_service_sid="MG" + "a" * 32)

    sent = await send(activities, line.text("Reminder: dentist tomorrow at 9."))

    assert sent.accepted == 1
    [message] = line.sent()
    assert (message.messaging_service_sid, message.from_) == ("MG" + "a" * 32, None)


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_twilio_busy_or_failing_is_retried_and_the_text_sent_once(
    activities: SmsActivities, line: Line, db: async_sessionmaker[AsyncSession], status: int
) -> None:
    text = line.text("We open at 9 tomorrow.")
    line.fake.fail_next(1, status, to=line.recipient)

    with pytest.raises(ApplicationError) as failed:
        await send(activities, text)
    retried = await send(activities, text)

    assert failed.value.type == FailureType.SMS_PROVIDER_UNAVAILABLE
    assert not failed.value.non_retryable
    assert retried == SmsSent(parts=1, accepted=1)
    assert [r.status for r in line.fake.sends(to=line.recipient)] == [status, 201]
    assert len(line.sent()) == 1
    [part] = await parts_of(db, text)
    assert (part.state, part.attempts) == ("accepted", 2)


async def test_a_429_is_retried_by_temporal_with_the_send_options(
    sms_settings: Settings, temporal_client: Client, activities: SmsActivities, line: Line
) -> None:
    text = line.text("Your order shipped.")
    line.fake.fail_next(2, 429, to=line.recipient)
    queue = f"sms-send-{uuid.uuid4().hex[:8]}"

    async with Worker(
        temporal_client,
        task_queue=queue,
        workflows=[SendOneText],
        activities=[activities.send_text],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        sent = await temporal_client.execute_workflow(
            SendOneText.run, text, id=f"sms-send-{text.session_id}", task_queue=queue
        )

    assert sent == SmsSent(parts=1, accepted=1)
    assert [r.status for r in line.fake.sends(to=line.recipient)] == [429, 429, 201]
    assert len(line.sent()) == 1


@workflow.defn(name="test.SendOneText")
class SendOneText:
    @workflow.run
    async def run(self, text: SmsText) -> SmsSent:
        return await workflow.execute_activity_method(SmsActivities.send_text, text, **SMS_SEND)


async def test_an_opted_out_recipient_is_refused_by_twilio_and_not_asked_again(
    activities: SmsActivities, line: Line, db: async_sessionmaker[AsyncSession]
) -> None:
    text = line.text(long_body(300))  # 2 parts
    line.fake.refuse(line.recipient, code=21610)

    sent = await send(activities, text)
    again = await send(activities, text)

    assert sent == again == SmsSent(parts=2, failed=2, error_code="21610")
    assert len(line.fake.sends(to=line.recipient)) == 1  # the second part was not tried
    assert line.sent() == []
    first, second = await parts_of(db, text)
    assert (first.state, first.error_code) == ("failed", "21610")
    assert first.error_message == "Attempt to send to unsubscribed recipient"
    assert (second.state, second.error_code) == ("failed", "21610")
    assert second.error_message is not None and second.error_message.startswith("not sent")


async def test_another_refusal_is_recorded_with_its_code(
    activities: SmsActivities, line: Line, db: async_sessionmaker[AsyncSession]
) -> None:
    text = line.text("Hello")
    line.fake.refuse(line.recipient, code=21211, status=400)

    sent = await send(activities, text)

    assert sent == SmsSent(parts=1, failed=1, error_code="21211")
    [part] = await parts_of(db, text)
    assert (part.state, part.error_code, part.provider_message_id) == ("failed", "21211", None)


async def test_nothing_is_sent_to_a_pair_that_opted_out(
    activities: SmsActivities, line: Line, db: async_sessionmaker[AsyncSession]
) -> None:
    async with db.begin() as session:
        await set_opted_out(session, line.number, line.recipient, True, datetime.now(UTC))
    text = line.text(long_body(300))
    requests_before = len(line.fake.requests)

    sent = await send(activities, text)

    assert sent == SmsSent(parts=2, dropped=2)
    assert len(line.fake.requests) == requests_before  # Twilio was not even asked
    rows = await parts_of(db, text)
    assert [(r.state, r.error_message) for r in rows] == [
        ("dropped", "the recipient opted out")
    ] * 2


async def test_a_stop_taken_while_a_message_goes_out_drops_the_parts_not_sent_yet(
    activities: SmsActivities, line: Line, db: async_sessionmaker[AsyncSession]
) -> None:
    text = line.text(long_body(500))  # 3 parts
    line.fake.hang_next(to=line.recipient)
    sending = asyncio.create_task(send(activities, text))
    held = await line.fake.wait_hanging()

    async with db.begin() as session:
        await set_opted_out(session, line.number, line.recipient, True, datetime.now(UTC))
    line.fake.release(held.sid)
    sent = await sending

    assert sent == SmsSent(parts=3, accepted=1, dropped=2)
    assert [m.sid for m in line.sent()] == [held.sid]
    rows = await parts_of(db, text)
    assert [r.state for r in rows] == ["accepted", "dropped", "dropped"]


async def test_a_send_twilio_accepted_before_the_worker_died_is_not_sent_again(
    activities: SmsActivities, line: Line, db: async_sessionmaker[AsyncSession]
) -> None:
    text = line.text(long_body(500))  # 3 parts
    line.fake.hang_next(to=line.recipient, after=1)  # the second part's answer never comes
    dying = asyncio.create_task(send(activities, text))
    held = await line.fake.wait_hanging()
    dying.cancel()  # the attempt ends between Twilio's accept and Parley's record
    with pytest.raises(asyncio.CancelledError):
        await dying
    assert [r.state for r in await parts_of(db, text)] == ["accepted", "sending"]
    # The fake saw the client go away (as when a worker is SIGKILLed), not a release.
    await line.fake.wait_for(
        lambda: [r.status for r in line.fake.sends(line.recipient)] == [201, 499], 10
    )
    # Twilio's status callback came while the part was unrecorded.
    async with db.begin() as session:
        session.add(SmsStatusEvent(provider_message_id=held.sid, status="delivered",
                                   time=datetime.now(UTC)))  # fmt: skip

    retried = await send(activities, text)

    assert retried == SmsSent(parts=3, accepted=3)
    assert [m.body for m in line.sent()] == text_parts(text.body)  # each once, in order
    assert [r.status for r in line.fake.sends(line.recipient)] == [201, 499, 201]
    rows = await parts_of(db, text)
    assert [(r.state, r.attempts) for r in rows] == [("accepted", 1)] * 3  # found, not resent
    assert (rows[1].provider_message_id, rows[1].status) == (held.sid, "delivered")


async def test_a_send_through_a_messaging_service_is_reconciled_too(
    activities: SmsActivities,
    db: async_sessionmaker[AsyncSession],
    box: SecretBox,
    twilio: tuple[FakeTwilio, str],
) -> None:
    line = await configured_line(db, box, twilio[0], messaging_service_sid="MG" + "b" * 32)
    text = line.text("See you at 3.")
    line.fake.hang_next(to=line.recipient)
    dying = asyncio.create_task(send(activities, text))
    held = await line.fake.wait_hanging()
    dying.cancel()
    with pytest.raises(asyncio.CancelledError):
        await dying

    retried = await send(activities, text)

    assert retried == SmsSent(parts=1, accepted=1)
    assert [m.sid for m in line.sent()] == [held.sid]
    [part] = await parts_of(db, text)
    assert part.provider_message_id == held.sid


async def test_a_part_left_sending_that_twilio_never_got_is_sent_once(
    activities: SmsActivities, line: Line, db: async_sessionmaker[AsyncSession]
) -> None:
    text = line.text("Your code is 4821.")
    await left_sending(db, text, part=0)

    sent = await send(activities, text)

    assert sent == SmsSent(parts=1, accepted=1)
    assert [m.body for m in line.sent()] == [text.body]
    [part] = await parts_of(db, text)
    assert (part.state, part.attempts, part.provider_message_id) == (
        "accepted", 2, line.sent()[0].sid
    )  # fmt: skip


async def test_the_same_words_sent_for_an_earlier_message_are_not_taken_for_this_one(
    activities: SmsActivities, line: Line, db: async_sessionmaker[AsyncSession]
) -> None:
    session_id = f"sms-{uuid.uuid4().hex[:12]}"
    earlier = line.text("Thanks!", seq=1, session_id=session_id)
    await send(activities, earlier)
    later = line.text("Thanks!", seq=3, session_id=session_id)
    await left_sending(db, later, part=0)

    sent = await send(activities, later)

    assert sent == SmsSent(parts=1, accepted=1)
    assert [m.body for m in line.sent()] == ["Thanks!", "Thanks!"]
    [first] = await parts_of(db, earlier)
    [second] = await parts_of(db, later)
    assert first.provider_message_id != second.provider_message_id


async def test_a_finished_message_sent_again_sends_nothing(
    activities: SmsActivities, line: Line
) -> None:
    text = line.text(long_body(300))
    first = await send(activities, text)
    requests_before = len(line.fake.requests)

    again = await send(activities, text)

    assert first == again == SmsSent(parts=2, accepted=2)
    assert len(line.fake.requests) == requests_before
    assert len(line.sent()) == 2


async def test_a_number_no_longer_configured_fails_without_retries(
    activities: SmsActivities, line: Line
) -> None:
    text = line.text("Hello").model_copy(update={"number": phone_number()})

    with pytest.raises(ApplicationError) as failed:
        await send(activities, text)

    assert failed.value.type == FailureType.SMS_NUMBER_UNKNOWN
    assert failed.value.non_retryable
    assert line.fake.sends(to=line.recipient) == []


async def test_twilio_unreachable_is_retried(
    make_settings: SettingsFactory,
    db: async_sessionmaker[AsyncSession],
    box: SecretBox,
    line: Line,
) -> None:
    unreachable = make_settings(PARLEY_TWILIO_API_URL="http://127.0.0.1:9")  # discard port
    sms = SmsActivities(unreachable, db, box)
    text = line.text("Hello")

    try:
        with pytest.raises(ApplicationError) as failed:
            await send(sms, text)
    finally:
        await sms.close()

    assert failed.value.type == FailureType.SMS_PROVIDER_UNAVAILABLE
    assert not failed.value.non_retryable
    [part] = await parts_of(db, text)
    assert part.state == "sending"  # the next attempt asks Twilio what it has first


# --- the fake itself ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "credentials",
    [None, ("AC" + "0" * 32, "token"), "wrong token", "another account"],
    ids=["none", "unknown account", "wrong token", "another account"],
)
async def test_the_fake_twilio_wants_the_accounts_basic_auth(
    twilio: tuple[FakeTwilio, str], credentials: object
) -> None:
    fake, url = twilio
    account, other = fake.add_account(), fake.add_account()
    auth = {
        "wrong token": (account.sid, "not-" + account.auth_token),
        "another account": (other.sid, other.auth_token),
    }.get(str(credentials), credentials)
    path = f"/2010-04-01/Accounts/{account.sid}/Messages.json"
    form = {"To": phone_number(), "From": phone_number(), "Body": "hi"}

    async with httpx.AsyncClient(base_url=url, auth=auth) as client:  # type: ignore[arg-type]
        sent = await client.post(path, data=form)
        listed = await client.get(path)
        good = await client.post(path, data=form, auth=(account.sid, account.auth_token))

    for answer in (sent, listed):
        assert answer.status_code == 401
        assert answer.json() == {
            "code": 20003,
            "message": "Authenticate",
            "more_info": "https://www.twilio.com/docs/errors/20003",
            "status": 401,
        }
    assert good.status_code == 201
    assert good.json()["sid"].startswith("SM") and len(good.json()["sid"]) == 34
    assert [m.sid for m in fake.sent(to=form["To"])] == [good.json()["sid"]]


async def test_the_fake_twilio_lists_newest_first_page_by_page(
    twilio: tuple[FakeTwilio, str],
) -> None:
    fake, url = twilio
    account = fake.add_account()
    path = f"/2010-04-01/Accounts/{account.sid}/Messages.json"
    to, sender = phone_number(), phone_number()

    async with httpx.AsyncClient(base_url=url, auth=(account.sid, account.auth_token)) as client:
        for body in ("one", "two", "three"):
            await client.post(path, data={"To": to, "From": sender, "Body": body})
        first = (await client.get(path, params={"To": to, "From": sender, "PageSize": 2})).json()
        second = (await client.get(first["next_page_uri"])).json()

    assert [m["body"] for m in first["messages"]] == ["three", "two"]
    assert [m["body"] for m in second["messages"]] == ["one"]
    assert second["next_page_uri"] is None
    message = second["messages"][0]
    assert (message["to"], message["from"], message["status"]) == (to, sender, "queued")
    assert message["date_created"].endswith("+0000") and message["error_code"] is None


async def test_the_fake_twilio_signs_status_callbacks_as_twilio_does(
    activities: SmsActivities, line: Line, callbacks: tuple[Callbacks, str]
) -> None:
    receiver, url = callbacks
    await send(activities, line.text("Hi there"))
    [message] = line.sent()

    delivered = await line.fake.send_status(message.sid, "undelivered", error_code=30003)
    forged = await line.fake.send_status(message.sid, "delivered", auth_token="not-the-token")

    assert delivered.status_code == forged.status_code == 204
    (form, signature), (_, forged_signature) = receiver.posts[-2:]
    assert form["MessageSid"] == message.sid
    assert (form["MessageStatus"], form["ErrorCode"]) == ("undelivered", "30003")
    assert (form["To"], form["From"]) == (line.recipient, line.number)
    token = line.twilio.auth_token
    assert is_signed(token, url + STATUS_PATH, form, signature)
    assert not is_signed(token, url + STATUS_PATH, form, forged_signature)
