"""The session's transcript in this run and its writing to the database.

The transcript lives in the database; a run holds only the messages it produced, their
sequence numbers (`first_seq` is the run's first), how many are written, and the audit events
waiting to be written. A turn that ends in a plain reply is written by its last model call,
with the reply (src/activities/turn_record.py); everything else is written in the background,
one write at a time, by local activities inside the workflow task that produced it. Each write
is numbered, so that one made by a workflow task Temporal then lost is replaced by the one
that counts (src/db/recorded_batches.py).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from src.activities.session_store import (
        AuditEntry,
        MessagesProduced,
        SessionPresence,
        SessionStoreActivities,
    )
    from src.activities.turn_record import TurnRecord
    from src.domain import Message
    from src.workflows import activity_options
    from src.workflows.chat_session_models import CarriedState


class TranscriptRecorder:
    def __init__(
        self, session_id: str, account_id: str, carried: CarriedState | None, now: datetime
    ) -> None:
        self._session_id = session_id
        self._account_id = account_id
        self.first_seq = carried.first_seq if carried else 0
        self.recorded = carried.recorded_count if carried else 0
        # Writes begun in the session, earlier runs' included: each write's number, so that a
        # lost workflow task's write is replaced by the one that counts (recorded_batches).
        self.batches = carried.batches_written if carried else 0
        self.messages: list[Message] = []
        self.last_activity = carried.last_activity if carried else now
        self._events: list[AuditEntry] = []
        # Idempotency keys of answered user messages not yet written, by seq.
        self._keys: dict[int, str] = {}
        # Who answers the session, when that changed since the last write.
        self._presence: SessionPresence | None = None
        self._writing: asyncio.Task[None] | None = None
        # A model call that may write the turn (turn_record.py): other writes wait for it.
        self._turn_record: TurnRecord | None = None
        self._turn_presence: SessionPresence | None = None  # the presence it was given
        self._reply_recorded = False  # the next message appended was written with its turn

    @property
    def count(self) -> int:
        """Messages in the whole transcript, earlier runs' included."""
        return self.first_seq + len(self.messages)

    @property
    def pending_events(self) -> list[AuditEntry]:
        """Audit events to be written with the next batch (tool calls append theirs)."""
        return self._events

    def append(self, message: Message) -> None:
        self.messages.append(message)
        self.last_activity = message.time
        if self._reply_recorded:
            self._reply_recorded = False
            self.recorded = self.count

    def add_event(self, entry: AuditEntry) -> None:
        self._events.append(entry)

    def audit(
        self, kind: str, key: str, data: dict[str, Any], time: datetime | None = None
    ) -> None:
        """An audit event for the next write; `key` is unique within the session."""
        self.add_event(AuditEntry(key=key, kind=kind, data=data, time=time or workflow.now()))

    def set_presence(self, presence: SessionPresence) -> None:
        """Written with the next batch, for the session list."""
        self._presence = presence

    def key_message(self, seq: int, key: str) -> None:
        """The user message at `seq` was answered for `key`: written with it, so the database
        answers a retry once the session has let the key go."""
        self._keys[seq] = key

    def describe(self, status: str) -> None:
        """What the Temporal UI shows as the session's current details: status and the tail
        of the transcript, tool calls included."""
        lines = [f"**{status}** · {self.count} messages"]
        for message in self.messages[-6:]:
            for call in message.tool_calls:
                lines.append(f"- tool `{call.name}` → {_clip(call.response or '', 80)}")
            if message.content:
                lines.append(f"- {message.role}: {_clip(message.content, 160)}")
        workflow.set_current_details("\n".join(lines))

    def unrecorded_messages(self) -> list[Message]:
        return self.messages[self.recorded - self.first_seq :]

    def take_unrecorded(self) -> MessagesProduced:
        """Messages and audit events not yet written; the events and keys are handed over."""
        events, self._events = self._events, []
        keys, self._keys = self._keys, {}
        presence, self._presence = self._presence, None
        return MessagesProduced(
            batch=self._next_batch(),
            session_id=self._session_id,
            account_id=self._account_id,
            first_seq=self.recorded,
            messages=self.unrecorded_messages(),
            last_activity=self.last_activity,
            events=events,
            idempotency_keys=keys,
            presence=presence,
        )

    def record_in_background(self) -> None:
        """Write what is new without making the waiting caller wait (once a model call that
        may write the turn has answered)."""
        if self._turn_record is not None:
            return
        if self._writing is None or self._writing.done():
            self._writing = asyncio.create_task(self._record_until_caught_up())

    async def recorded_all(self) -> None:
        self.record_in_background()
        if self._writing is not None:
            await self._writing

    def turn_record(self, agent_id: str, key: tuple[int, str] | None) -> TurnRecord | None:
        """What a model call should write with a plain reply, besides the unrecorded
        messages it is given: the audit events, keys (and the turn's own user message key)
        and presence waiting for the next write. None while a write is under way."""
        if self._writing is not None and not self._writing.done():
            return None
        keys = dict(self._keys)
        if key is not None:
            keys[key[0]] = key[1]
        self._turn_presence = self._presence
        self._turn_record = TurnRecord(
            batch=self._next_batch(),
            account_id=self._account_id,
            agent_id=agent_id,
            events=list(self._events),
            idempotency_keys=keys,
            presence=self._presence,
        )
        return self._turn_record

    def turn_answered(self, recorded: bool) -> None:
        """The model call that was given `turn_record` returned; `recorded`: with the turn
        written, which the reply appended next completes."""
        record, self._turn_record = self._turn_record, None
        if record is None or not recorded:
            return
        self._events = self._events[len(record.events) :]
        for seq in record.idempotency_keys:
            self._keys.pop(seq, None)
        if self._presence is self._turn_presence:
            self._presence = None
        self._reply_recorded = True

    async def write_under_way(self) -> None:
        """Waits only for a write already started (persist_final writes the rest)."""
        if self._writing is not None:
            await self._writing

    async def record_now(self, entry: AuditEntry) -> None:
        """Writes one audit event at once, outside the batches (once the session finishes,
        nothing else would write it)."""
        await workflow.execute_local_activity_method(
            SessionStoreActivities.record_messages,
            MessagesProduced(
                batch=self._next_batch(),
                session_id=self._session_id,
                account_id=self._account_id,
                first_seq=self.recorded,
                messages=[],
                last_activity=self.last_activity,
                events=[entry],
            ),
            **activity_options.titled(activity_options.LOCAL_STORE, f"record {entry.kind}"),
        )

    def _next_batch(self) -> int:
        self.batches += 1
        return self.batches - 1

    async def _record_until_caught_up(self) -> None:
        while self.recorded < self.count or self._events or self._keys or self._presence:
            batch = self.take_unrecorded()
            await workflow.execute_local_activity_method(
                SessionStoreActivities.record_messages,
                batch,
                **activity_options.titled(activity_options.LOCAL_STORE, _record_summary(batch)),
            )
            self.recorded = batch.first_seq + len(batch.messages)


def _record_summary(batch: MessagesProduced) -> str:
    """What a write holds, in words, for the Temporal UI: "record user, assistant (2 tool
    calls), assistant"."""
    parts = []
    for message in batch.messages:
        calls = len(message.tool_calls)
        parts.append(
            f"{message.role} ({calls} tool call{'s' if calls > 1 else ''})"
            if calls
            else message.role
        )
    if batch.events:
        parts.append(f"{len(batch.events)} audit event{'s' if len(batch.events) > 1 else ''}")
    return "record " + (", ".join(parts) or "nothing new")


def _clip(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
