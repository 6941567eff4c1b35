"""The LLM activity: one Chat Completions call for a session, reading the transcript by reference.

The workflow passes the session id, how many messages the database already holds, and only the
messages it has not recorded yet; the transcript itself never travels through workflow history.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

from src.config import Settings
from src.db.tables import ChatMessage, ChatSession
from src.domain import (
    FINISH_THE_CONVERSATION,
    AgentSnapshot,
    Message,
    ToolCall,
    render_template,
)
from src.llm.openai_chat import OpenAIChatProvider
from src.llm.scripted import ScriptedProvider
from src.llm.types import (
    ChatMessage as WireMessage,
)
from src.llm.types import (
    LLMRateLimited,
    LLMRejectedRequest,
    LLMReply,
    ModelProvider,
    ToolSchema,
)

LLM_REJECTED = "LLMRequestRejected"
LLM_ACTIVITY_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=120),
    "schedule_to_close_timeout": timedelta(minutes=10),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(milliseconds=500),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=30),
        non_retryable_error_types=[LLM_REJECTED],
    ),
}

_BUILTIN_TOOL_SCHEMAS: dict[str, ToolSchema] = {
    FINISH_THE_CONVERSATION: {
        "type": "function",
        "function": {
            "name": FINISH_THE_CONVERSATION,
            "description": (
                "End the conversation once the user is done or asks to end it. "
                "Say goodbye in the same reply."
            ),
            "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
        },
    }
}


class SessionTurnRequest(BaseModel):
    session_id: str
    recorded_count: int = Field(ge=0)
    unrecorded: list[Message]
    allow_tools: bool = True


class _SessionContext(BaseModel):
    agent: AgentSnapshot
    variables: dict[str, Any]


class LLMActivities:
    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._providers: dict[str, ModelProvider] = {
            "scripted": ScriptedProvider(),
            "openai": OpenAIChatProvider(
                base_url=settings.openai_base_url,
                api_key=settings.openai_api_key.get_secret_value()
                if settings.openai_api_key
                else None,
                timeout_seconds=settings.llm_timeout_seconds,
            ),
        }
        # Agent snapshots and template variables are frozen at open, so they can be cached.
        self._contexts: OrderedDict[str, _SessionContext] = OrderedDict()

    @activity.defn(name="llm.complete_session_turn")
    async def complete_session_turn(self, request: SessionTurnRequest) -> LLMReply:
        context, recorded = await self._load(request.session_id, request.recorded_count)
        agent = context.agent
        system_prompt = render_template(agent.spec.system_prompt, context.variables)
        messages: list[WireMessage] = [{"role": "system", "content": system_prompt}]
        messages += to_wire_messages(recorded + request.unrecorded)
        tools = tool_schemas(agent) if request.allow_tools else []
        provider = self._providers[agent.model.provider]
        try:
            return await provider.complete(agent.model, messages, tools)
        except LLMRejectedRequest as error:
            raise ApplicationError(str(error), type=LLM_REJECTED, non_retryable=True) from None
        except LLMRateLimited as error:
            delay = timedelta(seconds=error.retry_after) if error.retry_after else None
            raise ApplicationError(
                str(error), type="LLMRateLimited", next_retry_delay=delay
            ) from None

    async def _load(
        self, session_id: str, recorded_count: int
    ) -> tuple[_SessionContext, list[Message]]:
        async with self._sessions() as db:
            context = self._contexts.get(session_id)
            if context is None:
                row = await db.get(ChatSession, session_id)
                if row is None:
                    raise ApplicationError(f"session {session_id} is not in the database")
                context = _SessionContext(
                    agent=AgentSnapshot.model_validate(row.agent_snapshot),
                    variables={**row.additional_data, "channel": row.channel, "sip_endpoint": None},
                )
                self._remember(session_id, context)
            rows = (
                await db.scalars(
                    select(ChatMessage)
                    .where(ChatMessage.session_id == session_id, ChatMessage.seq < recorded_count)
                    .order_by(ChatMessage.seq)
                )
            ).all()
        if len(rows) != recorded_count:
            raise ApplicationError(
                f"session {session_id}: expected {recorded_count} recorded messages, "
                f"found {len(rows)}"
            )
        return context, [
            Message(
                role=row.role,
                content=row.content,
                tool_calls=[ToolCall.model_validate(call) for call in row.tool_calls],
                time=row.time,
            )
            for row in rows
        ]

    def _remember(self, session_id: str, context: _SessionContext) -> None:
        self._contexts[session_id] = context
        while len(self._contexts) > 4096:
            self._contexts.popitem(last=False)


def tool_schemas(agent: AgentSnapshot) -> list[ToolSchema]:
    return [_BUILTIN_TOOL_SCHEMAS[tool.name] for tool in agent.spec.tools if tool.type == "builtin"]


def to_wire_messages(transcript: list[Message]) -> list[WireMessage]:
    """Transcript messages (tool responses folded into their calls) to Chat Completions messages."""
    wire: list[WireMessage] = []
    for message in transcript:
        if message.role != "assistant" or not message.tool_calls:
            wire.append({"role": message.role, "content": message.content or ""})
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
