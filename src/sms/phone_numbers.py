"""Reading a phone number's configuration and its senders' opt-outs, for the channel's
webhooks and the send activity (the CRUD API is src/services/phone_numbers.py)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from src.db.tables import PhoneNumber, SmsOptOut
from src.db.upsert import insert_missing
from src.sealing.secret_box import SecretBox

TWILIO_SMS = "twilio_sms"


class PhoneNumberConfig(BaseModel):
    """A number as the channel uses it, its auth token opened. Never goes to Temporal."""

    id: str
    account_id: str
    number: str
    agent_id: str | None  # or, for a squad's number, squad_id
    squad_id: str | None = None
    account_sid: str
    auth_token: str
    messaging_service_sid: str | None = None
    ttl_seconds: int | None = None
    help_text: str | None = None


def config_of_row(row: PhoneNumber, box: SecretBox) -> PhoneNumberConfig:
    twilio = row.config
    return PhoneNumberConfig(
        id=row.id,
        account_id=row.account_id,
        number=row.number,
        agent_id=row.agent_id,
        squad_id=row.squad_id,
        account_sid=twilio["account_sid"],
        auth_token=box.open(twilio["auth_token"]),
        messaging_service_sid=twilio.get("messaging_service_sid"),
        ttl_seconds=row.ttl_seconds,
        help_text=row.help_text,
    )


async def number_config(db: AsyncSession, box: SecretBox, number: str) -> PhoneNumberConfig | None:
    row = await db.scalar(select(PhoneNumber).where(PhoneNumber.number == number))
    return config_of_row(row, box) if row is not None else None


async def is_opted_out(db: AsyncSession, number: str, sender: str) -> bool:
    row = await db.get(SmsOptOut, (number, sender))
    return row is not None and row.opted_out


async def set_opted_out(
    db: AsyncSession, number: str, sender: str, opted_out: bool, time: datetime
) -> None:
    """Records STOP (True) or START (False) for the pair; the caller commits."""
    await insert_missing(
        db,
        SmsOptOut,
        [{"number": number, "sender": sender, "opted_out": opted_out, "time": time}],
        ["number", "sender"],
    )
    row = await db.get(SmsOptOut, (number, sender), populate_existing=True)
    assert row is not None
    row.opted_out, row.time = opted_out, time
