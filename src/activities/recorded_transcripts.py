"""The recorded transcripts a worker keeps between turns, in the model's wire form.

Recorded messages are only ever inserted, never changed, so a session's recorded transcript
can be kept and extended: the LLM activity reads only the rows recorded since it last looked,
and recording a turn's messages in this process (session_store.record_messages) extends the
kept copy at once, so the next turn reads nothing. A copy is only ever extended where it ends
(messages recorded elsewhere, by another worker, are read from the database next time).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cachetools import LRUCache

from src.domain import Message, Usage
from src.llm.types import ChatMessage as WireMessage

# Wire messages kept across all sessions (least recently used go).
_CACHED_MESSAGES = 20_000


@dataclass
class RecordedTranscript:
    count: int  # messages recorded in the database when this was read
    wire: list[WireMessage]
    # Per message: the usage of the LLM call that produced it (for the session's budget).
    message_usages: list[Usage | None] = field(default_factory=list)
    # Where each message's wire messages start in `wire` (a tool call adds its results).
    starts: list[int] = field(default_factory=list)

    @property
    def usages(self) -> list[Usage]:
        return [usage for usage in self.message_usages if usage is not None]

    def wire_from(self, seq: int) -> list[WireMessage]:
        """The wire messages of the transcript from message `seq` on."""
        if seq == 0:
            return self.wire
        return self.wire[self.starts[seq] :] if seq < self.count else []

    def extended(self, messages: list[Message]) -> RecordedTranscript:
        """This transcript with `messages` recorded after it (a new copy: a reader holding
        this one keeps what it read)."""
        wire, starts = list(self.wire), list(self.starts)
        for message in messages:
            starts.append(len(wire))
            wire += to_wire_messages([message])
        return RecordedTranscript(
            count=self.count + len(messages),
            wire=wire,
            message_usages=self.message_usages + [m.usage for m in messages],
            starts=starts,
        )

    def prefix(self, count: int) -> RecordedTranscript:
        """Its first `count` messages (a turn that began before the last ones were recorded)."""
        if count >= self.count:
            return self
        return RecordedTranscript(
            count=count,
            wire=self.wire[: self.starts[count]],
            message_usages=self.message_usages[:count],
            starts=self.starts[:count],
        )


EMPTY = RecordedTranscript(count=0, wire=[])


class RecordedTranscripts:
    """Per session, the longest recorded transcript this process has seen. Sized in wire
    messages; a transcript longer than the whole cache counts as all of it, so it is still
    kept, alone, until the next one comes."""

    def __init__(self, max_messages: int = _CACHED_MESSAGES) -> None:
        self._kept: LRUCache[str, RecordedTranscript] = LRUCache(
            max_messages, getsizeof=lambda kept: min(len(kept.wire), max_messages)
        )

    def get(self, session_id: str) -> RecordedTranscript | None:
        return self._kept.get(session_id)

    def keep(self, session_id: str, transcript: RecordedTranscript) -> None:
        kept = self._kept.get(session_id)
        if kept is None or kept.count <= transcript.count:
            self._kept[session_id] = transcript

    def forget(self, session_id: str) -> None:
        """The database's copy was rewritten (src/db/recorded_batches.py): read it again."""
        self._kept.pop(session_id, None)

    def recorded(self, session_id: str, first_seq: int, messages: list[Message]) -> None:
        """`messages` were recorded from `first_seq` on: extend the kept copy when it ends
        right there (a retried write of messages it holds already changes nothing)."""
        kept = self._kept.get(session_id)
        if kept is not None and kept.count == first_seq and messages:
            self._kept[session_id] = kept.extended(messages)


def to_wire_messages(transcript: list[Message]) -> list[WireMessage]:
    """Transcript messages (tool responses folded into their calls) to Chat Completions messages."""
    wire: list[WireMessage] = []
    for message in transcript:
        if message.role != "assistant" or not message.tool_calls:
            wire.append({"role": message.role, "content": _with_attachments(message)})
            continue
        wire.append(
            {
                "role": "assistant",
                "content": message.content,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments},
                    }
                    for call in message.tool_calls
                ],
            }
        )
        wire += [
            {"role": "tool", "tool_call_id": call.id, "content": call.response or ""}
            for call in message.tool_calls
        ]
    return wire


def _with_attachments(message: Message) -> str:
    """The text, and what came with it by URL (an SMS's photo): the model is told of it."""
    lines = [message.content] if message.content else []
    for attachment in message.attachments:
        kind = f" ({attachment.content_type})" if attachment.content_type else ""
        lines.append(f"[attachment{kind}: {attachment.url}]")
    return "\n".join(lines)
