"""Any OpenAI-compatible Chat Completions endpoint, through the official `openai` client.

The client never retries by itself (max_retries=0): Temporal owns retries, so a crashed
worker and a flaky endpoint are handled by the same policy.
"""

from __future__ import annotations

from typing import Any

import openai
from openai.types.chat import ChatCompletion

from src.domain import ModelConfig
from src.llm.types import (
    ChatMessage,
    LLMRateLimited,
    LLMRejectedRequest,
    LLMReply,
    LLMToolCall,
    ToolSchema,
)

_CALLER_ERRORS = {400, 401, 403, 404, 409, 413, 422}


class OpenAIChatProvider:
    def __init__(self, base_url: str | None, api_key: str | None, timeout_seconds: float) -> None:
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            # The client insists on a key; local OpenAI-compatible servers often need none.
            api_key=api_key or "not-needed",
            max_retries=0,
            timeout=timeout_seconds,
        )

    async def complete(
        self,
        model: ModelConfig,
        messages: list[ChatMessage],
        tools: list[ToolSchema],
        json_output: bool = False,
    ) -> LLMReply:
        request: dict[str, Any] = {"model": model.name, "messages": messages}
        if json_output:
            request["response_format"] = {"type": "json_object"}
        if tools:
            request["tools"] = tools
        if model.temperature is not None:
            request["temperature"] = model.temperature
        if model.max_tokens is not None:
            request["max_tokens"] = model.max_tokens
        try:
            # `chat.completions.create` would first walk every message through the SDK's
            # TypedDict transform, an identity for these plain JSON messages that costs more
            # CPU than the rest of a turn as the transcript grows; post them as they are.
            completion = await self._client.post(
                "/chat/completions", cast_to=ChatCompletion, body=request
            )
        except openai.RateLimitError as error:
            raise LLMRateLimited(_retry_after_seconds(error.response)) from None
        except openai.APIStatusError as error:
            if error.status_code in (401, 403):
                # The server's own credentials, not the caller's request: say so, no details.
                raise LLMRejectedRequest(
                    error.status_code,
                    "the model endpoint refused the server's credentials (check OPENAI_API_KEY)",
                ) from None
            if error.status_code in _CALLER_ERRORS:
                raise LLMRejectedRequest(error.status_code, _error_message(error)) from None
            raise
        if not completion.choices:
            raise RuntimeError("the model endpoint returned no choices")
        message = completion.choices[0].message
        usage = completion.usage
        return LLMReply(
            content=message.content,
            tool_calls=[
                LLMToolCall(id=call.id, name=call.function.name, arguments=call.function.arguments)
                for call in message.tool_calls or []
                if call.type == "function"
            ],
            model=model.name,
            served_model=completion.model or None,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )

    async def close(self) -> None:
        await self._client.close()


def _retry_after_seconds(response: Any) -> float | None:
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _error_message(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])[:500]
    return str(error.message)[:500]
