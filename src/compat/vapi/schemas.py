"""Vapi's request bodies, with Vapi's (camelCase) field names. Fields Parley does not map are
kept as extras so that the face can refuse each by name (422), never drop one silently."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from src.domain import check_text


class VapiBody(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _storable_text(cls, data: Any) -> Any:
        check_text(data, "the body")  # no NUL or lone surrogate reaches the database
        return data


def unmapped_fields(body: BaseModel, path: str = "") -> list[str]:
    """The dotted names of every field given that Parley does not map (None and empty lists
    count as not given: some clients send every field)."""
    found = [
        f"{path}{name}"
        for name, value in (body.model_extra or {}).items()
        if value is not None and value != []
    ]
    for name in type(body).model_fields:
        value = getattr(body, name)
        items = value if isinstance(value, list) else [value]
        for index, item in enumerate(items):
            if isinstance(item, BaseModel):
                where = f"{path}{name}[{index}]." if isinstance(value, list) else f"{path}{name}."
                found += unmapped_fields(item, where)
    return found


class FunctionDefinition(VapiBody):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: Literal[False] | None = None


class ToolServer(VapiBody):
    url: str | None = Field(default=None, max_length=2000)
    headers: dict[str, str] | None = None
    timeoutSeconds: float | None = None


class AssistantTool(VapiBody):
    type: str
    function: FunctionDefinition | None = None
    server: ToolServer | None = None


class ModelMessage(VapiBody):
    role: str
    content: str | None = None


class AssistantModel(VapiBody):
    provider: str
    model: str = Field(min_length=1, max_length=200)
    messages: list[ModelMessage] = Field(default_factory=list)
    tools: list[AssistantTool] = Field(default_factory=list)
    temperature: float | None = None
    maxTokens: int | None = None


class Assistant(VapiBody):
    """Vapi's CreateAssistantDTO, as far as Parley maps it."""

    name: str | None = Field(default=None, max_length=200)
    firstMessage: str | None = None
    model: AssistantModel | None = None


class AssistantOverrides(VapiBody):
    variableValues: dict[str, Any] | None = None


class InputMessage(VapiBody):
    """A chat message as clients send it: `content` (OpenAI's and Vapi's examples) or
    `message` (the call-message shape of Vapi's document)."""

    role: str
    content: str | None = None
    message: str | None = None
    # The call-message shape's bookkeeping, accepted and not needed.
    time: float | None = None
    endTime: float | None = None
    secondsFromStart: float | None = None

    @property
    def text(self) -> str | None:
        return self.content if self.content is not None else self.message


class AgentChoice(VapiBody):
    assistantId: str | None = Field(default=None, min_length=1, max_length=64)
    assistant: Assistant | None = None
    assistantOverrides: AssistantOverrides | None = None
    squadId: str | None = Field(default=None, min_length=1, max_length=64)


class CreateSession(AgentChoice):
    name: str | None = Field(default=None, max_length=40)
    status: Literal["active", "completed"] | None = None
    expirationSeconds: float | None = None


class UpdateSession(VapiBody):
    name: str | None = Field(default=None, max_length=40)
    status: Literal["active", "completed"] | None = None
    expirationSeconds: float | None = None


class CreateChat(AgentChoice):
    name: str | None = Field(default=None, max_length=40)
    sessionId: str | None = Field(default=None, min_length=1, max_length=64)
    previousChatId: str | None = Field(default=None, min_length=1, max_length=64)
    input: str | list[InputMessage]
    stream: bool = False


class CreateResponse(CreateChat):
    """OpenAIResponsesRequest: a chat answered in the OpenAI Responses shape; it streams
    unless told not to."""

    stream: bool = True
