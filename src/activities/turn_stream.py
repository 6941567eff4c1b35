"""What the activities write to a conversation's live stream (src/db/stream_events.py).

The model call writes its text as it comes (`message.delta`, in batches, in the background),
the tool calls it asks for, and the results of the calls before it; recording messages writes
each complete message. Keyed events (a message by its seq, a tool call by its id) are stored
once however many writers or retries write them; deltas are not keyed: a retried model call
first voids the text of the failed attempt with `discard`, then streams again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime

from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.db.stream_events import NewEvent, append_events
from src.domain import Message, ToolCall
from src.llm.types import LLMReply

# More to write in the stream's last transaction (the turn's record, src/activities/llm.py).
AlsoWrite = Callable[[AsyncSession], Awaitable[None]]

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
    """One model call's writes to the stream. Nothing waits for the database: `open`, `text`
    and `close` queue, and a background task writes what is queued, in order, one transaction
    at a time. The model is called while the turn's opening events are written; the first
    text goes out at once, later text at most every BATCH_SECONDS; what queues during a write
    goes in the next one (so a quick reply costs one or two writes in all)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        conversation_id: str,
        stream: TurnStream,
    ) -> None:
        self._sessions = sessions
        self._conversation_id = conversation_id
        self._stream = stream
        self._queued: list[NewEvent | str] = []  # events, and text not yet in a delta
        self._arrived = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = asyncio.Event()  # set with _closing, to cut a batch interval short
        self._streamed = False
        self._also: AlsoWrite | None = None  # written with the last batch

    def open(self, retried: bool, earlier: Iterable[NewEvent]) -> None:
        """Before the model is called: void a failed attempt's text, and what the turn has
        done so far (its user message, the results of the tool calls before this one)."""
        self._queue([self._discard()] if retried else [])
        self._queue(list(earlier))

    async def text(self, piece: str) -> None:
        if piece:
            self._queue([piece])

    async def close(self, reply: LLMReply, also: AlsoWrite | None = None) -> None:
        """After the model answered: the rest of its text, then the tool calls it asks for;
        returns once all of it is written, `also` in the same transaction as the last of it."""
        self._also = also
        calls = [
            ToolCall(id=call.id, name=call.name, arguments=call.arguments)
            for call in reply.tool_calls
        ]
        message = Message(
            role="assistant", content=reply.content, tool_calls=calls, time=datetime.now(UTC)
        )
        self._queue(tool_call_events(self._stream.message_index, message, self._stream.turn))
        await self._drain()

    async def fail(self) -> None:
        """The model call failed: whatever text it streamed is void."""
        with contextlib.suppress(Exception):
            await self._drain()
        if self._streamed:
            await self._write([self._discard()])

    def _queue(self, items: Sequence[NewEvent | str]) -> None:
        if not items:
            return
        self._queued += items
        self._arrived.set()
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_batches())

    async def _drain(self) -> None:
        """Until everything queued is written, and what `close` was given to write with it."""
        if self._writer is not None:
            self._closing = True
            self._closed.set()
            self._arrived.set()
            writer, self._writer = self._writer, None
            await writer
        if self._also is not None:  # nothing was left for a last batch to carry it
            await self._write([], last=True)

    async def _write_batches(self) -> None:
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            started = time.monotonic()
            batch, self._queued = self._queued, []
            events = self._events(batch)
            await self._write(events, last=self._closing)
            wrote_text = any(event.kind == "message.delta" for event in events)
            self._streamed = self._streamed or wrote_text
            if self._closing and not self._queued:
                return
            if wrote_text and not self._closing:
                # The next batch waits out the interval, unless the reply is complete first.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(BATCH_SECONDS - (time.monotonic() - started)):
                        await self._closed.wait()

    def _events(self, batch: list[NewEvent | str]) -> list[NewEvent]:
        """The queued items as events, each run of text joined into one delta."""
        events: list[NewEvent] = []
        text: list[str] = []
        for item in [*batch, None]:
            if isinstance(item, str):
                text.append(item)
                continue
            if text:
                events.append(self._delta("".join(text)))
                text = []
            if item is not None:
                events.append(item)
        return events

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

    async def _write(self, events: list[NewEvent], last: bool = False) -> None:
        """One transaction; the last one carries what `close` was given."""
        also, self._also = (self._also, None) if last else (None, self._also)
        if events or also is not None:
            await self._commit(events, also)

    async def _commit(self, events: list[NewEvent], also: AlsoWrite | None) -> None:
        async with self._sessions.begin() as db:
            await append_events(db, self._conversation_id, events, datetime.now(UTC))
            if also is not None:
                await also(db)


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
