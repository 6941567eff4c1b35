"""Any OpenAI-compatible Chat Completions endpoint, through the official `openai` client.

The client never retries by itself (max_retries=0): Temporal owns retries, so a crashed
worker and a flaky endpoint are handled by the same policy.
"""

from __future__ import annotations

from typing import Any

import openai
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from src.domain import ModelConfig
from src.llm.types import (
    ChatMessage,
    LLMRateLimited,
    LLMRejectedRequest,
    LLMReply,
    LLMToolCall,
    TextSink,
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
        on_text: TextSink | None = None,
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
            if on_text is not None:
                return await self._streamed(model, request, on_text)
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

    async def _streamed(
        self, model: ModelConfig, request: dict[str, Any], on_text: TextSink
    ) -> LLMReply:
        """The same call with `stream: true`: text goes to `on_text` chunk by chunk; tool
        calls arrive in pieces by index and are put together; usage comes in the last chunk."""
        request = {**request, "stream": True, "stream_options": {"include_usage": True}}
        chunks = await self._client.post(
            "/chat/completions",
            cast_to=ChatCompletion,
            body=request,
            stream=True,
            stream_cls=openai.AsyncStream[ChatCompletionChunk],
        )
        text: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        served: str | None = None
        prompt_tokens = completion_tokens = 0
        async with chunks:
            async for chunk in chunks:
                served = chunk.model or served
                if chunk.usage is not None:
                    prompt_tokens = chunk.usage.prompt_tokens
                    completion_tokens = chunk.usage.completion_tokens
                for choice in chunk.choices[:1]:
                    delta = choice.delta
                    if delta.content:
                        text.append(delta.content)
                        await on_text(delta.content)
                    for piece in delta.tool_calls or []:
                        call = calls.setdefault(piece.index, {"id": "", "name": "", "args": ""})
                        call["id"] = piece.id or call["id"]
                        if piece.function is not None:
                            call["name"] += piece.function.name or ""
                            call["args"] += piece.function.arguments or ""
        return LLMReply(
            content="".join(text) if text else None,
            tool_calls=[
                LLMToolCall(id=call["id"], name=call["name"], arguments=call["args"] or "{}")
                for _, call in sorted(calls.items())
            ],
            model=model.name,
            served_model=served,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
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
