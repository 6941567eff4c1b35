"""How the texts of a message fared: the order Twilio's delivery statuses come in, and the
`delivery` list the transcript shows for a message sent by SMS.

Twilio's status callbacks can arrive out of order (each is its own HTTP request, and a
`sent` may be retried past the `delivered` that followed it), so a status only ever moves a
text forward: accepted/scheduled < queued < sending < sent < delivered < read, and the
failures (undelivered, failed, canceled) are final: once one is recorded nothing changes it.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from src.db.tables import SmsPart
from src.domain import Message, PartDelivery

# Twilio's message statuses (outbound), in the order a text goes through them. "accepted"
# and "scheduled" come from Messaging Services (before queued), "read" from WhatsApp/RCS.
STATUS_RANK: dict[str, int] = {
    "accepted": 0,
    "scheduled": 0,
    "queued": 1,
    "sending": 2,
    "sent": 3,
    "delivered": 4,
    "read": 5,
    "undelivered": 6,
    "failed": 6,
    "canceled": 6,
}

# What the transcript shows for a part whose provider status is not known (yet).
_STATUS_OF_STATE = {"sending": "sending", "accepted": "queued"}
NOT_SENT = "not_sent"


def earlier_statuses(status: str) -> list[str]:
    """The statuses a text may move to `status` from (those before it)."""
    rank = STATUS_RANK[status]
    return [known for known, known_rank in STATUS_RANK.items() if known_rank < rank]


def part_delivery(part: SmsPart) -> PartDelivery:
    status = part.status or _STATUS_OF_STATE.get(part.state, NOT_SENT)
    return PartDelivery(
        part=part.part,
        status=status,
        provider_message_id=part.provider_message_id,
        error_code=part.error_code,
        error_message=part.error_message,
    )


def deliveries_by_seq(parts: Iterable[SmsPart]) -> dict[int, list[PartDelivery]]:
    """The `delivery` of each message (by its seq) that was sent as texts, parts in order."""
    found: dict[int, list[SmsPart]] = {}
    for part in parts:
        found.setdefault(part.seq, []).append(part)
    return {
        seq: [part_delivery(part) for part in sorted(rows, key=lambda row: row.part)]
        for seq, rows in found.items()
    }


async def with_delivery(
    db: AsyncSession, session_id: str, messages: list[Message]
) -> list[Message]:
    """`messages` (a whole transcript from seq 0) of an SMS session, each message that was
    sent as texts with its `delivery`: one query."""
    rows = await db.scalars(select(SmsPart).where(SmsPart.session_id == session_id))
    deliveries = deliveries_by_seq(rows)
    return [
        message.model_copy(update={"delivery": deliveries[seq]}) if seq in deliveries else message
        for seq, message in enumerate(messages)
    ]
