"""What a model provider is given and what it answers, independent of any vendor."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from pydantic import BaseModel, Field

from src.domain import Message, ModelConfig

# The first line of the transcript that post-conversation analysis shows the model.
TRANSCRIPT_HEADER = "Conversation transcript:"

# OpenAI Chat Completions message and tool dicts: the lingua franca every provider accepts.
ChatMessage = dict[str, Any]
ToolSchema = dict[str, Any]


class LLMToolCall(BaseModel):
    id: str
    name: str
    arguments: str = "{}"


class LLMReply(BaseModel):
    content: str | None = None
    tool_calls: list[LLMToolCall] = Field(default_factory=list)
    model: str = ""  # the configured model name
    served_model: str | None = None  # what the endpoint called it (often a dated name)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Set by the LLM activity instead of calling the model when the session's budget is used
    # up: `content` is then the agent's budget message, and no tokens were spent.
    budget_used_up: bool = False
    # Set by a session's LLM activity that recorded the reply with the turn
    # (src/activities/turn_record.py): the message as written, for the transcript to hold.
    recorded_message: Message | None = None


# Given each piece of the reply's text as the model produces it.
TextSink = Callable[[str], Awaitable[None]]


class ModelProvider(Protocol):
    async def complete(
        self,
        model: ModelConfig,
        messages: list[ChatMessage],
        tools: list[ToolSchema],
        json_output: bool = False,
        on_text: TextSink | None = None,
    ) -> LLMReply:
        """One Chat Completions call; `json_output` asks for a JSON object answer. With
        `on_text` the reply is streamed: its text goes to `on_text` as it comes."""
        ...


class LLMRejectedRequest(Exception):
    """The model endpoint refused the request itself (a 4xx other than 429): retrying won't help."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(f"the model endpoint answered {status_code}: {message}")
        self.status_code = status_code


class LLMRateLimited(Exception):
    """The model endpoint asked us to slow down (429); retry after `retry_after` seconds."""

    def __init__(self, retry_after: float | None) -> None:
        super().__init__("the model endpoint is rate limiting requests (429)")
        self.retry_after = retry_after
