"""What the activities write to a conversation's live stream (src/db/stream_events.py).

The model call writes its text as it comes (`message.delta`, in batches), the tool calls it
asks for, and the results of the calls before it; recording messages writes each complete
message. Keyed events (a message by its seq, a tool call by its id) are stored once however
many writers or retries write them; deltas are not keyed: a retried model call first voids the
text of the failed attempt with `discard`, then streams again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from datetime import UTC, datetime

from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.db.stream_events import NewEvent, append_events
from src.domain import Message, ToolCall
from src.llm.types import LLMReply

# Text is written at most this often per model call: the first piece at once, then what
# arrived meanwhile, so the stream costs database writes per batch, not per token.
BATCH_SECONDS = 0.05


class TurnStream(BaseModel):
    """Where a model call streams to: the turn (inbox item) and the index of the message it
    produces among the turn's messages, from 0."""

    turn: str
    message_index: int = Field(ge=0)


def message_events(first_seq: int, messages: list[Message], turn_start: int) -> list[NewEvent]:
    """The stream events of recorded messages: a user message, or an assistant message with
    its tool calls and results before it. `turn_start` is the seq of the first message of the
    turn `messages[0]` belongs to (the one after its user message)."""
    events: list[NewEvent] = []
    for offset, message in enumerate(messages):
        seq = first_seq + offset
        if message.role == "user":
            events.append(user_message_event(seq, message))
            turn_start = seq + 1
            continue
        index = seq - turn_start
        events += tool_call_events(index, message)
        events += tool_result_events(index, message)
        events.append(
            NewEvent(
                kind="message",
                key=f"message:{seq}",
                data={
                    "message_index": index,
                    "seq": seq,
                    "message": message.model_dump(mode="json"),
                },
            )
        )
    return events


def user_message_event(seq: int, message: Message, turn: str | None = None) -> NewEvent:
    return NewEvent(
        kind="user_message",
        key=f"user:{seq}",
        turn=turn,
        data={"seq": seq, "message": message.model_dump(mode="json")},
    )


def tool_call_events(index: int, message: Message, turn: str | None = None) -> list[NewEvent]:
    return [
        NewEvent(
            kind="tool_call",
            key=f"tool_call:{call.id}",
            turn=turn,
            data={
                "message_index": index,
                "id": call.id,
                "name": call.name,
                "arguments": call.arguments,
            },
        )
        for call in message.tool_calls
    ]


def tool_result_events(index: int, message: Message, turn: str | None = None) -> list[NewEvent]:
    return [
        NewEvent(
            kind="tool_result",
            key=f"tool_result:{call.id}",
            turn=turn,
            data={
                "message_index": index,
                "id": call.id,
                "name": call.name,
                "response": call.response,
            },
        )
        for call in message.tool_calls
        if call.response is not None
    ]


class TextStreamer:
    """One model call's writes to the stream. `text` only queues: a background task writes
    the queue in batches, so the model's stream is never held up by the database."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        conversation_id: str,
        stream: TurnStream,
    ) -> None:
        self._sessions = sessions
        self._conversation_id = conversation_id
        self._stream = stream
        self._queued: list[str] = []
        self._arrived = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._streamed = False

    async def open(self, retried: bool, earlier: Iterable[NewEvent]) -> None:
        """Before the model is called: void a failed attempt's text, and write what the turn
        has done so far (its user message, the results of the tool calls before this one)."""
        events = list(earlier)
        if retried:
            events.insert(0, self._discard())
        await self._write(events)

    async def text(self, piece: str) -> None:
        if not piece:
            return
        self._queued.append(piece)
        self._arrived.set()
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_batches())

    async def close(self, reply: LLMReply) -> None:
        """After the model answered: the rest of its text, then the tool calls it asks for."""
        await self._drain()
        calls = [
            ToolCall(id=call.id, name=call.name, arguments=call.arguments)
            for call in reply.tool_calls
        ]
        message = Message(
            role="assistant", content=reply.content, tool_calls=calls, time=datetime.now(UTC)
        )
        await self._write(tool_call_events(self._stream.message_index, message, self._stream.turn))

    async def fail(self) -> None:
        """The model call failed: whatever text it streamed is void."""
        with contextlib.suppress(Exception):
            await self._drain()
        if self._streamed:
            await self._write([self._discard()])

    async def _drain(self) -> None:
        """Until everything queued is written."""
        if self._writer is None:
            return
        self._closing = True
        self._arrived.set()
        writer, self._writer = self._writer, None
        await writer

    async def _write_batches(self) -> None:
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            started = time.monotonic()
            if self._queued:
                delta, self._queued = "".join(self._queued), []
                await self._write([self._delta(delta)])
                self._streamed = True
            if self._closing and not self._queued:
                return
            if not self._closing:
                await asyncio.sleep(max(0.0, BATCH_SECONDS - (time.monotonic() - started)))

    def _delta(self, text: str) -> NewEvent:
        return NewEvent(
            kind="message.delta",
            turn=self._stream.turn,
            data={"message_index": self._stream.message_index, "delta": text},
        )

    def _discard(self) -> NewEvent:
        return NewEvent(
            kind="discard",
            turn=self._stream.turn,
            data={"message_index": self._stream.message_index},
        )

    async def _write(self, events: list[NewEvent]) -> None:
        if not events:
            return
        async with self._sessions.begin() as db:
            await append_events(db, self._conversation_id, events, datetime.now(UTC))


def turn_so_far(
    recorded_count: int, unrecorded: list[Message], stream: TurnStream
) -> list[NewEvent]:
    """What a model call's turn has done before it, from the messages not recorded yet: the
    user message (seq `recorded_count` + its place) and the results of the tool calls the
    turn's earlier messages made."""
    events: list[NewEvent] = []
    since_user: list[Message] = []
    last_user = max((i for i, m in enumerate(unrecorded) if m.role == "user"), default=None)
    for offset, message in enumerate(unrecorded):
        if message.role == "user":
            turn = stream.turn if offset == last_user else None
            events.append(user_message_event(recorded_count + offset, message, turn))
            since_user = []
        elif message.role == "assistant":
            since_user.append(message)
    first_index = stream.message_index - len(since_user)
    for place, message in enumerate(since_user):
        events += tool_result_events(first_index + place, message, stream.turn)
    return events
