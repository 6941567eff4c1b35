"""Database activities of a chat session: the session row, its messages and its audit trail.

Every write is idempotent (deterministic keys, insert-if-missing), because Temporal may run an
activity again after a worker crash.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from src.activities.heartbeats import heartbeating
from src.activities.recorded_transcripts import RecordedTranscripts
from src.activities.turn_stream import message_events
from src.db.queries import AuditRow, audit_row, insert_audit_rows
from src.db.recorded_batches import batch_digest, claim_batch, forget_batches
from src.db.stream_events import NewEvent, append_events, drop_partial_text
from src.db.tables import ChatMessage, ChatSession
from src.db.upsert import insert_missing
from src.domain import (
    Artifact,
    FinishReason,
    Message,
    Operator,
    SessionAgent,
    SessionMode,
    SessionStatus,
    Transfer,
    Usage,
)
from src.templates import context_changes, context_opened
from src.temporal.failures import FailureType


class SessionOpened(BaseModel):
    session_id: str
    account_id: str
    workflow_id: str
    agent: SessionAgent
    channel: str
    external_id: dict[str, Any] | None
    endpoint_hash: str | None
    additional_data: dict[str, Any]
    ttl_seconds: int
    time: datetime
    kind: str = "session"
    squad_id: str | None = None


class AuditEntry(BaseModel):
    """An audit event the workflow observed (a tool call, an end request, a finish step);
    `key` makes it unique within the session, so a retried write adds no second row."""

    key: str
    kind: str
    data: dict[str, Any] = Field(default_factory=dict)
    time: datetime


class SessionPresence(BaseModel):
    """Who answers the session, as its row shows it to the session list."""

    mode: SessionMode
    help_requested: bool
    active_human: Operator | None = None
    agent_id: str | None = None  # a squad's active member


# Audit events that also go on the conversation's live stream (an operator's console follows
# them); the rest (a whisper, above all) stay in the audit log.
STREAMED_AUDIT_KINDS = frozenset(
    {
        "session.help_requested",
        "session.help_unanswered",
        "session.takeover",
        "session.handback",
        "tool.approval_requested",
        "tool.approval_decided",
    }
)


class MessagesProduced(BaseModel):
    session_id: str
    account_id: str
    first_seq: int
    messages: list[Message]
    last_activity: datetime
    events: list[AuditEntry] = Field(default_factory=list)
    # The idempotency keys of answered user messages among `messages`, by seq.
    idempotency_keys: dict[int, str] = Field(default_factory=dict)
    # A stateless turn's `additional_data` (the client sends it every turn): it becomes the
    # conversation's stored context, and a difference from the last turn's is audited as
    # `context.changed`. None for sessions, whose context is fixed at open.
    additional_data: dict[str, Any] | None = None
    # Set when who answers the session changed since the last write.
    presence: SessionPresence | None = None
    # The write's number in the session (src/db/recorded_batches.py), so that a lost workflow
    # task's write of the same number is replaced; None: not numbered (a stateless turn).
    batch: int | None = None


class KeyLookup(BaseModel):
    session_id: str
    idempotency_key: str


class AnsweredTurn(BaseModel):
    """Where the turn answered for an idempotency key sits in the transcript: the messages
    after the keyed user message, up to the next user message."""

    first_seq: int
    count: int


class ArtifactReady(BaseModel):
    session_id: str
    account_id: str
    artifact: Artifact
    usage: list[Usage]
    time: datetime


class SessionFinished(BaseModel):
    session_id: str
    account_id: str
    reason: FinishReason
    note: str | None
    unrecorded: MessagesProduced
    finished_time: datetime
    # The session's context strings as it finished, kept with its record.
    context: list[str] | None = None
    # A squad session's handoffs, kept in its artifact.
    transfers: list[Transfer] = Field(default_factory=list)


class SessionStoreActivities:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        transcripts: RecordedTranscripts | None = None,
    ) -> None:
        self._sessions = sessions
        # The LLM activity's copy of recorded transcripts in this process, extended as
        # messages are recorded so that the next turn reads none back.
        self._transcripts = transcripts if transcripts is not None else RecordedTranscripts()

    @activity.defn(name="session_store.record_opened")
    async def record_opened(self, opened: SessionOpened) -> None:
        row = {
            "id": opened.session_id,
            "account_id": opened.account_id,
            "agent_id": opened.agent.id,
            "agent_version": opened.agent.version,
            "snapshot_id": opened.agent.snapshot_id,
            "channel": opened.channel,
            "external_id": opened.external_id,
            "endpoint_hash": opened.endpoint_hash,
            "workflow_id": opened.workflow_id,
            "kind": opened.kind,
            "additional_data": opened.additional_data,
            "ttl_seconds": opened.ttl_seconds,
            "squad_id": opened.squad_id,
            "status": SessionStatus.ACTIVE.value,
            "created_time": opened.time,
            "last_activity": opened.time,
        }
        audit = audit_row(
            opened.session_id,
            opened.account_id,
            "session.opened",
            opened.time,
            {
                "agent_id": opened.agent.id,
                "agent_version": opened.agent.version,
                "channel": opened.channel,
            },
        )
        context = audit_row(
            opened.session_id,
            opened.account_id,
            "context.set",
            opened.time,
            context_opened(opened.additional_data, opened.channel, opened.external_id),
        )
        try:
            async with heartbeating(), self._sessions.begin() as db:
                if opened.endpoint_hash is not None:
                    await _close_stale_sessions(db, opened)
                await insert_missing(db, ChatSession, [row], ["id"])
                # One statement each, so the log lists the open before its context.
                await insert_audit_rows(db, [audit])
                await insert_audit_rows(db, [context])
        except IntegrityError as error:
            raise ApplicationError(
                "another active session already holds this external endpoint",
                type=FailureType.ENDPOINT_BUSY,
                non_retryable=True,
            ) from error

    @activity.defn(name="session_store.record_messages")
    async def record_messages(self, produced: MessagesProduced) -> None:
        async with heartbeating(), self._sessions.begin() as db:
            replaced = await write_messages(db, produced)
        if replaced:  # the copy kept here may hold what the lost task wrote
            self._transcripts.forget(produced.session_id)
        else:
            self._transcripts.recorded(produced.session_id, produced.first_seq, produced.messages)

    @activity.defn(name="session_store.find_answered")
    async def find_answered(self, lookup: KeyLookup) -> AnsweredTurn | None:
        async with self._sessions() as db:
            user_seq = await db.scalar(
                select(ChatMessage.seq).where(
                    ChatMessage.session_id == lookup.session_id,
                    ChatMessage.idempotency_key == lookup.idempotency_key,
                )
            )
            if user_seq is None:
                return None
            later = ChatMessage.session_id == lookup.session_id, ChatMessage.seq > user_seq
            next_user = await db.scalar(
                select(func.min(ChatMessage.seq)).where(*later, ChatMessage.role == "user")
            )
            if next_user is None:  # the last turn: up to the end of the transcript
                last = await db.scalar(select(func.max(ChatMessage.seq)).where(*later))
                next_user = (last if last is not None else user_seq) + 1
        return AnsweredTurn(first_seq=user_seq + 1, count=next_user - user_seq - 1)

    @activity.defn(name="session_store.persist_artifact")
    async def persist_artifact(self, ready: ArtifactReady) -> None:
        failed = sorted(
            name for name, r in ready.artifact.structured_outputs.items() if r.status == "failed"
        )
        audit = audit_row(
            ready.session_id,
            ready.account_id,
            "finish.analysis",
            ready.time,
            {
                "summary": ready.artifact.summary is not None,
                "structured_outputs": sorted(ready.artifact.structured_outputs),
                "failed": failed,
            },
        )
        async with heartbeating(), self._sessions.begin() as db:
            kept = await db.scalar(
                select(ChatSession.artifact).where(ChatSession.id == ready.session_id)
            )
            artifact = ready.artifact.model_dump(mode="json")
            artifact["transfers"] = (kept or {}).get("transfers", [])
            await db.execute(
                update(ChatSession)
                .where(ChatSession.id == ready.session_id)
                .values(
                    artifact=artifact,
                    analysis_usage=[u.model_dump(mode="json") for u in ready.usage],
                )
            )
            await insert_audit_rows(db, [audit])

    @activity.defn(name="session_store.persist_final")
    async def persist_final(self, finished: SessionFinished) -> None:
        async with heartbeating(), self._sessions.begin() as db:
            await write_messages(db, finished.unrecorded)
            await db.execute(
                update(ChatSession)
                .where(ChatSession.id == finished.session_id)
                .values(
                    status=SessionStatus.FINAL.value,
                    final_reason=finished.reason.value,
                    note=finished.note,
                    finished_time=finished.finished_time,
                    last_activity=finished.unrecorded.last_activity,
                    context=finished.context or None,
                    **_transfers_artifact(finished.transfers),
                )
            )
            audit = audit_row(
                finished.session_id,
                finished.account_id,
                "session.finished",
                finished.finished_time,
                {"reason": finished.reason.value, "note": finished.note},
            )
            await insert_audit_rows(db, [audit])
            final = NewEvent(
                kind="session.final",
                key="session.final",
                data={"reason": finished.reason.value, "note": finished.note},
            )
            await append_events(db, finished.session_id, [final], finished.finished_time)
            await drop_partial_text(db, finished.session_id)
            if finished.unrecorded.batch is not None:
                await forget_batches(db, finished.session_id, finished.unrecorded.batch)


def _transfers_artifact(transfers: list[Transfer]) -> dict[str, Any]:
    """A squad session's artifact holds its transfers from the final record on (analysis,
    if any, adds to it)."""
    if not transfers:
        return {}
    return {"artifact": Artifact(transfers=transfers).model_dump(mode="json")}


async def _close_stale_sessions(db: AsyncSession, opened: SessionOpened) -> None:
    """Mark final any other `active` row of this endpoint. The endpoint's workflow ID admits
    one running session, and this one is it, so such a row belongs to a run that ended without
    finishing (terminated by an operator, say) and would otherwise block the endpoint."""
    await db.execute(
        update(ChatSession)
        .where(
            ChatSession.endpoint_hash == opened.endpoint_hash,
            ChatSession.status == SessionStatus.ACTIVE.value,
            ChatSession.id != opened.session_id,
        )
        .values(
            status=SessionStatus.FINAL.value,
            final_reason=FinishReason.ERROR.value,
            note="closed by the next session: its workflow ended without finishing",
            finished_time=opened.time,
        )
    )


async def write_messages(db: AsyncSession, produced: MessagesProduced) -> bool:
    """Writes the batch in the caller's transaction; True when it replaced what a lost
    workflow task's write of the same number left (src/db/recorded_batches.py)."""
    replaced = False
    if produced.batch is not None:
        digest = batch_digest(produced.model_dump_json())
        replaced = await claim_batch(db, produced.session_id, produced.batch, digest)
    rows: list[dict[str, Any]] = []
    audits: list[AuditRow] = []
    for offset, message in enumerate(produced.messages):
        seq = produced.first_seq + offset
        rows.append(
            {
                "session_id": produced.session_id,
                "seq": seq,
                "role": message.role,
                "content": message.content,
                "tool_calls": [call.model_dump(mode="json") for call in message.tool_calls],
                "usage": message.usage.model_dump(mode="json") if message.usage else None,
                "time": message.time,
                "attachments": [a.model_dump(mode="json") for a in message.attachments] or None,
                "author": message.author.model_dump(mode="json") if message.author else None,
                "batch": produced.batch,
            }
        )
        audits.append(
            audit_row(
                produced.session_id,
                produced.account_id,
                "message",
                message.time,
                {
                    "seq": seq,
                    "role": message.role,
                    "tool_calls": [call.name for call in message.tool_calls],
                },
                event_key=f"{produced.session_id}:message:{seq}",
            )
        )
    events = [
        audit_row(
            produced.session_id,
            produced.account_id,
            entry.kind,
            entry.time,
            entry.data,
            event_key=f"{produced.session_id}:{entry.key}",
        )
        for entry in produced.events
    ]
    # The log lists events by id, oldest first: insert in time order, an event (a tool call)
    # before a message of the same instant (the assistant message that carries its result).
    ordered = sorted(
        [(audit["time"], 1, n, audit) for n, audit in enumerate(audits)]
        + [(event["time"], 0, n, event) for n, event in enumerate(events)],
        key=lambda entry: entry[:3],
    )
    audits = [audit for *_, audit in ordered]
    if produced.additional_data is not None:
        audits[:0] = await _replace_context(db, produced, produced.additional_data)
    await insert_missing(db, ChatMessage, rows, ["session_id", "seq"])
    await _record_keys(db, produced)
    await insert_audit_rows(db, audits, batch=produced.batch)
    await _stream_messages(db, produced)
    streamed = [
        NewEvent(kind=entry.kind, key=entry.key, data=entry.data)
        for entry in produced.events
        if entry.kind in STREAMED_AUDIT_KINDS
    ]
    if streamed:
        await append_events(
            db, produced.session_id, streamed, produced.last_activity, batch=produced.batch
        )
    await db.execute(
        update(ChatSession)
        .where(
            ChatSession.id == produced.session_id,
            ChatSession.last_activity < produced.last_activity,
        )
        .values(last_activity=produced.last_activity)
    )
    if produced.presence is not None:
        presence = produced.presence
        await db.execute(
            update(ChatSession)
            .where(ChatSession.id == produced.session_id)
            .values(
                mode=presence.mode.value,
                help_requested=presence.help_requested,
                active_human=presence.active_human.model_dump() if presence.active_human else None,
                **({"agent_id": presence.agent_id} if presence.agent_id else {}),
            )
        )
    return replaced


async def _stream_messages(db: AsyncSession, produced: MessagesProduced) -> None:
    """Each recorded message on the conversation's live stream, once (keyed by seq)."""
    if not produced.messages:
        return
    turn_start = 0
    if produced.messages[0].role != "user":
        last_user = await db.scalar(
            select(func.max(ChatMessage.seq)).where(
                ChatMessage.session_id == produced.session_id,
                ChatMessage.role == "user",
                ChatMessage.seq < produced.first_seq,
            )
        )
        turn_start = last_user + 1 if last_user is not None else 0
    events = message_events(produced.first_seq, produced.messages, turn_start)
    await append_events(
        db, produced.session_id, events, produced.last_activity, batch=produced.batch
    )


async def _record_keys(db: AsyncSession, produced: MessagesProduced) -> None:
    """Set the idempotency keys on their user messages, which an earlier batch may have
    written already (a write under way while the turn ran). A key is unique per session: a
    key some message holds already (a turn run twice for it, never expected) stays there."""
    if not produced.idempotency_keys:
        return
    held = set(
        await db.scalars(
            select(ChatMessage.idempotency_key).where(
                ChatMessage.session_id == produced.session_id,
                ChatMessage.idempotency_key.in_(list(produced.idempotency_keys.values())),
            )
        )
    )
    for seq, key in produced.idempotency_keys.items():
        if key not in held:
            await db.execute(
                update(ChatMessage)
                .where(ChatMessage.session_id == produced.session_id, ChatMessage.seq == seq)
                .values(idempotency_key=key)
            )


async def _replace_context(
    db: AsyncSession, produced: MessagesProduced, additional_data: dict[str, Any]
) -> list[AuditRow]:
    """Store a stateless turn's `additional_data` as the conversation's context; if it differs
    from the last recorded turn's, the `context.changed` event (names only) to write with the
    turn. A retry after this committed finds nothing changed, and the event key (the turn's
    first message number) is the turn's own, so the event is written once."""
    stored = await db.scalar(
        select(ChatSession.additional_data)
        .where(ChatSession.id == produced.session_id)
        .with_for_update()
    )
    changes = context_changes(stored or {}, additional_data)
    if changes is None:
        return []
    await db.execute(
        update(ChatSession)
        .where(ChatSession.id == produced.session_id)
        .values(additional_data=additional_data)
    )
    time = produced.messages[0].time if produced.messages else produced.last_activity
    key = f"{produced.session_id}:context.changed:{produced.first_seq}"
    return [
        audit_row(
            produced.session_id,
            produced.account_id,
            "context.changed",
            time,
            changes,
            event_key=key,
        )
    ]
