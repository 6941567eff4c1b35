"""Twilio's delivery status callbacks: each (text, status) taken once, recorded on the text in
order (src/sms/delivery.py), written to the session's audit log as `message.delivery`, and
raised as the agent's `message.delivery` webhook event when it subscribes to it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from pydantic import BaseModel
from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from src.activities.webhooks import WebhookDelivery
from src.config import Settings
from src.db.queries import audit_row, insert_audit_rows
from src.db.snapshots import SnapshotStore
from src.db.tables import AuditEvent, ChatSession, SmsPart, SmsStatusEvent
from src.db.upsert import insert_if_missing, insert_missing
from src.sealing.secret_box import SecretBox
from src.services.temporal_errors import temporal_unavailable, unavailable
from src.sms.delivery import earlier_statuses
from src.sms.phone_numbers import PhoneNumberConfig, number_config
from src.workflows.webhook_delivery import WebhookDeliveryWorkflow

DELIVERY_EVENT = "message.delivery"


class StatusCallback(BaseModel):
    """One status callback as Twilio posted it (signature checked)."""

    message_sid: str
    status: str  # one of src.sms.delivery.STATUS_RANK
    error_code: str | None = None
    error_message: str | None = None


class SentText(BaseModel):
    """The text a callback is about, and the number whose auth token signs its callbacks."""

    session_id: str
    account_id: str
    seq: int
    part: int
    number: str


class DeliveryStatuses:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        box: SecretBox,
        snapshots: SnapshotStore,
        temporal: Client,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._box = box
        self._snapshots = snapshots
        self._temporal = temporal

    async def find(
        self, message_sid: str, sender: str
    ) -> tuple[SentText | None, PhoneNumberConfig | None]:
        """The text Twilio calls `message_sid` (None if Parley sent none by that id) and the
        number that signs its callbacks: the one it was sent from, else `sender` (the
        callback's From), so a callback about an unknown text is still checked as signed."""
        async with self._sessions() as db:
            row = (
                await db.scalar(select(SmsPart).where(SmsPart.provider_message_id == message_sid))
                if message_sid
                else None
            )
            number = await number_config(db, self._box, row.sender if row else sender)
        text = (
            SentText(
                session_id=row.session_id,
                account_id=row.account_id,
                seq=row.seq,
                part=row.part,
                number=row.sender,
            )
            if row
            else None
        )
        return text, number

    async def take(self, text: SentText, callback: StatusCallback) -> None:
        """Records the callback once; raises the webhook event on every call, so a callback
        posted again after a failed start raises it then (the workflow id keeps it once)."""
        key = f"{text.session_id}:delivery:{callback.message_sid}:{callback.status}"
        now = datetime.now(UTC)
        async with self._sessions.begin() as db:
            first = await insert_if_missing(
                db,
                SmsStatusEvent,
                {"provider_message_id": callback.message_sid, "status": callback.status,
                 "time": now},
                ["provider_message_id", "status"],
            )  # fmt: skip
            if first:
                applied = await _advance(db, callback, now)
                data = {
                    "seq": text.seq,
                    "part": text.part,
                    "status": callback.status,
                    "provider_message_id": callback.message_sid,
                    "error_code": callback.error_code,
                    # False for a status that came after a later one (it changed nothing).
                    "applied": applied,
                }
                event = audit_row(
                    text.session_id, text.account_id, DELIVERY_EVENT, now, data, event_key=key
                )
                await insert_audit_rows(db, [event])
            recorded = await db.scalar(select(AuditEvent).where(AuditEvent.event_key == key))
            session = await db.get(ChatSession, text.session_id)
        if recorded is not None and session is not None:
            await self._raise_event(session, recorded)

    async def keep_early(self, callback: StatusCallback) -> None:
        """Keeps a signed status of a text Parley has not recorded (Twilio's callback can
        beat the send activity's record of Twilio's answer): the activity gives the text the
        furthest status kept for it. No audit or webhook event: the session is not known."""
        async with self._sessions.begin() as db:
            await insert_missing(
                db,
                SmsStatusEvent,
                [{"provider_message_id": callback.message_sid, "status": callback.status,
                  "time": datetime.now(UTC)}],
                ["provider_message_id", "status"],
            )  # fmt: skip

    async def _raise_event(self, session: ChatSession, event: AuditEvent) -> None:
        snapshot = await self._snapshots.load(session.snapshot_id)
        webhook = snapshot.spec.webhook
        if webhook is None or DELIVERY_EVENT not in webhook.events:
            return
        delivery = WebhookDelivery(
            event_id=event.event_key,
            event_type=DELIVERY_EVENT,
            account_id=session.account_id,
            session_id=session.id,
            snapshot_id=session.snapshot_id,
            occurred_time=event.time,
            data=event.data,
            retry_window_seconds=self._settings.webhook_retry_window_seconds,
            retry_initial_seconds=self._settings.webhook_retry_initial_seconds,
        )
        try:
            await self._temporal.start_workflow(
                WebhookDeliveryWorkflow.run,
                delivery,
                id=f"webhook-{delivery.event_id}",
                task_queue=self._settings.temporal_task_queue,
                # Started once, even after it has finished: a callback posted again is not
                # delivered again.
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                static_summary=f"webhook {DELIVERY_EVENT}",
            )
        except WorkflowAlreadyStartedError:
            pass
        except RPCError as error:
            if temporal_unavailable(error):
                raise unavailable() from None
            raise


async def _advance(db: AsyncSession, callback: StatusCallback, now: datetime) -> bool:
    """Moves the text to the callback's status if that is later than its own; whether it did.
    One conditional UPDATE, so two callbacks taken at once cannot move it back."""
    result = await db.execute(
        update(SmsPart)
        .where(
            SmsPart.provider_message_id == callback.message_sid,
            or_(SmsPart.status.is_(None), SmsPart.status.in_(earlier_statuses(callback.status))),
        )
        .values(
            status=callback.status,
            error_code=callback.error_code,
            error_message=callback.error_message,
            updated_time=now,
        )
    )
    return bool(cast(CursorResult[Any], result).rowcount)
