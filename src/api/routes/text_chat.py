"""`/api/v1/text-chat/completion`: stateless turns; the client carries transcript and state."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response

from src.api.deps import AccountId, ServicesDep
from src.api.event_streams import EVENT_STREAM, event_source, turn_events, wants_event_stream
from src.api.schemas import (
    AgentReference,
    ErrorResponse,
    TextChatMessage,
    TextChatRequest,
    TextChatResponse,
)
from src.config import Settings
from src.domain import Message
from src.errors import PayloadTooLarge
from src.services.text_chat import TextChatResult, TextChatTurn

router = APIRouter(
    prefix="/text-chat",
    tags=["text-chat"],
    responses={
        400: {"model": ErrorResponse},
        401: {"model": ErrorResponse},
        409: {"model": ErrorResponse},
        413: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
        502: {"model": ErrorResponse},
    },
)


@router.post(
    "/completion",
    response_model=TextChatResponse,
    responses={
        200: {
            "content": {EVENT_STREAM: {}},
            "description": "With `Accept: text/event-stream`: the turn's events as they "
            "come, then `done` with this body (its new `state`), or `error`.",
        }
    },
)
async def complete_text_chat(
    body: TextChatRequest, account: AccountId, services: ServicesDep, request: Request
) -> TextChatResponse | Response:
    """One turn. The state is sealed by the server: a tampered, truncated, foreign or
    other-account state is 400; the state of a finished conversation is 409. A transcript or
    a user message over the server's limits is 413."""
    check_transcript_size(body.messages, services.settings)
    now = datetime.now(UTC)
    turn = TextChatTurn(
        agent_id=body.agent.id if isinstance(body.agent, AgentReference) else None,
        agent=None if isinstance(body.agent, AgentReference) else body.agent,
        agent_overrides=body.agent_overrides,
        messages=[
            Message(role=m.role, content=m.content, tool_calls=m.tool_calls, time=now)
            for m in body.messages
        ],
        state=body.state,
        additional_data=body.additional_data,
        end_conversation=body.end_conversation,
        channel=body.channel,
    )
    prepared = await services.text_chat.prepare(account, turn)
    if not wants_event_stream(request):
        result = await services.text_chat.run(prepared)
        return TextChatResponse(**result.model_dump())
    call_id = prepared.input.call_id
    after = await services.streams.head(call_id)
    answer = services.text_chat.run(prepared)
    return event_source(
        turn_events(services.streams, call_id, prepared.workflow_id, after, answer, _recorded)
    )


def _recorded(result: TextChatResult) -> tuple[set[int], dict[str, Any]]:
    seqs = set(range(result.first_seq, result.first_seq + len(result.messages)))
    return seqs, TextChatResponse(**result.model_dump()).model_dump(mode="json")


def check_transcript_size(
    messages: Sequence[TextChatMessage | Message], settings: Settings
) -> None:
    """413 for a transcript over PARLEY_MAX_TRANSCRIPT_MESSAGES or PARLEY_MAX_TRANSCRIPT_BYTES
    (UTF-8 of contents and tool calls), or a user message over PARLEY_MAX_MESSAGE_CHARS (the
    server accepted none such earlier, so one in the transcript is the new one)."""
    if len(messages) > settings.max_transcript_messages:
        raise PayloadTooLarge(
            f"the transcript has {len(messages)} messages; the limit is "
            f"{settings.max_transcript_messages}: start a new conversation",
            {"limit_messages": settings.max_transcript_messages},
        )
    size = sum(_text_bytes(message) for message in messages)
    if size > settings.max_transcript_bytes:
        raise PayloadTooLarge(
            f"the transcript has {size} bytes of text; the limit is "
            f"{settings.max_transcript_bytes}: start a new conversation",
            {"limit_bytes": settings.max_transcript_bytes},
        )
    for index, message in enumerate(messages):
        length = len(message.content or "")
        if message.role == "user" and length > settings.max_message_chars:
            raise PayloadTooLarge(
                f"messages[{index}] has {length} characters; the limit is "
                f"{settings.max_message_chars}",
                {"limit_chars": settings.max_message_chars},
            )


def _text_bytes(message: TextChatMessage | Message) -> int:
    texts = [message.content or ""]
    for call in message.tool_calls:
        texts += [call.name, call.arguments, call.response or ""]
    return sum(len(text.encode()) for text in texts)
