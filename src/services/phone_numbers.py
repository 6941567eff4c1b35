"""Phone numbers texts reach Parley on: registered, read, listed, changed and deleted by an
account with its secret API key. One number belongs to one account; its Twilio auth token is
sealed at rest (src/sealing/secret_box.py) and never shown again (the channel reads it with
src/sms/phone_numbers.py)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.config import Settings
from src.db.queries import newest_first, page_of
from src.db.tables import PhoneNumber
from src.domain import SECRET_MASK, Frozen, check_text
from src.errors import Conflict, InvalidInput, NotFound
from src.pagination import encode_cursor
from src.sealing.secret_box import SecretBox, SecretUnreadable
from src.services.agents import AgentService
from src.services.squads import SquadService

PHONE_NUMBER_ID_PREFIX = "pn_"
# Where Twilio posts a number's inbound texts and its messages' delivery statuses, under
# PARLEY_PUBLIC_URL: the two URLs to paste into the number's configuration in Twilio's console.
TWILIO_SMS_PATH = "/channels/twilio/sms"
TWILIO_STATUS_PATH = "/channels/twilio/status"

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
MESSAGING_SERVICE_SID = re.compile(r"^MG[0-9a-fA-F]{32}$")
MAX_AUTH_TOKEN_CHARS = 256
MAX_HELP_TEXT_CHARS = 1600  # one text


def _account_sid(value: str) -> str:
    if not ACCOUNT_SID.fullmatch(value):
        raise ValueError("must be a Twilio Account SID: 'AC' and 32 hexadecimal digits")
    return value


def _messaging_service_sid(value: str | None) -> str | None:
    if value is not None and not MESSAGING_SERVICE_SID.fullmatch(value):
        raise ValueError("must be a Twilio Messaging Service SID: 'MG' and 32 hexadecimal digits")
    return value


def _auth_token(value: str) -> str:
    if not value:
        raise ValueError("the auth token is empty")
    if len(value) > MAX_AUTH_TOKEN_CHARS:
        raise ValueError(f"the auth token is longer than {MAX_AUTH_TOKEN_CHARS} characters")
    check_text(value, "the auth token")
    return value


class TwilioCredentials(Frozen):
    """The Twilio account a number sends with and whose auth token signs its webhooks."""

    account_sid: str = Field(examples=["AC" + "0" * 32])
    auth_token: str = Field(description="A secret: stored sealed, shown masked.")
    messaging_service_sid: str | None = Field(
        default=None,
        description="Send through this Messaging Service instead of `From` the number.",
    )

    _check_account_sid = field_validator("account_sid")(_account_sid)
    _check_messaging_service_sid = field_validator("messaging_service_sid")(_messaging_service_sid)

    @field_validator("auth_token")
    @classmethod
    def _real_token(cls, value: str) -> str:
        if value == SECRET_MASK:
            raise ValueError("this is the masked value the API shows; send the real auth token")
        return _auth_token(value)


class TwilioCredentialsPatch(Frozen):
    """The whole `twilio` object again; the auth token omitted, null or the mask keeps the
    stored one (but a new account_sid needs its token)."""

    account_sid: str
    auth_token: str | None = None
    messaging_service_sid: str | None = None

    _check_account_sid = field_validator("account_sid")(_account_sid)
    _check_messaging_service_sid = field_validator("messaging_service_sid")(_messaging_service_sid)

    @field_validator("auth_token")
    @classmethod
    def _token_or_keep(cls, value: str | None) -> str | None:
        return None if value is None or value == SECRET_MASK else _auth_token(value)


def _help_text(value: str | None) -> str | None:
    if value is not None:
        if not value.strip():
            raise ValueError("help_text is blank; send null to have none")
        if len(value) > MAX_HELP_TEXT_CHARS:
            raise ValueError(
                f"help_text is {len(value):,} characters; a text holds {MAX_HELP_TEXT_CHARS:,}"
            )
        check_text(value, "help_text")
    return value


class NewPhoneNumber(Frozen):
    number: str = Field(description="E.164, e.g. +15550001111.", examples=["+15550001111"])
    provider: Literal["twilio"]
    agent_id: str | None = Field(
        default=None, min_length=1, max_length=64, description="The agent that answers."
    )
    squad_id: str | None = Field(
        default=None, min_length=1, max_length=64, description="Or the squad that answers."
    )
    twilio: TwilioCredentials
    ttl_seconds: int | None = Field(
        default=None, description="Inactivity timeout of the number's sessions."
    )
    help_text: str | None = Field(default=None, description="The answer to HELP and INFO.")

    @field_validator("number")
    @classmethod
    def _e164(cls, value: str) -> str:
        if not E164.fullmatch(value):
            raise ValueError(
                "must be an E.164 phone number: '+', the country code and the number, "
                "digits only (e.g. +15550001111)"
            )
        return value

    _check_help_text = field_validator("help_text")(_help_text)

    @model_validator(mode="after")
    def _one_answerer(self) -> NewPhoneNumber:
        if (self.agent_id is None) == (self.squad_id is None):
            raise ValueError("give exactly one of `agent_id` or `squad_id`")
        return self


class PhoneNumberPatch(Frozen):
    """The fields to change; null clears `ttl_seconds` and `help_text`."""

    agent_id: str | None = Field(default=None, min_length=1, max_length=64)
    squad_id: str | None = Field(default=None, min_length=1, max_length=64)
    twilio: TwilioCredentialsPatch | None = None
    ttl_seconds: int | None = None
    help_text: str | None = None

    _check_help_text = field_validator("help_text")(_help_text)

    @model_validator(mode="before")
    @classmethod
    def _fixed_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in ("number", "provider"):
                if name in data:
                    raise ValueError(
                        f"{name} cannot be changed; delete the number and register it again"
                    )
        return data

    @model_validator(mode="after")
    def _not_cleared(self) -> PhoneNumberPatch:
        for name in ("agent_id", "squad_id", "twilio"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        if self.agent_id is not None and self.squad_id is not None:
            raise ValueError("give at most one of `agent_id` or `squad_id`")
        return self


class TwilioAccountView(BaseModel):
    account_sid: str
    auth_token: str = SECRET_MASK
    messaging_service_sid: str | None = None


class PhoneNumberRecord(BaseModel):
    id: str
    number: str
    provider: str
    agent_id: str | None
    squad_id: str | None = None
    twilio: TwilioAccountView
    ttl_seconds: int | None
    help_text: str | None
    created_time: datetime
    updated_time: datetime
    webhook_url: str
    status_callback_url: str


class PhoneNumberService:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        agents: AgentService,
        squads: SquadService,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._agents = agents
        self._squads = squads
        self._secrets = SecretBox(settings.secret_keys())

    async def create(self, account_id: str, spec: NewPhoneNumber) -> PhoneNumberRecord:
        """Registers a number for one of the account's agents or squads; 409 when any account
        has it."""
        self._check_ttl(spec.ttl_seconds)
        await self._check_answerer(account_id, spec.agent_id, spec.squad_id)
        now = datetime.now(UTC)
        row = PhoneNumber(
            id=f"{PHONE_NUMBER_ID_PREFIX}{uuid.uuid4().hex}",
            account_id=account_id,
            number=spec.number,
            provider=spec.provider,
            agent_id=spec.agent_id,
            squad_id=spec.squad_id,
            config=self._config(
                spec.twilio.account_sid,
                spec.twilio.auth_token,
                spec.twilio.messaging_service_sid,
            ),
            ttl_seconds=spec.ttl_seconds,
            help_text=spec.help_text,
            created_time=now,
            updated_time=now,
        )
        try:
            async with self._sessions.begin() as db:
                taken = await db.scalar(
                    select(PhoneNumber.id).where(PhoneNumber.number == spec.number)
                )
                if taken is not None:
                    raise _already_registered()
                db.add(row)
        except IntegrityError:  # registered concurrently
            raise _already_registered() from None
        return self._record(row)

    async def _check_answerer(
        self, account_id: str, agent_id: str | None, squad_id: str | None
    ) -> None:
        """The agent or squad is the account's (NotFound otherwise)."""
        if agent_id is not None:
            await self._agents.get(account_id, agent_id)
        if squad_id is not None:
            await self._squads.get(account_id, squad_id)

    async def get(self, account_id: str, number_id: str) -> PhoneNumberRecord:
        async with self._sessions() as db:
            return self._record(await _owned(db, account_id, number_id))

    async def list(
        self, account_id: str, limit: int, cursor: str | None
    ) -> tuple[list[PhoneNumberRecord], str | None]:
        query = select(PhoneNumber).where(PhoneNumber.account_id == account_id)
        query = newest_first(query, PhoneNumber.created_time, PhoneNumber.id, limit, cursor)
        async with self._sessions() as db:
            rows = (await db.scalars(query)).all()
        page, next_cursor = page_of(
            rows, limit, lambda row: encode_cursor(row.created_time, row.id)
        )
        return [self._record(row) for row in page], next_cursor

    async def update(
        self, account_id: str, number_id: str, patch: PhoneNumberPatch
    ) -> PhoneNumberRecord:
        changed = patch.model_fields_set
        if "ttl_seconds" in changed:
            self._check_ttl(patch.ttl_seconds)
        await self._check_answerer(account_id, patch.agent_id, patch.squad_id)
        async with self._sessions.begin() as db:
            row = await _owned(db, account_id, number_id)
            if patch.agent_id is not None or patch.squad_id is not None:
                row.agent_id, row.squad_id = patch.agent_id, patch.squad_id
            if patch.twilio is not None:
                row.config = self._patched_config(row.config, patch.twilio)
            if "ttl_seconds" in changed:
                row.ttl_seconds = patch.ttl_seconds
            if "help_text" in changed:
                row.help_text = patch.help_text
            row.updated_time = datetime.now(UTC)
        return self._record(row)

    async def delete(self, account_id: str, number_id: str) -> None:
        """The number stops answering texts at once and may be registered again; its senders'
        opt-outs stay recorded."""
        async with self._sessions.begin() as db:
            await db.delete(await _owned(db, account_id, number_id))

    async def reseal(self, account_id: str | None = None) -> tuple[int, int]:
        """Seal every number's auth token (of one account, or all) with the first key. Returns
        (rows changed, rows left as they were because no key opens them)."""
        sealing = self._settings.secret_keys()[0].key_id
        changed = unreadable = 0
        query = select(PhoneNumber)
        if account_id is not None:
            query = query.where(PhoneNumber.account_id == account_id)
        async with self._sessions.begin() as db:
            for row in (await db.scalars(query)).all():
                stored = row.config.get("auth_token")
                if self._secrets.key_of(stored) == sealing:
                    continue
                try:
                    token = self._secrets.open(stored)
                except SecretUnreadable:
                    unreadable += 1
                    continue
                row.config = {**row.config, "auth_token": self._secrets.seal(token)}
                changed += 1
        return changed, unreadable

    def _config(
        self, account_sid: str, auth_token: str, messaging_service_sid: str | None
    ) -> dict[str, Any]:
        return {
            "account_sid": account_sid,
            "auth_token": self._secrets.seal(auth_token),
            "messaging_service_sid": messaging_service_sid,
        }

    def _patched_config(
        self, stored: dict[str, Any], twilio: TwilioCredentialsPatch
    ) -> dict[str, Any]:
        if twilio.auth_token is not None:
            return self._config(twilio.account_sid, twilio.auth_token, twilio.messaging_service_sid)
        if twilio.account_sid != stored["account_sid"]:
            raise InvalidInput(
                "twilio.auth_token: a new account_sid needs that account's auth token"
            )
        # The stored token kept as it is stored (sealed, or in clear until resealed).
        return {**stored, "messaging_service_sid": twilio.messaging_service_sid}

    def _check_ttl(self, ttl: int | None) -> None:
        low, high = self._settings.min_ttl_seconds, self._settings.max_ttl_seconds
        if ttl is not None and not low <= ttl <= high:
            raise InvalidInput(f"ttl_seconds must be between {low} and {high}; got {ttl}")

    def _record(self, row: PhoneNumber) -> PhoneNumberRecord:
        base = self._settings.public_url
        return PhoneNumberRecord(
            id=row.id,
            number=row.number,
            provider=row.provider,
            agent_id=row.agent_id,
            squad_id=row.squad_id,
            twilio=TwilioAccountView(
                account_sid=row.config["account_sid"],
                messaging_service_sid=row.config.get("messaging_service_sid"),
            ),
            ttl_seconds=row.ttl_seconds,
            help_text=row.help_text,
            created_time=row.created_time,
            updated_time=row.updated_time,
            webhook_url=base + TWILIO_SMS_PATH,
            status_callback_url=base + TWILIO_STATUS_PATH,
        )


async def _owned(db: AsyncSession, account_id: str, number_id: str) -> PhoneNumber:
    row = await db.get(PhoneNumber, number_id)
    if row is None or row.account_id != account_id:
        raise NotFound(f"phone number {number_id!r} not found")
    return row


def _already_registered() -> Conflict:
    # Whichever account has it: which one is not this caller's to know.
    return Conflict("this number is already registered")
