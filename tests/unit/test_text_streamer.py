"""How a model call's text reaches the stream: nothing waits for the database before the model
is called, what queues during a write goes in the next one, in order, and a complete reply is
written at once rather than after the batch interval."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from src.activities.turn_stream import BATCH_SECONDS, AlsoWrite, TextStreamer, TurnStream
from src.db.stream_events import NewEvent
from src.llm.types import LLMReply, LLMToolCall

WRITE_SECONDS = 0.01


class _RecordingStreamer(TextStreamer):
    """The streamer with its database write replaced by a slow list append."""

    def __init__(self) -> None:
        super().__init__(None, "conversation", TurnStream(turn="t1", message_index=0))  # type: ignore[arg-type]
        self.writes: list[list[tuple[str, Any]]] = []

    async def _commit(self, events: list[NewEvent], also: AlsoWrite | None) -> None:
        await asyncio.sleep(WRITE_SECONDS)
        written = [(e.kind, e.data.get("delta") or e.key) for e in events]
        self.writes.append(written + ([("also", None)] if also is not None else []))


def _opening() -> list[NewEvent]:
    return [NewEvent(kind="user_message", key="user:0", turn="t1", data={"seq": 0})]


async def test_text_queued_during_a_write_goes_in_the_next_one_in_order() -> None:
    streamer = _RecordingStreamer()
    streamer.open(retried=False, earlier=_opening())  # returns at once: nothing is written yet
    assert streamer.writes == []
    await asyncio.sleep(0)  # the writer takes the opening events; the model is called meanwhile
    await streamer.text("Hel")
    await streamer.text("lo")
    reply = LLMReply(content="Hello", tool_calls=[LLMToolCall(id="c1", name="f", arguments="{}")])
    await streamer.close(reply)

    assert streamer.writes == [
        [("user_message", "user:0")],
        [("message.delta", "Hello"), ("tool_call", "tool_call:c1")],
    ]


async def test_what_queues_before_the_writer_runs_is_one_write() -> None:
    streamer = _RecordingStreamer()
    streamer.open(retried=False, earlier=_opening())
    await streamer.text("Hi")
    await streamer.close(LLMReply(content="Hi"))

    assert streamer.writes == [[("user_message", "user:0"), ("message.delta", "Hi")]]


async def test_a_complete_reply_does_not_wait_out_the_batch_interval() -> None:
    streamer = _RecordingStreamer()
    streamer.open(retried=True, earlier=[])
    await asyncio.sleep(2 * WRITE_SECONDS)  # the discard is written
    await streamer.text("first")
    await asyncio.sleep(2 * WRITE_SECONDS)  # the first text is written: a batch interval begins
    await streamer.text(" rest")
    started = time.monotonic()
    await streamer.close(LLMReply(content="first rest"))

    assert time.monotonic() - started < BATCH_SECONDS
    assert streamer.writes == [
        [("discard", None)],
        [("message.delta", "first")],
        [("message.delta", " rest")],
    ]


async def test_a_failed_call_voids_the_text_it_streamed() -> None:
    streamer = _RecordingStreamer()
    streamer.open(retried=False, earlier=[])
    await streamer.text("half a rep")
    await streamer.fail()

    assert streamer.writes[-1] == [("discard", None)]
    assert ("message.delta", "half a rep") in [e for write in streamer.writes for e in write]


async def _also(db: Any) -> None:
    """Stands for the turn's record (the fake streamer never calls it)."""


async def test_what_close_is_given_goes_with_the_last_batch() -> None:
    streamer = _RecordingStreamer()
    streamer.open(retried=False, earlier=_opening())
    await asyncio.sleep(0)  # the writer takes the opening events
    await streamer.text("Hello")
    await streamer.close(LLMReply(content="Hello"), also=_also)

    assert streamer.writes == [
        [("user_message", "user:0")],
        [("message.delta", "Hello"), ("also", None)],
    ]


async def test_what_close_is_given_is_written_once_when_no_batch_is_left() -> None:
    """The writer was mid-write when the reply came, and nothing was left for a last batch:
    the record is written on its own, once."""
    streamer = _RecordingStreamer()
    streamer.open(retried=False, earlier=_opening())
    await streamer.text("Hi")
    await asyncio.sleep(0)  # the writer takes all of it; the reply completes during the write
    await streamer.close(LLMReply(content="Hi"), also=_also)

    assert streamer.writes == [
        [("user_message", "user:0"), ("message.delta", "Hi")],
        [("also", None)],
    ]


async def test_a_reply_with_nothing_streamed_writes_what_close_is_given() -> None:
    streamer = _RecordingStreamer()
    streamer.open(retried=False, earlier=[])
    await streamer.close(LLMReply(content=""), also=_also)

    assert streamer.writes == [[("also", None)]]
