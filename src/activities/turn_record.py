"""A turn recorded by its last model call.

Recording a turn's messages in a local activity after the model answered holds the workflow
task that answers the caller until the write is done. Instead, the session gives the model call
what it has not recorded yet (the messages go as the call's `unrecorded`; the audit events,
idempotency keys and presence waiting for the next write go here), and when the model's answer
is a plain reply, the turn's last message, the call writes all of it with the reply in the
transaction of its stream's last events, and returns the reply as recorded. A retried call
whose earlier attempt committed finds that write and returns it without asking the model again.
Replies with tool calls (more steps follow) and the budget message are recorded by the session
as before.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from src.activities.session_store import AuditEntry, MessagesProduced, SessionPresence
from src.db.tables import ChatMessage, RecordedBatch, message_of_row
from src.domain import Author, Message, Usage
from src.llm.types import LLMReply


class TurnRecord(BaseModel):
    """What the session would write with the turn's messages, and the write's number."""

    batch: int
    account_id: str
    agent_id: str  # the author of the reply (a squad's member that answers)
    events: list[AuditEntry] = Field(default_factory=list)
    idempotency_keys: dict[int, str] = Field(default_factory=dict)
    presence: SessionPresence | None = None


def recordable(reply: LLMReply) -> bool:
    """A reply that ends the turn: no tool call to run, not the budget message."""
    return not reply.tool_calls and not reply.budget_used_up


def reply_message(reply: LLMReply, record: TurnRecord) -> Message:
    """The reply as the session's transcript holds it (as src/workflows/agent_loop.py would
    make it)."""
    return Message(
        role="assistant",
        content=reply.content,
        time=datetime.now(UTC),
        usage=Usage(
            model=reply.model,
            served_model=reply.served_model,
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
        ),
        author=Author.ai(record.agent_id),
    )


def turn_batch(
    session_id: str, first_seq: int, unrecorded: list[Message], reply: Message, record: TurnRecord
) -> MessagesProduced:
    return MessagesProduced(
        batch=record.batch,
        session_id=session_id,
        account_id=record.account_id,
        first_seq=first_seq,
        messages=[*unrecorded, reply],
        last_activity=reply.time,
        events=record.events,
        idempotency_keys=record.idempotency_keys,
        presence=record.presence,
    )


async def written_reply(
    db: AsyncSession, session_id: str, first_seq: int, unrecorded: list[Message], batch: int
) -> LLMReply | None:
    """The reply an earlier attempt of the call wrote as write `batch`, if it did: the
    batch holds the call's unrecorded messages and one assistant message after them."""
    claimed = await db.scalar(
        select(RecordedBatch.batch).where(
            RecordedBatch.session_id == session_id, RecordedBatch.batch == batch
        )
    )
    if claimed is None:
        return None
    rows = (
        await db.scalars(
            select(ChatMessage)
            .where(ChatMessage.session_id == session_id, ChatMessage.batch == batch)
            .order_by(ChatMessage.seq)
        )
    ).all()
    stored = [message_of_row(row) for row in rows]
    expected_seqs = list(range(first_seq, first_seq + len(unrecorded) + 1))
    if [row.seq for row in rows] != expected_seqs or stored[-1].role != "assistant":
        return None  # not this call's write (a lost workflow task's): it is replaced
    if [(m.role, m.content) for m in stored[:-1]] != [(m.role, m.content) for m in unrecorded]:
        return None
    reply = stored[-1]
    usage = reply.usage or Usage(model="")
    return LLMReply(
        content=reply.content,
        model=usage.model,
        served_model=usage.served_model,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        recorded_message=reply,
    )
