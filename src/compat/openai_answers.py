"""A turn's messages as OpenAI answers: a ChatCompletion, or `chat.completion.chunk`s as the
turn streams, then `data: [DONE]`."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from openai.types.chat import ChatCompletion, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice
from openai.types.completion_usage import CompletionUsage
from sse_starlette import ServerSentEvent

from src.api.event_streams import turn_events
from src.api.openai_errors import openai_error_body
from src.compat.openai_chat import PreparedCompletion
from src.domain import Message
from src.errors import ParleyError
from src.services.session_streams import SessionStreams

# Between the texts of a turn's assistant messages (one before a tool call, one after).
_BETWEEN_MESSAGES = "\n\n"
_INTERRUPTED = (
    "the model's answer was interrupted and is being written again; the text streamed so far "
    "is void: send the request again"
)


def assistant_text(messages: list[Message]) -> str:
    """What the user reads: the text of the turn's assistant messages (tool calls ran
    server-side and are in the recorded conversation, not here)."""
    texts = [m.content for m in messages if m.role == "assistant" and m.content]
    return _BETWEEN_MESSAGES.join(texts)


def usage_of(messages: list[Message]) -> CompletionUsage:
    prompt = sum(m.usage.prompt_tokens for m in messages if m.usage is not None)
    completion = sum(m.usage.completion_tokens for m in messages if m.usage is not None)
    return CompletionUsage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


def completion_of(prepared: PreparedCompletion, messages: list[Message]) -> ChatCompletion:
    return ChatCompletion(
        id=prepared.id,
        object="chat.completion",
        created=int(time.time()),
        model=prepared.model,
        system_fingerprint=None,
        choices=[
            Choice(
                index=0,
                finish_reason="stop",
                logprobs=None,
                message=ChatCompletionMessage(
                    role="assistant", content=assistant_text(messages), refusal=None
                ),
            )
        ],
        usage=usage_of(messages),
    )


class _ChunkWriter:
    """One completion's chunks, as OpenAI streams them."""

    def __init__(self, prepared: PreparedCompletion) -> None:
        self._prepared = prepared
        self._created = int(time.time())
        self.streamed: set[int] = set()  # the messages (by index) whose text went out

    def chunk(self, choices: list[dict[str, Any]], **extra: Any) -> ServerSentEvent:
        body = {
            "id": self._prepared.id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._prepared.model,
            "system_fingerprint": None,
            "choices": choices,
            **extra,
        }
        return ServerSentEvent(data=json.dumps(body))

    def delta(self, delta: dict[str, Any], finish_reason: str | None = None) -> ServerSentEvent:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self.chunk([choice])

    def text(self, index: int, text: str) -> ServerSentEvent:
        gap = _BETWEEN_MESSAGES if self.streamed and index not in self.streamed else ""
        self.streamed.add(index)
        return self.delta({"content": gap + text})


async def completion_chunks(
    streams: SessionStreams, prepared: PreparedCompletion, after: int
) -> AsyncIterator[ServerSentEvent]:
    """The turn's text as it comes, then the finish reason (and the usage, when asked), then
    `[DONE]`. A failure after the stream began is an `{"error": ...}` chunk, which the SDK
    raises as an APIError."""
    writer = _ChunkWriter(prepared)
    answered: list[list[Message]] = []
    failed: list[ParleyError] = []

    async def answer() -> list[Message]:
        try:
            answered.append(await prepared.run())
        except ParleyError as error:
            failed.append(error)
            raise
        return answered[0]

    yield writer.delta({"role": "assistant", "content": ""})
    events = turn_events(
        streams, prepared.conversation_id, prepared.turn, after, answer(), lambda _: (set(), {})
    )
    async with contextlib.aclosing(events):  # leaving early stops waiting for the turn
        async for event in events:
            data = json.loads(str(event.data))
            if event.event == "message.delta":
                yield writer.text(data["message_index"], data["delta"])
            elif event.event == "discard" and data["message_index"] in writer.streamed:
                # OpenAI's stream has no way to take text back.
                yield _error_chunk(ParleyError(_INTERRUPTED, {"code": "stream_interrupted"}))
                return
            elif event.event == "error":
                failure = failed[0] if failed else ParleyError(data["error"]["message"])
                yield _error_chunk(failure)
                return
    messages = answered[0]
    for index, message in enumerate(messages):
        # Text no model call streamed (a budget message, a provider that does not stream).
        if message.role == "assistant" and message.content and index not in writer.streamed:
            yield writer.text(index, message.content)
    yield writer.delta({}, "stop")
    if prepared.include_usage:
        yield writer.chunk([], usage=usage_of(messages).model_dump(exclude_none=True))
    yield ServerSentEvent(data="[DONE]")


def _error_chunk(error: ParleyError) -> ServerSentEvent:
    _, body = openai_error_body(error)
    return ServerSentEvent(data=json.dumps(body))
