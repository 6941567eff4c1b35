"""Between Vapi's shapes and Parley's: an inline Vapi assistant as an agent spec, and
sessions, messages, costs and chats as Vapi's OpenAPI document describes them.

Vapi's document gives a chat message as one of SystemMessage, UserMessage (both in its
call-message shape: `message`, `time`, `secondsFromStart`), AssistantMessage, ToolMessage
and DeveloperMessage. Every UserMessage is a SystemMessage too, so a message shaped as a
UserMessage can never match exactly one of them: user and system messages are sent in the
SystemMessage shape (no `endTime`), with `content` beside `message` for clients that read
OpenAI's field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError

from src.compat.vapi.errors import Unmapped
from src.compat.vapi.schemas import Assistant, AssistantTool
from src.domain import (
    FINISH_THE_CONVERSATION,
    AgentSpec,
    Artifact,
    CostItem,
    Message,
    SessionStatus,
    SessionView,
)
from src.errors import InvalidInput, describe_validation_error

# Parley's channel for the sessions the Vapi face opens.
VAPI_CHANNEL = "vapi"
_DEFAULT_NAME = "Vapi assistant"


def refuse_unmapped(fields: list[str]) -> None:
    if fields:
        raise Unmapped(
            "Parley's Vapi face does not support "
            + ", ".join(f"`{field}`" for field in fields)
            + "; see the README's table of what is mapped"
        )


def agent_of_assistant(assistant: Assistant) -> AgentSpec:
    """A transient Vapi assistant as an inline agent: `model.messages` (system) is the
    system prompt, `firstMessage` the first message, `model.provider/model` the model, and
    function tools with a `server.url` webhook tools; `endCall` is finishTheConversation."""
    model = assistant.model
    spec: dict[str, Any] = {
        "name": assistant.name or _DEFAULT_NAME,
        "first_message": assistant.firstMessage,
    }
    if model is not None:
        if model.provider != "openai":
            raise Unmapped(
                f"assistant.model.provider {model.provider!r} is not supported: Parley calls "
                "one OpenAI-compatible endpoint (OPENAI_BASE_URL); use provider 'openai'"
            )
        prompts = []
        for index, message in enumerate(model.messages):
            if message.role != "system":
                raise Unmapped(
                    f"assistant.model.messages[{index}] has role {message.role!r}: only "
                    "system messages (the system prompt) are mapped"
                )
            prompts.append(message.content or "")
        spec["system_prompt"] = "\n\n".join(prompts)
        spec["model"] = {
            "provider": "openai",
            "name": model.model,
            "temperature": model.temperature,
            "max_tokens": model.maxTokens,
        }
        spec["tools"] = [_tool_of(index, tool) for index, tool in enumerate(model.tools)]
    try:
        return AgentSpec.model_validate(spec)
    except ValidationError as error:
        raise InvalidInput(f"invalid assistant: {describe_validation_error(error)}") from None


def _tool_of(index: int, tool: AssistantTool) -> dict[str, Any]:
    where = f"assistant.model.tools[{index}]"
    if tool.type == "endCall":
        return {"type": "builtin", "name": FINISH_THE_CONVERSATION}
    if tool.type != "function":
        raise Unmapped(
            f"{where}: tool type {tool.type!r} is not supported; Parley maps `function` "
            "tools with a `server.url` (webhook tools) and `endCall`"
        )
    if tool.function is None or tool.server is None or not tool.server.url:
        raise Unmapped(
            f"{where}: a function tool needs `function` and `server.url` (Parley calls the "
            "URL as a webhook tool; there is no assistant-level server)"
        )
    webhook: dict[str, Any] = {
        "type": "webhook",
        "name": tool.function.name,
        "description": tool.function.description or "",
        "url": tool.server.url,
        "method": "POST",
        "headers": tool.server.headers or {},
        "payload": "vapi",  # the server gets Vapi's tool-calls message, answers its results
    }
    if tool.function.parameters is not None:
        webhook["parameters"] = tool.function.parameters
    if tool.server.timeoutSeconds is not None:
        webhook["timeout_seconds"] = tool.server.timeoutSeconds
    return webhook


# ---- answers ---------------------------------------------------------------------------


def _epoch_ms(time: datetime) -> float:
    return round(time.timestamp() * 1000, 3)


def vapi_messages(messages: list[Message], start: datetime) -> list[dict[str, Any]]:
    """Parley's messages in Vapi's chat-message shapes; an assistant message's tool calls
    are followed by one tool message per answered call."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role in ("user", "system"):
            text = message.content or ""
            out.append(
                {
                    "role": message.role,
                    "message": text,
                    "content": text,
                    "time": _epoch_ms(message.time),
                    "secondsFromStart": max(0.0, (message.time - start).total_seconds()),
                }
            )
            continue
        assistant: dict[str, Any] = {"role": "assistant"}
        if message.content is not None:
            assistant["content"] = message.content
        if message.tool_calls:
            assistant["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in message.tool_calls
            ]
        out.append(assistant)
        out += [
            {"role": "tool", "content": call.response, "tool_call_id": call.id}
            for call in message.tool_calls
            if call.response is not None
        ]
    return out


def output_index(messages: list[Message], parley_index: int) -> int:
    """Where Parley's message `parley_index` of a turn sits in the Vapi output (tool results
    are messages of their own there)."""
    return parley_index + sum(
        1 for message in messages[:parley_index] for call in message.tool_calls if call.response
    )


def vapi_costs(costs: list[CostItem], model_type: str = "model") -> list[dict[str, Any]]:
    """ModelCost for LLM calls, AnalysisCost (a summary) for post-conversation analysis."""
    out: list[dict[str, Any]] = []
    for item in costs:
        line: dict[str, Any] = {
            "type": model_type if item.type == "llm" else "analysis",
            "model": {"provider": "openai", "model": item.model},
            "promptTokens": item.prompt_tokens,
            "completionTokens": item.completion_tokens,
            "cost": item.cost,
        }
        if item.type == "analysis":
            line["analysisType"] = "summary"
        out.append(line)
    return out


def _transcript(messages: list[Message]) -> str:
    lines = [
        f"{'User' if m.role == 'user' else 'AI'}: {m.content}"
        for m in messages
        if m.content and m.role in ("user", "assistant")
    ]
    return "\n".join(lines)


def vapi_artifact(view: SessionView) -> dict[str, Any]:
    """A completed session's artifact: its transcript, its messages in OpenAI's format, the
    structured outputs analysis extracted, and the squad members that were active."""
    artifact = view.artifact or Artifact()
    out: dict[str, Any] = {
        "transcript": _transcript(view.messages),
        "messagesOpenAIFormatted": [
            {"role": m.role, "content": m.content} for m in view.messages if m.content is not None
        ],
        "structuredOutputs": {
            name: {"name": name, "result": result.value}
            for name, result in artifact.structured_outputs.items()
            if result.status == "ok"
        },
    }
    if artifact.transfers:
        first = artifact.transfers[0]
        activations = [{"assistantName": first.from_member, "assistantId": first.from_agent_id}]
        activations += [
            {"assistantName": t.to_member, "assistantId": t.to_agent_id} for t in artifact.transfers
        ]
        out["assistantActivations"] = activations
    return out


def vapi_status(status: SessionStatus) -> str:
    return "completed" if status == SessionStatus.FINAL else "active"


def session_fields(
    session_id: str,
    account_id: str,
    created: datetime,
    updated: datetime,
    status: SessionStatus,
    ttl_seconds: int,
    agent_id: str,
    squad_id: str | None,
    name: str | None,
) -> dict[str, Any]:
    """A Vapi Session's fields that every view of a session has, a list's included."""
    out: dict[str, Any] = {
        "id": session_id,
        "orgId": account_id,
        "createdAt": created.isoformat(),
        "updatedAt": updated.isoformat(),
        "status": vapi_status(status),
        "expirationSeconds": ttl_seconds,
    }
    if squad_id is not None:
        out["squadId"] = squad_id
    else:
        out["assistantId"] = agent_id
    if name is not None:
        out["name"] = name
    return out


def vapi_session(view: SessionView, account_id: str, name: str | None) -> dict[str, Any]:
    out = session_fields(
        view.id,
        account_id,
        view.created_time,
        view.last_activity,
        view.status,
        view.ttl_seconds,
        view.agent_id,
        view.squad_id,
        name,
    )
    out["messages"] = vapi_messages(view.messages, view.created_time)
    out["cost"] = view.cost
    out["costs"] = vapi_costs(view.costs)
    if view.status == SessionStatus.FINAL:
        out["artifact"] = vapi_artifact(view)
    return out


def response_output(chat_id: str, messages: list[Message]) -> list[dict[str, Any]]:
    """A turn's assistant texts as OpenAI Responses output messages."""
    return [
        {
            "id": response_item_id(chat_id, index),
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": message.content, "annotations": []}],
        }
        for index, message in enumerate(messages)
        if message.role == "assistant" and message.content
    ]


def response_item_id(chat_id: str, index: int) -> str:
    return f"msg_{chat_id.replace('-', '')}_{index}"


def response_object(chat_id: str, created: datetime, messages: list[Message]) -> dict[str, Any]:
    return {
        "id": f"resp_{chat_id.replace('-', '')}",
        "object": "response",
        "created_at": int(created.timestamp()),
        "status": "completed",
        "error": None,
        "output": response_output(chat_id, messages),
    }
