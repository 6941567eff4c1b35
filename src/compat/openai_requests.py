"""A Chat Completions request as an OpenAI client sends it, and what Parley makes of it.

Every parameter is either honoured or refused with a 400 naming it: none is silently
ignored. A refused parameter is accepted only when null or set to the value that means the
same as leaving it out (`n: 1`, `top_p: 1`, `response_format: {"type": "text"}`, ...).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from src.domain import Message, ToolCall, check_text
from src.errors import InvalidInput

# Parameters Parley cannot honour: the values that mean "as if absent", and why.
_AGENT_TOOLS = "the agent's own tools run server-side: configure them on the agent"
_SAMPLING = "only temperature and max_tokens reach the agent's model"
REFUSED: dict[str, tuple[tuple[Any, ...], str]] = {
    "n": ((1,), "one choice per request: n must be 1"),
    "tools": ((), _AGENT_TOOLS),
    "tool_choice": ((), _AGENT_TOOLS),
    "parallel_tool_calls": ((), _AGENT_TOOLS),
    "functions": ((), _AGENT_TOOLS),
    "function_call": ((), _AGENT_TOOLS),
    "response_format": (({"type": "text"},), "the agent answers in text"),
    "modalities": ((["text"],), "the agent answers in text"),
    "audio": ((), "the agent answers in text"),
    "stop": ((), "stop sequences are not supported"),
    "top_p": ((1,), _SAMPLING),
    "frequency_penalty": ((0,), _SAMPLING),
    "presence_penalty": ((0,), _SAMPLING),
    "logit_bias": (({},), _SAMPLING),
    "seed": ((), _SAMPLING),
    "reasoning_effort": ((), _SAMPLING),
    "verbosity": ((), _SAMPLING),
    "prediction": ((), _SAMPLING),
    "web_search_options": ((), _SAMPLING),
    "logprobs": ((False,), "log probabilities are not returned"),
    "top_logprobs": ((), "log probabilities are not returned"),
    "service_tier": (("auto",), "there is one service tier"),
    "prompt_cache_key": ((), "prompt caching is the model endpoint's business"),
    "safety_identifier": ((), "send `user` instead"),
    "store": ((True,), "Parley records every conversation (GET /api/v1/chats/{id})"),
}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """`POST /chat/completions`. Unknown parameters are kept (extra) to be refused by name."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=64, description="A Parley agent id.")
    messages: list[dict[str, Any]] = Field(
        min_length=1, description="The conversation; the last message must be the user's."
    )
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    user: str | None = Field(default=None, min_length=1, max_length=256)
    metadata: dict[str, str] | None = Field(default=None, max_length=16)

    @field_validator("model", "user")
    @classmethod
    def _storable(cls, text: str | None) -> str | None:
        check_text(text, "the value")
        return text

    def check_supported(self) -> None:
        """400 for the first parameter Parley would have to ignore."""
        for name, value in (self.model_extra or {}).items():
            if value is None:
                continue
            if name not in REFUSED:
                raise _refused(name, f"Unrecognized request argument supplied: {name}")
            neutral, reason = REFUSED[name]
            if value not in neutral:
                raise _refused(name, f"`{name}` is not supported: {reason}")
        if self.stream_options is not None and not self.stream:
            raise _refused("stream_options", "stream_options is only allowed with stream: true")
        both = self.max_tokens is not None and self.max_completion_tokens is not None
        if both and self.max_tokens != self.max_completion_tokens:
            raise _refused("max_tokens", "give max_tokens or max_completion_tokens, not both")

    @property
    def output_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


def _refused(param: str, message: str) -> InvalidInput:
    return InvalidInput(message, {"param": param, "code": "unsupported_parameter"})


# ---- messages -------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Content = str | list[dict[str, Any]]


class _SystemMessage(_Strict):
    role: Literal["system", "developer"]
    content: Content


class _UserMessage(_Strict):
    role: Literal["user"]
    content: Content


class _Function(_Strict):
    name: str = Field(min_length=1, max_length=200)
    arguments: str


class _ToolCall(_Strict):
    id: str = Field(min_length=1, max_length=200)
    type: Literal["function"] = "function"
    function: _Function


class _AssistantMessage(_Strict):
    role: Literal["assistant"]
    content: Content | None = None
    tool_calls: list[_ToolCall] | None = None


class _ToolMessage(_Strict):
    role: Literal["tool"]
    content: Content
    tool_call_id: str


_ROLES: dict[str, type[_Strict]] = {
    "system": _SystemMessage,
    "developer": _SystemMessage,
    "user": _UserMessage,
    "assistant": _AssistantMessage,
    "tool": _ToolMessage,
}


def transcript_of(messages: list[dict[str, Any]], now: datetime) -> list[Message]:
    """The client's messages as a Parley transcript: system and developer messages become
    system messages (after the agent's own prompt, where they stand), an assistant's tool
    calls take their results from the tool messages that follow them."""
    transcript: list[Message] = []
    waiting: dict[str, ToolCall] = {}  # calls of the last assistant message not answered yet
    for index, raw in enumerate(messages):
        parsed = _parsed(index, raw)
        where = f"messages[{index}]"
        if waiting and not isinstance(parsed, _ToolMessage):
            raise _bad(where, f"tool call {next(iter(waiting))!r} has no tool message answering it")
        if isinstance(parsed, _ToolMessage):
            call = waiting.pop(parsed.tool_call_id, None)
            if call is None:
                raise _bad(
                    f"{where}.tool_call_id",
                    "a tool message must answer a tool call of the assistant message before it",
                )
            call.response = _text(parsed.content, f"{where}.content")
            continue
        assert isinstance(parsed, _SystemMessage | _UserMessage | _AssistantMessage)
        message = Message(
            role="system" if isinstance(parsed, _SystemMessage) else parsed.role,
            content=None if parsed.content is None else _text(parsed.content, f"{where}.content"),
            time=now,
        )
        if isinstance(parsed, _AssistantMessage):
            for number, asked in enumerate(parsed.tool_calls or []):
                function = asked.function
                texts = asked.id + function.name + function.arguments
                _storable(texts, f"{where}.tool_calls[{number}]")
                folded = ToolCall(id=asked.id, name=function.name, arguments=function.arguments)
                message.tool_calls.append(folded)
                waiting[asked.id] = folded
        transcript.append(message)
    if waiting:
        raise _bad("messages", f"tool call {next(iter(waiting))!r} has no tool message after it")
    if transcript[-1].role != "user":
        raise _bad(
            "messages",
            "the last message must be a user message: the agent answers it (its tools run "
            "server-side, so a conversation never waits on the client's tool result)",
        )
    return transcript


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """For a stateful session: the text of the last message, which must be the user's. The
    earlier messages are the client's copy of the session, which keeps its own transcript;
    system messages cannot change a session's prompt, so they are refused."""
    for index, raw in enumerate(messages):
        if raw.get("role") in ("system", "developer"):
            raise _bad(
                f"messages[{index}].role",
                "a stateful session (X-Parley-Session-Id) answers with its agent's own prompt: "
                "leave system and developer messages out",
            )
    index = len(messages) - 1
    last = _parsed(index, messages[index])
    if not isinstance(last, _UserMessage):
        raise _bad(f"messages[{index}].role", "the last message must be a user message")
    text = _text(last.content, f"messages[{index}].content")
    if not text.strip():
        raise _bad(f"messages[{index}].content", "the message is empty")
    return text


def _parsed(index: int, given: dict[str, Any]) -> _Strict:
    where = f"messages[{index}]"
    # Null (or an empty list) is as if absent: a message the SDK returned, appended to the
    # history as it is, carries `"refusal": null`, `"annotations": []` and the like.
    raw = {key: value for key, value in given.items() if value is not None and value != []}
    role = raw.get("role")
    model = _ROLES.get(role) if isinstance(role, str) else None
    if model is None:
        known = ", ".join(sorted(_ROLES))
        raise _bad(f"{where}.role", f"{where}.role must be one of {known}; got {role!r}")
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        problem = error.errors()[0]
        param = where + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in problem["loc"])
        if problem["type"] == "extra_forbidden":
            raise _bad(param, f"{param} is not supported in a {role} message") from None
        if problem["type"] == "missing":
            raise _bad(param, f"{param} is required") from None
        raise _bad(param, f"{param}: {problem['msg']}") from None


def _text(content: Content, where: str) -> str:
    """A message's text: a string, or text parts (joined). Images, audio and files are refused."""
    if isinstance(content, str):
        _storable(content, where)
        return content
    texts: list[str] = []
    for number, part in enumerate(content):
        kind = part.get("type")
        if kind != "text" or not isinstance(part.get("text"), str) or len(part) != 2:
            raise _bad(
                f"{where}[{number}]",
                f"only text content parts ('type': 'text', with 'text') are supported; "
                f"got type {kind!r}",
            )
        texts.append(part["text"])
    text = "\n".join(texts)
    _storable(text, where)
    return text


def _storable(text: str, where: str) -> None:
    try:
        check_text(text, where)
    except ValueError as error:
        raise _bad(where, str(error)) from None


def _bad(param: str, message: str) -> InvalidInput:
    return InvalidInput(message, {"param": param})
