"""Writes of a session's transcript that replace what a lost workflow task left.

The session workflow writes its transcript from local activities, inside the workflow task
that produced the messages, so that no caller waits for a second task. Such a write lands in
the database before Temporal has stored the task; if the server then loses the task (it died
with updates it had admitted only in memory), the clients' retries make the next task run
again, maybe in another order, and it writes the same batch number with other contents.

So each write carries its number in the session and is claimed here first, with a digest of
what it holds: a number not seen before is written as it is; the same number with the same
digest is a retry of a write that committed (its rows are there, and inserting what is missing
changes nothing); the same number with another digest means the earlier write came from a task
that was lost: every row stored by that write and any after it is removed first (messages,
their idempotency keys, audit events; live-stream events stay where followers may have read
them but give up their keys, so the corrected messages are streamed again after them).
"""

from __future__ import annotations

import hashlib

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from src.db.tables import AuditEvent, ChatMessage, RecordedBatch, StreamEvent
from src.db.upsert import insert_if_missing


def batch_digest(contents: str) -> str:
    return hashlib.sha256(contents.encode()).hexdigest()


async def claim_batch(db: AsyncSession, session_id: str, batch: int, digest: str) -> bool:
    """Claim write `batch` of the session, in the caller's transaction; True when a lost
    task's write of that number (and any later ones) had to be removed first."""
    row = {"session_id": session_id, "batch": batch, "digest": digest}
    if await insert_if_missing(db, RecordedBatch, row, ["session_id", "batch"]):
        return False
    stored = await db.scalar(
        select(RecordedBatch.digest).where(
            RecordedBatch.session_id == session_id, RecordedBatch.batch == batch
        )
    )
    if stored == digest:
        return False
    await db.execute(
        delete(ChatMessage).where(ChatMessage.session_id == session_id, ChatMessage.batch >= batch)
    )
    await db.execute(
        delete(AuditEvent).where(AuditEvent.session_id == session_id, AuditEvent.batch >= batch)
    )
    await db.execute(
        update(StreamEvent)
        .where(StreamEvent.session_id == session_id, StreamEvent.batch >= batch)
        .values(event_key=None)
    )
    await db.execute(
        delete(RecordedBatch).where(
            RecordedBatch.session_id == session_id, RecordedBatch.batch > batch
        )
    )
    await db.execute(
        update(RecordedBatch)
        .where(RecordedBatch.session_id == session_id, RecordedBatch.batch == batch)
        .values(digest=digest)
    )
    return True


async def forget_batches(db: AsyncSession, session_id: str, through: int) -> None:
    """Once the session is final, drop its claims up to the final write's number `through`:
    every task that wrote them was stored (scheduling the activity that writes the final
    status completed the task before it), so no write of those numbers can come again. Later
    numbers stay claimed: a turn still finishing after the final status (its handler is
    waited for afterwards) may yet be rewritten by a lost task."""
    await db.execute(
        delete(RecordedBatch).where(
            RecordedBatch.session_id == session_id, RecordedBatch.batch <= through
        )
    )
