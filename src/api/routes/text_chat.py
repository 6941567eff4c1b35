"""`/api/v1/text-chat/completion`: stateless turns; the client carries transcript and state."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from src.api.deps import AccountId, ServicesDep
from src.api.schemas import AgentReference, ErrorResponse, TextChatRequest, TextChatResponse
from src.domain import Message
from src.services.text_chat import TextChatTurn

router = APIRouter(
    prefix="/text-chat",
    tags=["text-chat"],
    responses={
        400: {"model": ErrorResponse},
        401: {"model": ErrorResponse},
        409: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
        502: {"model": ErrorResponse},
    },
)


@router.post("/completion")
async def complete_text_chat(
    body: TextChatRequest, account: AccountId, services: ServicesDep
) -> TextChatResponse:
    """One turn. The state is sealed by the server: a tampered, truncated, foreign or
    other-account state is 400; the state of a finished conversation is 409."""
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
    result = await services.text_chat.complete(account, turn)
    return TextChatResponse(**result.model_dump())
