"""The model providers a worker has, by the name agents use in `model.provider`."""

from __future__ import annotations

from datetime import timedelta

from temporalio.exceptions import ApplicationError

from src.config import Settings
from src.domain import ModelConfig
from src.llm.openai_chat import OpenAIChatProvider
from src.llm.scripted import ScriptedProvider
from src.llm.types import (
    ChatMessage,
    LLMRateLimited,
    LLMRejectedRequest,
    LLMReply,
    ModelProvider,
    TextSink,
    ToolSchema,
)
from src.temporal.failures import FailureType


class ModelProviders:
    def __init__(self, settings: Settings) -> None:
        key = settings.openai_api_key
        self._providers: dict[str, ModelProvider] = {
            "scripted": ScriptedProvider(settings.scripted_word_delay_seconds),
            "openai": OpenAIChatProvider(
                base_url=settings.openai_base_url,
                api_key=key.get_secret_value() if key else None,
                timeout_seconds=settings.llm_timeout_seconds,
            ),
        }

    async def complete(
        self,
        model: ModelConfig,
        messages: list[ChatMessage],
        tools: list[ToolSchema],
        json_output: bool = False,
        on_text: TextSink | None = None,
    ) -> LLMReply:
        """One model call from inside an activity, its failures mapped for Temporal: the
        caller's mistakes (4xx) are not retried; 429 is retried after `Retry-After`."""
        provider = self._providers[model.provider]
        try:
            return await provider.complete(model, messages, tools, json_output, on_text)
        except LLMRejectedRequest as error:
            raise ApplicationError(
                str(error), type=FailureType.LLM_REJECTED, non_retryable=True
            ) from None
        except LLMRateLimited as error:
            delay = timedelta(seconds=error.retry_after) if error.retry_after else None
            raise ApplicationError(
                str(error), type="LLMRateLimited", next_retry_delay=delay
            ) from None
