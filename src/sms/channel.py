"""The SMS channel's side of a conversation: a text that came in (a keyword, or a message for
the agent's session on that pair of numbers), and the checks on a session Parley opens to
text someone first. The session itself is ChatSessionWorkflow, channel `twilio_sms`."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.db.tables import ChatMessage, ChatSession
from src.domain import Attachment, FinishReason, SessionStatus
from src.errors import Conflict, InvalidInput, NotFound
from src.sealing.secret_box import SecretBox
from src.services.chat_sessions import ChatSessionService, OpenChat
from src.session_ids import endpoint_hash
from src.sms.keywords import Keyword, keyword_of
from src.sms.phone_numbers import (
    TWILIO_SMS,
    PhoneNumberConfig,
    is_opted_out,
    number_config,
    set_opted_out,
)

log = logging.getLogger(__name__)

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
DEFAULT_HELP_TEXT = "Reply STOP to stop receiving messages, START to receive them again."


class InboundText(BaseModel):
    """A text as Twilio posted it."""

    message_sid: str
    sender: str  # From: the person
    number: str  # To: the business's number
    body: str
    attachments: list[Attachment]


def sms_endpoint(sender: str, number: str) -> dict[str, Any]:
    """The external id of the conversation between a person and a number."""
    return {"from": sender, "to": number, "provider_id": "twilio"}


class SmsChannel:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], box: SecretBox, chats: ChatSessionService
    ) -> None:
        self._sessions = sessions
        self._box = box
        self._chats = chats

    async def number(self, number: str) -> PhoneNumberConfig | None:
        async with self._sessions() as db:
            return await number_config(db, self._box, number)

    async def take(self, number: PhoneNumberConfig, text: InboundText) -> str | None:
        """Takes a signed inbound text; returns the reply to send at once in TwiML (HELP),
        or None when the agent answers later, by the Messages API (or nobody does)."""
        keyword = keyword_of(text.body)
        if keyword is Keyword.HELP:
            return number.help_text or DEFAULT_HELP_TEXT
        if keyword is not None:
            await self._opt(number, text.sender, opted_out=keyword is Keyword.STOP)
            return None
        async with self._sessions() as db:
            opted_out = await is_opted_out(db, number.number, text.sender)
            taken = await self._taken_before(db, number, text)
        if opted_out:
            # Nothing may be sent to the pair: no session would be able to answer.
            log.warning("a text from an opted-out sender to %s was not taken", number.number)
            return None
        if taken:
            return None  # Twilio's redelivery of a message a session has answered
        session, _ = await self._chats.open(
            number.account_id,
            OpenChat(
                agent_id=number.agent_id,
                squad_id=number.squad_id,
                channel=TWILIO_SMS,
                external_id=sms_endpoint(text.sender, number.number),
                ttl_seconds=number.ttl_seconds,
            ),
        )
        await self._chats.receive(
            number.account_id, session.id, text.body, text.message_sid, text.attachments
        )
        return None

    async def check_outbound(self, account_id: str, external_id: dict[str, Any] | None) -> None:
        """A session the API opens on `twilio_sms` (a reminder texted first): its endpoint
        names one of the account's numbers and a person who has not opted out."""
        endpoint = external_id or {}
        if set(endpoint) != {"from", "to", "provider_id"} or endpoint["provider_id"] != "twilio":
            raise InvalidInput(
                'a twilio_sms session needs external_id {"from": the person\'s number, '
                '"to": your phone number, "provider_id": "twilio"}'
            )
        for field in ("from", "to"):
            if not isinstance(endpoint[field], str) or not E164.fullmatch(endpoint[field]):
                raise InvalidInput(f"external_id.{field} must be an E.164 number like +15550001111")
        async with self._sessions() as db:
            number = await number_config(db, self._box, endpoint["to"])
            if number is None or number.account_id != account_id:
                raise NotFound(f"phone number {endpoint['to']!r} not found")
            if await is_opted_out(db, number.number, endpoint["from"]):
                raise Conflict(
                    "this person opted out of texts from this number (texted STOP); they "
                    "must text START before they can be sent anything"
                )

    async def _opt(self, number: PhoneNumberConfig, sender: str, opted_out: bool) -> None:
        """STOP (opted_out) or START for the pair; STOP also ends the pair's session."""
        async with self._sessions() as db:
            await set_opted_out(db, number.number, sender, opted_out, datetime.now(UTC))
            await db.commit()
            active = await db.scalar(
                select(ChatSession.id).where(
                    ChatSession.endpoint_hash == self._endpoint_hash(number, sender),
                    ChatSession.status == SessionStatus.ACTIVE.value,
                )
            )
        if opted_out and active is not None:
            await self._chats.request_end(
                number.account_id,
                active,
                "the person texted STOP",
                FinishReason.OPT_OUT,
                wait=False,
            )

    async def _taken_before(
        self, db: AsyncSession, number: PhoneNumberConfig, text: InboundText
    ) -> bool:
        """Whether a session on the pair has answered this MessageSid already (the session
        itself recognises a redelivery of a message it still holds)."""
        found = await db.scalar(
            select(ChatMessage.seq)
            .join(ChatSession, ChatSession.id == ChatMessage.session_id)
            .where(
                ChatSession.endpoint_hash == self._endpoint_hash(number, text.sender),
                ChatMessage.idempotency_key == text.message_sid,
            )
            .limit(1)
        )
        return found is not None

    @staticmethod
    def _endpoint_hash(number: PhoneNumberConfig, sender: str) -> str:
        return endpoint_hash(number.account_id, TWILIO_SMS, sms_endpoint(sender, number.number))
