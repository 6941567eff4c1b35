"""Sending an assistant message as texts through Twilio's Messages API, exactly once per part.

Each part (src/sms/texts.py) has a row in `sms_parts`, written and committed in state
"sending" before Twilio is asked, and set "accepted" with Twilio's sid once it answers. A
worker that dies in between leaves the row "sending": the next attempt lists the messages
Twilio has for the recipient since the row was written and records the one with the part's
body instead of sending it again; only when Twilio has none is the part sent. Parts already
accepted, refused or dropped are never asked for again, so rerunning a finished message sends
nothing.

Twilio's answers: 429, 5xx and no answer at all are retried by Temporal with backoff (the
options are `SMS_SEND` in src/workflows/activity_options.py); any other 4xx (21610: the
recipient texted STOP to Twilio; a bad number, ...) is recorded on the part and not retried,
and the parts after it are not sent either (marked "failed" with the same code): the rest of a
message is no use to a reader who missed its start, and most refusals would refuse them too.
A recipient who opted out (STOP to Parley) is checked before each part: that part and the rest
are "dropped", never sent.

The number's credentials are read from the database on every attempt, never passed through
Temporal; nothing here logs them, nor a text's body or phone numbers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from src.activities.heartbeats import heartbeating
from src.activities.webhooks import retry_after_seconds
from src.config import Settings
from src.db.tables import SmsPart, SmsStatusEvent
from src.db.upsert import insert_missing
from src.sealing.secret_box import SecretBox
from src.sms.delivery import STATUS_RANK
from src.sms.phone_numbers import PhoneNumberConfig, is_opted_out, number_config
from src.sms.texts import text_parts
from src.temporal.failures import FailureType

log = logging.getLogger(__name__)

STATUS_CALLBACK_PATH = "/channels/twilio/status"
TWILIO_TIMEOUT_SECONDS = 15
# Twilio's clock and ours may differ: messages listed up to this long before a part's row was
# written still count as its send when reconciling.
CLOCK_SKEW = timedelta(seconds=60)
# Reconciling reads at most this many of the recipient's newest messages.
_LIST_PAGE_SIZE = 50
_LIST_MAX_PAGES = 4
_RETRYABLE_STATUSES = {408, 425, 429}

SENDING = "sending"
ACCEPTED = "accepted"
FAILED = "failed"
DROPPED = "dropped"
_SETTLED = {ACCEPTED, FAILED, DROPPED}
OPTED_OUT_MESSAGE = "the recipient opted out"
# Delivery statuses in the order a message goes through them: a status callback taken before
# the part was recorded wins over the "queued" of Twilio's answer.


class SmsText(BaseModel):
    """One assistant message of an SMS session to send. No credentials: the activity reads the
    number's from the database, so none reach Temporal history."""

    session_id: str
    account_id: str
    seq: int  # the message's place in the transcript
    body: str
    number: str  # the session's phone number: the texts' From
    recipient: str  # the person: the texts' To


class SmsSent(BaseModel):
    """What became of the message's parts."""

    parts: int
    accepted: int = 0  # taken by Twilio (now or by an earlier attempt)
    failed: int = 0  # refused by Twilio (a 4xx: 21610 opted out, a bad number, ...)
    dropped: int = 0  # never sent: the recipient had opted out
    # Twilio's code for the first refused part (e.g. "21610"), when one was refused.
    error_code: str | None = None


@dataclass(frozen=True)
class _Refusal:
    """A 4xx from Twilio: the part is not sent, and asking again would not change that."""

    code: str
    message: str


class SmsActivities:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        box: SecretBox,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._box = box
        self._http = httpx.AsyncClient(timeout=TWILIO_TIMEOUT_SECONDS, follow_redirects=False)

    @activity.defn(name="send_text")
    async def send_text(self, text: SmsText) -> SmsSent:
        async with heartbeating():
            return await self._send(text)

    async def close(self) -> None:
        await self._http.aclose()

    async def _send(self, text: SmsText) -> SmsSent:
        config = await self._config(text)
        parts = text_parts(text.body)
        rows = await self._rows(text)
        sent = SmsSent(parts=len(parts))
        for index in range(len(parts)):
            activity.heartbeat(index)
            row = rows.get(index)
            if row is not None and row.state in _SETTLED:
                _count(sent, row.state, row.error_code)
                continue
            state, code = await self._send_part(config, text, parts, index, row)
            if state != ACCEPTED:
                _count(sent, state, code, len(parts) - index)  # this part and the rest
                break
            _count(sent, ACCEPTED, None)
        return sent

    async def _send_part(
        self,
        config: PhoneNumberConfig,
        text: SmsText,
        parts: list[str],
        index: int,
        row: SmsPart | None,
    ) -> tuple[str, str | None]:
        """Part `index` sent, unless an earlier attempt did; a refusal or an opt-out settles
        it and the parts after it. Its new state, and the refusal's code."""
        if row is not None:
            # An earlier attempt asked Twilio and died before recording its answer.
            found = await self._sent_before(config, text, row)
            if isinstance(found, _Refusal):
                return await self._refused(text, parts, index, found)
            if found is not None:
                await self._record_accepted(text, index, found)
                return ACCEPTED, None
        async with self._sessions() as db:
            opted_out = await is_opted_out(db, text.number, text.recipient)
        if opted_out:
            await self._settle_rest(text, parts, index, DROPPED, None, OPTED_OUT_MESSAGE)
            log.info("sms %s/%d: the recipient opted out, parts %d and after dropped",
                     text.session_id, text.seq, index)  # fmt: skip
            return DROPPED, None
        await self._mark_sending(text, index, parts[index])
        answer = await self._post(config, text, parts[index])
        if isinstance(answer, _Refusal):
            return await self._refused(text, parts, index, answer)
        await self._record_accepted(text, index, answer)
        return ACCEPTED, None

    async def _refused(
        self, text: SmsText, parts: list[str], index: int, refusal: _Refusal
    ) -> tuple[str, str | None]:
        await self._settle_rest(text, parts, index, FAILED, refusal.code, refusal.message)
        log.info("sms %s/%d part %d refused by Twilio (code %s); the rest not sent",
                 text.session_id, text.seq, index, refusal.code)  # fmt: skip
        return FAILED, refusal.code

    async def _config(self, text: SmsText) -> PhoneNumberConfig:
        async with self._sessions() as db:
            config = await number_config(db, self._box, text.number)
        if config is None or config.account_id != text.account_id:
            raise ApplicationError(
                f"the session's phone number is not configured any more (session "
                f"{text.session_id}); its texts cannot be sent",
                type=FailureType.SMS_NUMBER_UNKNOWN,
                non_retryable=True,
            )
        return config

    async def _rows(self, text: SmsText) -> dict[int, SmsPart]:
        async with self._sessions() as db:
            rows = await db.scalars(
                select(SmsPart).where(
                    SmsPart.session_id == text.session_id, SmsPart.seq == text.seq
                )
            )
            return {row.part: row for row in rows}

    async def _mark_sending(self, text: SmsText, index: int, body: str) -> None:
        """Committed before Twilio is asked: from here on, a retry reconciles first."""
        now = datetime.now(UTC)
        async with self._sessions.begin() as db:
            await insert_missing(
                db, SmsPart, [_row(text, index, body, SENDING, now)], ["session_id", "seq", "part"]
            )
            row = await db.get(SmsPart, (text.session_id, text.seq, index), populate_existing=True)
            assert row is not None
            # created_time stays the first attempt's: reconciling looks from there on.
            row.state, row.attempts, row.updated_time = SENDING, row.attempts + 1, now

    async def _record_accepted(self, text: SmsText, index: int, message: dict[str, Any]) -> None:
        sid = str(message["sid"])
        async with self._sessions.begin() as db:
            row = await db.get(SmsPart, (text.session_id, text.seq, index))
            assert row is not None
            row.state = ACCEPTED
            row.provider_message_id = sid
            row.status = await _latest_status(db, sid, str(message.get("status") or "queued"))
            row.error_code = row.error_message = None
            row.updated_time = datetime.now(UTC)
        log.info(
            "sms %s/%d part %d accepted by Twilio as %s", text.session_id, text.seq, index, sid
        )

    async def _settle_rest(
        self,
        text: SmsText,
        parts: list[str],
        first: int,
        state: str,
        code: str | None,
        message: str,
    ) -> None:
        """Parts `first` and after end in `state` (failed or dropped), never sent; part
        `first` (perhaps left "sending" by an earlier attempt) is the one `message` is about."""
        now = datetime.now(UTC)
        rest = message if state == DROPPED else f"not sent: part {first} was refused ({message})"
        rows = [
            _row(text, i, parts[i], state, now, code, message if i == first else rest)
            for i in range(first, len(parts))
        ]
        async with self._sessions.begin() as db:
            await insert_missing(db, SmsPart, rows, ["session_id", "seq", "part"])
            row = await db.get(SmsPart, (text.session_id, text.seq, first), populate_existing=True)
            assert row is not None
            if row.state == SENDING:
                row.state, row.error_code, row.error_message = state, code, message
                row.updated_time = now

    async def _post(
        self, config: PhoneNumberConfig, text: SmsText, body: str
    ) -> dict[str, Any] | _Refusal:
        """Twilio's message resource, or its refusal; raises (retried) when it was busy, failed
        or did not answer."""
        form = {
            "To": text.recipient,
            "Body": body,
            "StatusCallback": self._settings.public_url + STATUS_CALLBACK_PATH,
        }
        if config.messaging_service_sid:
            form["MessagingServiceSid"] = config.messaging_service_sid
        else:
            form["From"] = config.number
        response = await self._ask(config, "POST", self._messages_url(config), data=form)
        if isinstance(response, _Refusal):
            return response
        return _json_object(response)

    async def _sent_before(
        self, config: PhoneNumberConfig, text: SmsText, row: SmsPart
    ) -> dict[str, Any] | _Refusal | None:
        """The message Twilio has for the part's earlier send, if it has one: same recipient and
        sender, same body, created since the part's row (less the clock skew), and not recorded
        for another part already. Reads the recipient's newest messages, newest first."""
        since = row.created_time.replace(microsecond=0) - CLOCK_SKEW
        first_page = {"To": text.recipient, "PageSize": str(_LIST_PAGE_SIZE)}
        if not config.messaging_service_sid:
            # Through a messaging service, Twilio picks the From: match on the service instead.
            first_page["From"] = config.number
        url = self._messages_url(config)
        params: dict[str, str] | None = first_page
        candidates: list[dict[str, Any]] = []
        for _ in range(_LIST_MAX_PAGES):
            response = await self._ask(config, "GET", url, params=params)
            if isinstance(response, _Refusal):
                checked = f"could not check whether it was sent: {response.message}"
                return _Refusal(response.code, checked)
            page = _json_object(response)
            older_seen = False
            for message in page.get("messages") or []:
                created = _twilio_time(message.get("date_created"))
                if created is None or created < since:
                    older_seen = True
                    continue
                if message.get("body") == row.body and (
                    config.messaging_service_sid is None
                    or message.get("messaging_service_sid") == config.messaging_service_sid
                ):
                    candidates.append(message)
            next_page = page.get("next_page_uri")
            if older_seen or not next_page:
                break
            # The next page's URI carries its query (and params would replace it).
            url, params = self._settings.twilio_api_url.rstrip("/") + str(next_page), None
        if not candidates:
            return None
        async with self._sessions() as db:
            recorded = set(
                await db.scalars(
                    select(SmsPart.provider_message_id).where(
                        SmsPart.provider_message_id.in_([str(m["sid"]) for m in candidates])
                    )
                )
            )
        unrecorded = [m for m in candidates if m["sid"] not in recorded]
        # Newest first: the oldest is the one sent nearest the row's writing.
        return unrecorded[-1] if unrecorded else None

    async def _ask(
        self, config: PhoneNumberConfig, method: str, url: str, **request: Any
    ) -> httpx.Response | _Refusal:
        """Twilio's 2xx answer or its refusal (a 4xx but 408, 425, 429); raises a retryable
        ApplicationError for anything else. Failure messages hold no Twilio text (it may name
        phone numbers): the refusal's text goes to the database only."""
        try:
            response = await self._http.request(
                method, url, auth=(config.account_sid, config.auth_token), **request
            )
        except httpx.HTTPError as error:
            raise ApplicationError(
                f"Twilio did not answer: {type(error).__name__}",
                type=FailureType.SMS_PROVIDER_UNAVAILABLE,
            ) from None
        if response.is_success:
            return response
        code, message = _twilio_error(response)
        if 400 <= response.status_code < 500 and response.status_code not in _RETRYABLE_STATUSES:
            return _Refusal(code, message)
        retry_after = retry_after_seconds(response.headers.get("retry-after"))
        raise ApplicationError(
            f"Twilio answered HTTP {response.status_code} (code {code})",
            type=FailureType.SMS_PROVIDER_UNAVAILABLE,
            next_retry_delay=timedelta(seconds=retry_after) if retry_after else None,
        )

    def _messages_url(self, config: PhoneNumberConfig) -> str:
        base = self._settings.twilio_api_url.rstrip("/")
        return f"{base}/2010-04-01/Accounts/{config.account_sid}/Messages.json"


def _row(
    text: SmsText,
    index: int,
    body: str,
    state: str,
    now: datetime,
    error_code: str | None = None,
    error_message: str | None = None,
) -> dict[str, Any]:
    return {
        "session_id": text.session_id,
        "seq": text.seq,
        "part": index,
        "account_id": text.account_id,
        "sender": text.number,
        "recipient": text.recipient,
        "body": body,
        "state": state,
        "error_code": error_code,
        "error_message": error_message,
        "attempts": 0,
        "created_time": now,
        "updated_time": now,
    }


def _count(sent: SmsSent, state: str, code: str | None, parts: int = 1) -> None:
    if state == ACCEPTED:
        sent.accepted += parts
    elif state == FAILED:
        sent.failed += parts
        sent.error_code = sent.error_code or code
    else:
        sent.dropped += parts


async def _latest_status(db: AsyncSession, sid: str, answered: str) -> str:
    """The furthest status known for the message: Twilio's answer, or a status callback that
    came before the part was recorded (one that reconciling found, say)."""
    known = list(
        await db.scalars(
            select(SmsStatusEvent.status).where(SmsStatusEvent.provider_message_id == sid)
        )
    )
    return max([answered, *known], key=lambda status: STATUS_RANK.get(status, 0))


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        value = None
    if not isinstance(value, dict):
        # A 2xx we cannot read: Twilio may have sent it, so the part stays "sending" and the
        # retry reconciles.
        raise ApplicationError(
            f"Twilio's answer (HTTP {response.status_code}) is not a JSON object",
            type=FailureType.SMS_PROVIDER_UNAVAILABLE,
        )
    return value


def _twilio_error(response: httpx.Response) -> tuple[str, str]:
    """Twilio's error code and message, e.g. ("21610", "Attempt to send to unsubscribed
    recipient"); the HTTP status stands in for a code when the body has none."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("code") is not None:
        return str(body["code"])[:16], str(body.get("message") or "")
    return str(response.status_code), f"HTTP {response.status_code}"


def _twilio_time(value: object) -> datetime | None:
    """Twilio's RFC 2822 times ("Thu, 04 Dec 2026 06:40:00 +0000")."""
    if not isinstance(value, str):
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
